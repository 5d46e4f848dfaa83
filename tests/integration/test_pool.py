"""Upstream keep-alive pools: connections are reused, a pooled connection the origin
closed is replaced without the client noticing, `Connection: close` is honoured,
`keepalive: 0` disables pooling and idle connections close after idle_timeout."""
import hashlib
import json
import re
import threading
import time

from conftest import simple_config
from origins import iter_body, read_request
from origins.faulty import drain_request, fetch, record, respond


def access_lines(b, n, timeout=20.0):
    """Wait until the access log has n lines (it is flushed in batches); return them."""
    deadline = time.monotonic() + timeout
    while len(b.access_lines()) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = b.access_lines()
    assert len(lines) == n, lines
    return lines


def assert_clean(b, n, error_log=True):
    """n access lines, all 200 without an error; no upstream failure in the error log."""
    for line in access_lines(b, n):
        assert re.search(r'" 200 \d+ .* upstream_status=200 .* error=- rid=', line), line
    if error_log:
        assert "cause=" not in b.error_log(), b.error_log()


def answer_then_close():
    """Answers one request as keep-alive (Content-Length, no Connection: close), then
    closes at once, as a server with a tiny keep-alive timeout does."""
    def handler(c, o):
        record(o, *drain_request(c))
        respond(c, b"once")
    return handler


def close_on_second_request():
    """Answers the first request of each connection; the second one it reads and drops
    without an answer: the proxy reused a connection the origin had given up on."""
    def handler(c, o):
        record(o, *drain_request(c))
        respond(c, b"first on this connection")
        drain_request(c)
    return handler


def connection_close_each_time():
    def handler(c, o):
        record(o, *drain_request(c))
        respond(c, b"bye", b"Connection: close\r\n")
    return handler


def tracking_closes(closed_at):
    """A normal origin that records when the proxy closes each connection."""
    def handler(c, o):
        try:
            o._serve_http(c)
        except (EOFError, OSError):
            pass
        closed_at.append(time.monotonic())
    return handler


def test_sequential_requests_reuse_one_upstream_connection(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    for i in range(5):
        assert fetch(b.port, f"/echo?i={i}").status == 200
    assert len(o.requests) == 5
    assert o.connections == 1, "the pooled connection must be reused"
    assert_clean(b, 5)


def test_pooled_connection_the_origin_closed_while_idle_is_replaced(bulwark, origin):
    o = origin(answer_then_close())
    b = bulwark(simple_config([o.addr]))
    for i in range(20):
        resp = fetch(b.port, f"/x?i={i}")
        assert resp.status == 200 and resp.data == b"once", (i, resp.head)
    assert len(o.requests) == 20
    assert_clean(b, 20)


def test_pooled_connection_dropped_when_reused_is_replaced_even_with_retries_0(bulwark, origin):
    # The keep-alive race: the origin closes the connection just as the proxy sends on it.
    # Replacing a stale pooled connection is not a retry, so retries: 0 does not stop it.
    o = origin(close_on_second_request())
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 0\n"))
    for i in range(6):
        resp = fetch(b.port, f"/x?i={i}")
        assert resp.status == 200, (i, resp.head)
    assert len(o.requests) == 6
    assert o.connections >= 6
    # The origin dropped requests the proxy had sent: the error log may say so.
    assert_clean(b, 6, error_log=False)


def sink_answer(c, headers):
    h = hashlib.sha256()
    n = 0
    for piece in iter_body(c, headers):
        h.update(piece)
        n += len(piece)
    respond(c, json.dumps({"length": n, "sha256": h.hexdigest()}).encode())


def test_post_read_then_dropped_on_a_pooled_connection_is_not_replayed(bulwark, origin):
    # The origin read the whole POST and closed without an answer: it may have acted on
    # it, so the proxy must not send it again, pooled connection or not.
    reads = []

    def handler(c, o):
        first = True
        while True:
            method, target, _v, headers = read_request(c)
            reads.append(target)
            if not first:
                for _ in iter_body(c, headers):
                    pass
                return  # read the second request of a connection, then drop it
            first = False
            record(o, method, target, headers)
            sink_answer(c, headers)

    o = origin(handler)
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 2\n"))
    body = bytes(range(256)) * 200
    first = fetch(b.port, "/sink?i=1", method="POST", body=body)
    assert first.status == 200, first.head
    dropped = fetch(b.port, "/sink?i=2", method="POST", body=body)
    assert dropped.status == 502, dropped.head
    assert dropped.get("proxy-status") == \
        f'bulwark; error=connection_terminated; next-hop="app"'
    assert reads == ["/sink?i=1", "/sink?i=2"], "the dropped POST must not be sent again"
    third = fetch(b.port, "/sink?i=3", method="POST", body=body)
    assert third.status == 200 and json.loads(third.data)["length"] == len(body)
    assert reads == ["/sink?i=1", "/sink?i=2", "/sink?i=3"]
    line = b.wait_log(rf"(?m)^.*\"POST /sink\?i=2 HTTP/1.1\" 502 .*$", what="access").group(0)
    assert " attempts=1 error=connection_terminated " in line, line


def test_origin_closing_after_each_response_is_not_pooled(bulwark, origin):
    o = origin(connection_close_each_time())
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 0\n"))
    for i in range(5):
        resp = fetch(b.port, f"/x?i={i}")
        assert resp.status == 200 and resp.data == b"bye", (i, resp.head)
    assert o.connections == 5
    assert_clean(b, 5)
    assert all(" attempts=1 " in l for l in b.access_lines())


def test_keepalive_0_opens_a_new_upstream_connection_per_request(bulwark, origin):
    closed_at = []
    o = origin(tracking_closes(closed_at))
    b = bulwark(simple_config([o.addr], extra_upstream="    keepalive: 0\n"))
    for i in range(5):
        assert fetch(b.port, f"/echo?i={i}").status == 200
        # the proxy closes each upstream connection after its response
        deadline = time.monotonic() + 20
        while len(closed_at) <= i and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(closed_at) == i + 1, "keepalive: 0 must not keep the connection"
    assert o.connections == 5
    assert_clean(b, 5)


def test_idle_pooled_connection_closes_after_idle_timeout(bulwark, origin):
    closed_at = []
    o = origin(tracking_closes(closed_at))
    b = bulwark(simple_config([o.addr], extra_upstream=(
        "    keepalive: { max_idle: 4, idle_timeout: 300ms }\n")))
    assert fetch(b.port, "/echo").status == 200
    t0 = time.monotonic()
    deadline = t0 + 5
    while not closed_at and time.monotonic() < deadline:
        time.sleep(0.005)
    assert closed_at, "the idle connection was not closed within 5 s"
    idle = closed_at[0] - t0
    assert 0.2 <= idle < 2.0, f"idle_timeout 300ms, closed after {idle:.2f}s"
    # the next request opens a new connection and works
    assert fetch(b.port, "/echo").status == 200
    assert o.connections == 2


def test_idle_pooled_connection_stays_open_within_idle_timeout(bulwark, origin):
    closed_at = []
    o = origin(tracking_closes(closed_at))
    b = bulwark(simple_config([o.addr], extra_upstream=(
        "    keepalive: { max_idle: 4, idle_timeout: 10s }\n")))
    assert fetch(b.port, "/echo").status == 200
    time.sleep(0.7)  # the claim is about time passing: nothing to poll for
    assert closed_at == []
    assert fetch(b.port, "/echo").status == 200
    assert o.connections == 1


def test_max_idle_bounds_the_idle_connections_kept(bulwark, origin):
    closed_at = []
    release = threading.Event()

    def slow(c, o):
        try:
            while True:
                record(o, *drain_request(c))
                release.wait(10)
                respond(c, b"ok")
        except (EOFError, OSError):
            pass
        closed_at.append(time.monotonic())

    o = origin(slow)
    b = bulwark(simple_config([o.addr], extra_upstream="    keepalive: { max_idle: 1 }\n"))
    threads = [threading.Thread(target=fetch, args=(b.port, f"/x?i={i}"), daemon=True)
               for i in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(o.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(o.requests) == 3 and o.connections == 3
    finally:
        release.set()
    for t in threads:
        t.join(10)
    deadline = time.monotonic() + 20
    while len(closed_at) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(closed_at) == 2, "max_idle: 1 keeps one of the three connections"
    assert_clean(b, 3)
