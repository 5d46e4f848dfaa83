"""Keeping backends healthy without active checks: passive ejection (max_fails failures
within fail_window take a server out for eject_time), the retry budget (retries stay a
share of requests while a backend resets everything), and max_connections (the excess
is answered at once, the held connections keep working)."""
import json
import re
import socket
import time

from conftest import simple_config
from origins import free_port, wait_port
from origins.faulty import drain_request, fetch, record, reset_after_request
from test_admin import admin_get, metric


def always(status):
    """A keep-alive origin that answers every request with status and an empty body."""
    def handler(c, o):
        while True:
            record(o, *drain_request(c))
            c.sock.sendall(b"HTTP/1.1 %d Oops\r\nContent-Length: 0\r\n\r\n" % status)
    return handler


def with_admin(servers, extra_upstream, workers=2, extra_top=""):
    aport = free_port()
    text = simple_config(servers, extra_upstream=extra_upstream,
                         extra_top=f'admin: "127.0.0.1:{aport}"\n' + extra_top)
    return text.replace("workers: 1", f"workers: {workers}"), aport


def server_status(aport, addr):
    st = json.loads(admin_get(aport, "/status", token=None)[2])
    for s in st["upstreams"]["app"]["servers"]:
        if s["server"] == addr:
            return s
    raise AssertionError(f"{addr} not in /status: {st}")


def metrics(aport):
    return admin_get(aport, "/metrics", token=None)[2].decode()


def test_a_backend_answering_500_is_ejected_after_max_fails_and_comes_back(bulwark, origin):
    bad = origin(handler=always(500))
    good = origin()
    cfg, aport = with_admin([bad.addr, good.addr],
                            "    max_fails: 3\n    fail_window: 10s\n    eject_time: 4s\n"
                            "    fail_status: [500, 503]\n")
    b = bulwark(cfg)
    wait_port(aport)
    statuses = [fetch(b.port, f"/echo?i={i}").status for i in range(16)]
    # every 500 is counted before its response reaches the client, so the third one
    # ejects the server at once, whichever worker served it
    assert statuses.count(500) == 3, statuses
    assert len(bad.requests) == 3
    assert statuses[-8:] == [200] * 8
    b.wait_log(rf"upstream server {bad.addr} \(upstream \"app\"\) ejected for 4000 ms: "
               r"3 failures within 10000 ms, the last status 500; state=ejected cause=status 500")
    st = server_status(aport, bad.addr)
    ej = st["ejection"]
    assert st["ejected"] is True and ej["cause"] == "status 500", st
    assert ej["until"] and 0 < ej["for_ms"] <= 4000 and ej["last"], st
    assert ej["ejections"] == 1 and ej["fails"] == 0 and ej["max_fails"] == 3, st
    assert st["balancer"]["up"] is True  # ejection is not the active checks' down
    assert server_status(aport, good.addr)["ejected"] is False
    m = metrics(aport)
    assert metric(m, "bulwark_upstream_ejections_total", group="app", server=bad.addr) == 1
    assert metric(m, "bulwark_upstream_ejections_total", group="app", server=good.addr) == 0

    # eject_time runs out: the server is back in rotation and gets traffic again
    b.wait_log(rf"upstream server {bad.addr} \(upstream \"app\"\) is back in rotation: "
               r"its ejection ended; state=up cause=eject_time_elapsed", timeout=15)
    assert server_status(aport, bad.addr)["ejected"] is False
    deadline = time.monotonic() + 10
    while len(bad.requests) == 3 and time.monotonic() < deadline:
        fetch(b.port, "/echo")
    assert len(bad.requests) > 3, "an ejected server must come back after eject_time"


def test_a_status_not_in_fail_status_ejects_nothing(bulwark, origin):
    bad = origin(handler=always(500))
    good = origin()
    b = bulwark(simple_config([bad.addr, good.addr],
                              extra_upstream="    max_fails: 2\n    fail_status: [502]\n"))
    statuses = [fetch(b.port, "/echo").status for _ in range(12)]
    assert statuses.count(500) == 6, statuses  # round robin on, never ejected
    assert "ejected" not in b.error_log()


def test_connect_failures_eject_the_server(bulwark, origin):
    dead = f"127.0.0.1:{free_port()}"
    good = origin()
    b = bulwark(simple_config([dead, good.addr],
                              extra_upstream="    max_fails: 2\n    eject_time: 30s\n"))
    for i in range(12):
        resp = fetch(b.port, f"/echo?i={i}")
        assert resp.status == 200, resp.head  # refused connects are retried on the other
    b.wait_log(rf"upstream server {dead} \(upstream \"app\"\) ejected for 30000 ms: 2 failures "
               r"within 10000 ms, the last connection_refused; state=ejected "
               r"cause=connection_refused")
    b.wait_log(r"(?:.*\n){11}.*\S", what="access")  # lines are written in batches
    lines = b.access_lines()
    assert len(lines) == 12
    retried = [l for l in lines if " attempts=2 " in l]
    # the dead server was tried twice, then passed over
    assert len(retried) == 2, "\n".join(lines)
    assert all(" attempts=1 " in l for l in lines[lines.index(retried[-1]) + 1:])
    assert b.error_log().count("cause=connection_refused attempt=1") == 2


def test_max_fails_zero_switches_ejection_off(bulwark, origin):
    dead = f"127.0.0.1:{free_port()}"
    good = origin()
    b = bulwark(simple_config([dead, good.addr], extra_upstream="    max_fails: 0\n"))
    for _ in range(12):
        assert fetch(b.port, "/echo").status == 200
    assert b.error_log().count("cause=connection_refused attempt=1") == 6
    assert "ejected" not in b.error_log()


def test_retries_stay_within_the_budget_while_a_backend_resets_everything(bulwark, origin):
    bad = origin(handler=reset_after_request())
    good = origin()
    cfg, aport = with_admin([bad.addr, good.addr],
                            "    max_fails: 0\n    retries: 1\n    retry_budget: 20%\n",
                            workers=1)
    b = bulwark(cfg)
    wait_port(aport)
    n = 150
    t0 = time.monotonic()
    statuses = [fetch(b.port, f"/echo?i={i}").status for i in range(n)]
    elapsed = time.monotonic() - t0
    first_on_bad = len(bad.requests)      # a retry goes to the other server, never back
    retries = len(good.requests) - (n - first_on_bad)
    floor = 10                            # UPSTREAM_RETRY_FLOOR per 10 s window
    windows = int(elapsed // 10) + 1      # a slow machine may spread the run over windows
    assert first_on_bad >= n // 3, (first_on_bad, statuses)
    assert 0 < retries <= 0.2 * n + floor * windows, (retries, first_on_bad, elapsed)
    assert statuses.count(200) == n - first_on_bad + retries
    refused = first_on_bad - retries
    assert refused > 0 and statuses.count(502) == refused, statuses
    b.wait_log(rf"no retry after the failed attempt on {bad.addr} \(upstream \"app\"\): the "
               r"retry budget \(20% of requests over 10 s\) is spent; "
               r"cause=connection_terminated attempt=1")
    m = metrics(aport)
    assert metric(m, "bulwark_upstream_retries_refused_total", group="app") == refused
    assert metric(m, "bulwark_upstream_retries_total", group="app",
                  cause="connection_terminated") == retries


def read_all(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return data, "eof"
            data += d
    except ConnectionResetError:
        return data, "reset"
    except socket.timeout:
        return data, "timeout"


def keep_alive_get(sock, path="/echo"):
    resp = fetch(0, path, headers=[("Connection", "keep-alive")], sock=sock)
    assert resp.status == 200, resp.head
    assert not resp.eof


def test_max_connections_refuses_the_excess_at_once(bulwark, origin):
    good = origin()
    # reclaim_idle_at off: the cap alone (test_slow_clients.py covers the idle reclaim,
    # which would close a held idle connection to admit the third)
    cfg, aport = with_admin([good.addr], "", workers=2,
                            extra_top="max_connections: 2\nclient:\n  reclaim_idle_at: 0%\n")
    b = bulwark(cfg)
    wait_port(aport)
    held = [socket.create_connection(("127.0.0.1", b.port), timeout=10) for _ in range(2)]
    try:
        for s in held:
            keep_alive_get(s)  # both are sessions now
        # a third connection: answered at once, without sending anything
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
            data, how = read_all(s, 5)
        assert time.monotonic() - t0 < 2.0
        assert how == "eof", (how, data)
        head = data.decode("latin-1")
        assert head.startswith("HTTP/1.1 503 "), head
        assert "\r\nRetry-After: 1\r\n" in head
        assert "\r\nProxy-Status: bulwark; error=connection_limit_reached\r\n" in head
        assert "\r\nConnection: close\r\n" in head
        # one that sends its request first gets the 503 or a close, never a wait
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            data, how = read_all(s, 5)
        assert time.monotonic() - t0 < 2.0 and how in ("eof", "reset"), (how, data)
        assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data
        # the held connections were not touched
        for s in held:
            keep_alive_get(s)
        b.wait_log(r"client connection refused with 503: max_connections \(2\) are open; "
                   r"cause=connection_limit_reached refused=1")
        assert metric(metrics(aport), "bulwark_client_connections_refused_total") == 2
        st = json.loads(admin_get(aport, "/status", token=None)[2])
        assert st["totals"]["client_connections_refused"] == 2
    finally:
        held[0].close()
    # a slot freed by a close is taken by the next connection
    deadline = time.monotonic() + 10
    while True:
        resp = fetch(b.port, "/echo")
        if resp.status == 200 or time.monotonic() > deadline:
            break
    assert resp.status == 200, resp.head
    keep_alive_get(held[1])
    held[1].close()
