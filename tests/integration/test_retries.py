"""Retries: a failed attempt moves to another server when replaying the request is
safe (nothing sent, or an idempotent request with nothing answered), never after a
response byte reached the client, and within `retries`."""
import hashlib
import json
import re
import select
import threading
import time

import pytest

from conftest import simple_config
from origins import client, free_port, read_request, read_response
from origins.faulty import (Blackhole, fetch, record, reset, reset_after_request,
                            send_then_close)


def upstream(servers, extra=""):
    return simple_config(servers, extra_upstream="    connect_timeout: 1s\n    read_timeout: 2s\n"
                         + extra)


def access_line(b, rid):
    return b.wait_log(rf"(?m)^.* rid={rid}$", what="access").group(0)


def echoed_rid(resp):
    """The request id the proxy sent upstream, as /echo reports it."""
    return dict(json.loads(resp.data)["headers"])["X-Request-Id"]


def test_connect_failure_is_retried_on_the_next_server(bulwark, origin):
    dead = f"127.0.0.1:{free_port()}"
    live = origin()
    b = bulwark(upstream([dead, live.addr]))
    rids = []
    for i in range(4):
        resp = fetch(b.port, f"/echo?i={i}")
        assert resp.status == 200, resp.head
        assert json.loads(resp.data)["port"] == live.port
        rids.append(echoed_rid(resp))
    assert len(live.requests) == 4
    lines = [access_line(b, rid) for rid in rids]
    assert all(f"upstream={live.addr} upstream_status=200" in l and "error=-" in l for l in lines)
    retried = [rid for rid, l in zip(rids, lines) if " attempts=2 " in l]
    assert retried, "round robin must have sent at least one request to the dead server first:\n" \
        + "\n".join(lines)
    for rid in retried:
        b.wait_log(rf"connect\(\) to {dead} \(upstream \"app\"\) failed: Connection refused\. "
                   rf"Nothing is listening[^\n]*; "
                   rf"cause=connection_refused attempt=1 .*rid={rid}")
    assert all(" attempts=1 " in l for rid, l in zip(rids, lines) if rid not in retried)


def test_connect_timeout_is_retried_on_the_next_server(bulwark, origin):
    hole = Blackhole()
    live = origin()
    try:
        b = bulwark(simple_config([hole.addr, live.addr],
                                  extra_upstream="    connect_timeout: 300ms\n"))
        results = [fetch(b.port, f"/echo?i={i}") for i in range(2)]
    finally:
        hole.close()
    assert [r.status for r in results] == [200, 200], [r.head for r in results]
    assert len(live.requests) == 2
    slow = [r for r in results if r.elapsed >= 0.25]
    assert len(slow) == 1, "one request waited connect_timeout on the black hole, then moved on"
    assert slow[0].elapsed < 3.0
    rid = echoed_rid(slow[0])
    assert " attempts=2 error=- " in access_line(b, rid)
    b.wait_log(rf"connect\(\) to {hole.addr} \(upstream \"app\"\) failed: .*"
               rf"cause=connection_timeout attempt=1 .*rid={rid}")


def test_post_whose_connect_failed_is_retried(bulwark, origin):
    # Nothing reached the dead server, so even a non-idempotent request is safe to resend.
    dead = f"127.0.0.1:{free_port()}"
    live = origin()
    b = bulwark(upstream([dead, live.addr]))
    for i in range(2):
        resp = fetch(b.port, "/sink", method="POST", body=b"z" * 1000)
        assert resp.status == 200, resp.head
        assert json.loads(resp.data)["length"] == 1000
    assert len(live.requests) == 2


def test_get_reset_before_any_response_byte_is_retried_on_another_server(bulwark, origin):
    bad = origin(reset_after_request())
    good = origin()
    b = bulwark(upstream([bad.addr, good.addr]))
    rids = []
    for i in range(2):
        resp = fetch(b.port, f"/echo?i={i}")
        assert resp.status == 200, resp.head
        assert json.loads(resp.data)["port"] == good.port
        rids.append(echoed_rid(resp))
    assert len(bad.requests) >= 1, "the reset server must have received a request"
    assert len(good.requests) == 2
    lines = [access_line(b, rid) for rid in rids]
    retried = [rid for rid, l in zip(rids, lines) if " attempts=2 " in l]
    assert len(retried) == len(bad.requests), lines
    for rid in retried:
        b.wait_log(rf"{bad.addr} \(upstream \"app\"\) failed: .*cause=connection_terminated "
                   rf"attempt=1 .*rid={rid}")


def test_post_reset_after_the_request_was_sent_is_not_retried(bulwark, origin):
    bad = origin(reset_after_request())
    good = origin()
    b = bulwark(upstream([bad.addr, good.addr]))
    # Round robin sends one of the two POSTs to each server.
    results = [fetch(b.port, "/sink", method="POST", body=b"p" * 500) for _ in range(2)]
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 502], [r.head for r in results]
    assert len(bad.requests) == 1 and len(good.requests) == 1, \
        "the POST the bad server reset must not be sent again to the good one"
    failed = next(r for r in results if r.status == 502)
    assert failed.get("proxy-status") == \
        f'bulwark; error=connection_terminated; next-hop="app"'
    line = access_line(b, failed.get("x-request-id"))
    assert " attempts=1 error=connection_terminated " in line, line


def test_retries_zero_disables_retrying(bulwark, origin):
    dead = f"127.0.0.1:{free_port()}"
    live = origin()
    b = bulwark(upstream([dead, live.addr], "    retries: 0\n"))
    results = [fetch(b.port, "/echo") for _ in range(2)]
    assert sorted(r.status for r in results) == [200, 502], [r.head for r in results]
    failed = next(r for r in results if r.status == 502)
    assert failed.get("proxy-status") == \
        f'bulwark; error=connection_refused; next-hop="app"'
    line = access_line(b, failed.get("x-request-id"))
    assert f"upstream={dead} " in line and " attempts=1 error=connection_refused " in line, line
    assert len(live.requests) == 1


def test_no_retry_after_a_response_byte_reached_the_client(bulwark, origin):
    # The first server sends the header and part of the body, then resets.
    bad = origin(send_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10,
                                 rst=True))
    good = origin()
    b = bulwark(upstream([bad.addr, good.addr]))
    results = [fetch(b.port, "/bytes/100") for _ in range(2)]
    cut = [r for r in results if r.data.startswith(b"a")]
    whole = [r for r in results if r is not cut[0]] if cut else []
    assert len(cut) == 1, [r.head for r in results]
    r = cut[0]
    assert r.status == 200 and r.data == b"a" * 10 and not r.complete and r.eof
    assert whole[0].status == 200 and whole[0].complete and len(whole[0].data) == 100
    assert len(bad.requests) == 1 and len(good.requests) == 1, \
        "the cut response must not be followed by a second attempt"
    b.wait_log(rf'(?m)" 200 10 .* upstream={bad.addr} upstream_status=200 .* attempts=1 '
               rf'error=http_response_incomplete rid=\w+$', what="access")


def test_partial_header_then_close_is_not_retried(bulwark, origin):
    # A response byte arrived (even if the client never saw it): the upstream may have
    # acted on the request, so it is not replayed.
    bad = origin(send_then_close(b"HTTP/1.1 200 OK\r\nX-Half"))
    good = origin()
    b = bulwark(upstream([bad.addr, good.addr]))
    results = [fetch(b.port, "/echo") for _ in range(2)]
    assert sorted(r.status for r in results) == [200, 502], [r.head for r in results]
    assert len(bad.requests) == 1 and len(good.requests) == 1


def test_retries_exhausted_answers_the_last_cause(bulwark, origin):
    dead = f"127.0.0.1:{free_port()}"
    bad = origin(reset_after_request())
    causes = {dead: ("connection_refused", 502), bad.addr: ("connection_terminated", 502)}
    b = bulwark(upstream([dead, bad.addr], "    retries: 3\n"))
    resp = fetch(b.port, "/echo")
    assert resp.status == 502, resp.head
    m = re.fullmatch(r'bulwark; error=(\w+); next-hop="app"', resp.get("proxy-status"))
    assert m, resp.get("proxy-status")
    last_error = m.group(1)
    rid = resp.get("x-request-id")
    attempts = [(srv, cause, int(n)) for srv, cause, n in re.findall(
        rf"to (\S+) \(upstream \"app\"\) failed: [^;]*; cause=(\w+) attempt=(\d+) .*rid={rid}",
        b.error_log())]
    # each retry goes to a server not yet tried: two servers, two attempts, even with retries: 3
    assert [n for _, _, n in attempts] == [1, 2], b.error_log()
    for srv, cause, _ in attempts:
        assert causes[srv][0] == cause
    assert {srv for srv, _, _ in attempts} == {dead, bad.addr}, "retries must try both servers"
    last_server = attempts[-1][0]
    assert last_error == attempts[-1][1], "the answer is the last attempt's cause"
    line = access_line(b, rid)
    assert f" upstream={last_server} " in line
    assert f" attempts=2 error={last_error} " in line, line


def test_chunked_post_retried_before_its_body_was_sent_keeps_its_body(bulwark, origin):
    """The first server reads the request header and resets before any body byte was
    sent: bulwark may retry (the upstream cannot have acted on a request it did not
    have) or answer 502, but never blame the client. The old engine replayed the body
    from a client buffer where the chunked decoder had already consumed the chunk-size
    line: the data was parsed as a size line and the client got 400 http_request_error."""
    reset_done = threading.Event()

    def header_then_reset(c, o):
        method, target, _version, headers = read_request(c)
        record(o, method, target, headers)
        reset(c.sock)
        reset_done.set()

    bad = origin(header_then_reset)
    good = origin()
    b = bulwark(upstream([bad.addr, good.addr]))  # round robin: the first request goes to bad
    body = b"x" * 1000
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % len(body))
    assert reset_done.wait(10), "the first server never got the request"
    # the data comes after bulwark has moved on: the retry's header reached the good
    # server, or bulwark gave up (then it answers at once)
    deadline = time.monotonic() + 10
    answered = False
    while not good.requests and not answered and time.monotonic() < deadline:
        answered = bool(select.select([c.sock], [], [], 0.02)[0])
    assert good.requests or answered, "bulwark neither retried nor answered within 10 s"
    if not answered:
        c.sock.sendall(body + b"\r\n0\r\n\r\n")
    r = read_response(c, "POST")
    if r.status == 200:
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    else:
        assert r.status == 502 and r.header("Proxy-Status", "").startswith(
            "bulwark; error=connection_terminated"), r
