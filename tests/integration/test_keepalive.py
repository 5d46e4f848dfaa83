"""Persistent connections: client keep-alive, HTTP/1.0 rules, upstream reuse,
and the idle keep-alive timeout."""
import time

from conftest import simple_config
from origins import client, is_closed, pattern_bytes, read_response


def get(c, target, extra=b"", version=b"HTTP/1.1"):
    c.sock.sendall(b"GET " + target.encode() + b" " + version + b"\r\nHost: t\r\n" + extra +
                   b"\r\n")
    return read_response(c)


def test_several_requests_share_one_client_connection(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    for i in range(5):
        r = get(c, f"/echo?i={i}")
        assert r.status == 200
        assert r.json()["target"] == f"/echo?i={i}"
        assert (r.header("Connection") or "").lower() != "close"
    r = get(c, "/bytes/3000")
    assert r.status == 200 and r.body == pattern_bytes(3000)
    # all six went over the one client connection and it is still open
    assert not is_closed(c, timeout=0.2)
    assert len(o.requests) == 6


def test_upstream_connection_is_reused_across_client_connections(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    for i in range(5):
        c = client(b.port)
        r = get(c, f"/echo?n={i}", extra=b"Connection: close\r\n")
        assert r.status == 200 and r.json()["target"] == f"/echo?n={i}"
        assert is_closed(c)
        c.sock.close()
    assert len(o.requests) == 5
    assert o.connections == 1, f"bulwark opened {o.connections} upstream connections"


def test_upstream_connection_is_reused_on_one_client_connection(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    for i in range(4):
        assert get(c, f"/bytes/{100 + i}").body == pattern_bytes(100 + i)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
    assert read_response(c).json()["length"] == 5
    assert get(c, "/chunked/20000").body == pattern_bytes(20000)
    assert o.connections == 1, f"bulwark opened {o.connections} upstream connections"


def test_http10_without_keep_alive_is_closed_after_the_response(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.json()["target"] == "/echo"
    assert (r.header("Connection") or "").lower() != "keep-alive"
    assert is_closed(c), "HTTP/1.0 connection without keep-alive stayed open"


def test_http11_connection_close_is_honoured(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    r = get(c, "/echo", extra=b"Connection: close\r\n")
    assert r.status == 200
    assert (r.header("Connection") or "").lower() == "close"
    assert is_closed(c)


def test_http10_with_keep_alive_stays_open(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    for i in range(3):
        r = get(c, f"/echo?k={i}", extra=b"Connection: keep-alive\r\n", version=b"HTTP/1.0")
        assert r.status == 200
        assert r.framing == "length", "a kept-alive 1.0 response must be length-delimited"
        assert r.json()["target"] == f"/echo?k={i}"
        assert (r.header("Connection") or "").lower() == "keep-alive"
    assert not is_closed(c, timeout=0.2)
    # a 1.0 request without keep-alive on the same connection ends it
    r = get(c, "/echo?last", version=b"HTTP/1.0")
    assert r.status == 200
    assert is_closed(c)


def test_keepalive_timeout_closes_an_idle_client_connection(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="client:\n  keepalive_timeout: 1s\n"))
    c = client(b.port)
    assert get(c, "/echo").status == 200
    t0 = time.monotonic()
    assert is_closed(c, timeout=5.0), "idle connection not closed within 5 s"
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed < 3.0, f"closed after {elapsed:.2f}s, keepalive_timeout is 1s"
    assert c.buf == b"", "bytes sent on an idle connection before closing it"


def test_activity_restarts_the_keepalive_timer(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="client:\n  keepalive_timeout: 1s\n"))
    c = client(b.port)
    t0 = time.monotonic()
    for i in range(5):
        assert get(c, f"/echo?{i}").status == 200
        # idle for less than the timeout, each time
        assert not is_closed(c, timeout=0.5)
    assert time.monotonic() - t0 > 2.0  # longer in total than the timeout
    assert get(c, "/echo?end").status == 200
