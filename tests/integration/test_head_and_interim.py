"""Responses without a body (HEAD, 204, 304) and 1xx interim responses."""
import pytest

from conftest import simple_config
from origins import client, is_closed, pattern_bytes, read_request, read_response


def send(c, line, extra=b""):
    c.sock.sendall(line + b"\r\nHost: t\r\n" + extra + b"\r\n")


def test_head_relays_no_body_and_keeps_content_length(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"HEAD /bytes/12345 HTTP/1.1")
    r = read_response(c, method="HEAD")
    assert r.status == 200
    assert r.header("Content-Length") == "12345"
    # nothing may follow the header: the next response must start right away
    send(c, b"GET /echo?next HTTP/1.1")
    r2 = read_response(c)
    assert r2.status == 200, f"body bytes leaked after HEAD: {r2.raw_head[:80]!r}"
    assert r2.json()["target"] == "/echo?next"


def test_head_to_a_chunked_resource(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"HEAD /chunked/5000 HTTP/1.1")
    r = read_response(c, method="HEAD")
    assert r.status == 200
    send(c, b"GET /bytes/10 HTTP/1.1")
    r2 = read_response(c)
    assert r2.status == 200 and r2.body == pattern_bytes(10)


def test_head_with_a_lying_upstream_body_is_not_relayed(bulwark, origin):
    """An upstream that wrongly sends a body after a HEAD response: bulwark
    must not pass those bytes to the client as the next response."""
    def handler(c, o):
        while True:
            method, target, version, headers = read_request(c)
            o.requests.append((method, target, headers))
            if method == "HEAD":
                c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
                return  # and close: the connection is poisoned anyway
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"HEAD / HTTP/1.1")
    r = read_response(c, method="HEAD")
    assert r.status == 200 and r.header("Content-Length") == "5"
    send(c, b"GET / HTTP/1.1")
    r2 = read_response(c)
    assert r2.status == 200 and r2.body == b"ok"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(bulwark, origin, status):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"GET /status/%d HTTP/1.1" % status)
    r = read_response(c)
    assert r.status == status
    assert r.header("Transfer-Encoding") is None, "a chunked framing added to a bodiless response"
    send(c, b"GET /echo?next HTTP/1.1")
    r2 = read_response(c)
    assert r2.status == 200, f"bytes after the {status}: {r2.raw_head[:80]!r}"
    assert r2.json()["target"] == "/echo?next"


def test_103_early_hints_reach_an_http11_client_before_the_200(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"GET /early/3000 HTTP/1.1")
    first = read_response(c)
    assert first.status == 103, first
    assert first.header("Link") == "</style.css>; rel=preload"
    final = read_response(c)
    assert final.status == 200
    assert final.body == pattern_bytes(3000)
    send(c, b"GET /echo?next HTTP/1.1")
    assert read_response(c).json()["target"] == "/echo?next"


def test_103_is_not_sent_to_an_http10_client(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /early/100 HTTP/1.0\r\n\r\n")
    r = read_response(c)
    assert r.status == 200, "an interim response was sent to an HTTP/1.0 client"
    assert r.body == pattern_bytes(100)


def test_several_interim_responses_in_one_read(bulwark, origin):
    """102 and two 103s arrive with the final response in one segment."""
    def handler(c, o):
        read_request(c)
        c.sock.sendall(b"HTTP/1.1 102 Processing\r\n\r\n"
                       b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n"
                       b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        c.read_some(1)

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    send(c, b"GET / HTTP/1.1")
    seen = []
    while True:
        r = read_response(c)
        seen.append(r.status)
        if r.status >= 200:
            break
    assert seen[-1] == 200 and r.body == b"done"
    assert seen.count(103) == 2, seen
    assert all(s in (102, 103) for s in seen[:-1]), seen


def test_unsolicited_100_from_upstream_is_not_doubled(bulwark, origin):
    """The upstream sends 100 Continue on its own: bulwark answers Expect itself,
    so the client sees exactly one 100 at most and then the final response."""
    def handler(c, o):
        method, target, version, headers = read_request(c)
        c.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        from origins import iter_body
        n = sum(len(p) for p in iter_body(c, headers))
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
            len(str(n)), str(n).encode()))
        c.read_some(1)

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    assert read_response(c).status == 100
    c.sock.sendall(b"abc")
    r = read_response(c)
    assert r.status == 200, f"second interim response: {r.raw_head!r}"
    assert r.body == b"3"


def test_304_with_content_length_has_no_body(bulwark, origin):
    """A 304 may carry the Content-Length of the selected representation."""
    def handler(c, o):
        while True:
            read_request(c)
            c.sock.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"x\"\r\n\r\n")

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port, timeout=5)
    for _ in range(2):
        send(c, b"GET / HTTP/1.1", b"If-None-Match: \"x\"\r\n")
        r = read_response(c)
        assert r.status == 304
        assert r.header("ETag") == '"x"'
    assert not is_closed(c, timeout=0.2)
