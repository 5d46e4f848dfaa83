"""Pipelined requests: several requests in one write are answered in order."""
import hashlib

from conftest import simple_config
from origins import client, is_closed, pattern_bytes, read_response


def test_pipelined_gets_are_answered_in_order(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /bytes/777 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /echo?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /chunked/25000 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /echo?n=5 HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2, r3, r4, r5 = (read_response(c) for _ in range(5))
    assert r1.status == 200 and r1.json()["target"] == "/echo?n=1"
    assert r2.status == 200 and r2.body == pattern_bytes(777)
    assert r3.status == 200 and r3.json()["target"] == "/echo?n=3"
    assert r4.status == 200 and r4.body == pattern_bytes(25000)
    assert r5.status == 200 and r5.json()["target"] == "/echo?n=5"
    assert [t for _, t, _ in o.requests] == [
        "/echo?n=1", "/bytes/777", "/echo?n=3", "/chunked/25000", "/echo?n=5"]
    assert not is_closed(c, timeout=0.2)


def test_pipelined_post_with_body_between_gets(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = b"0123456789" * 1000
    c.sock.sendall(b"GET /echo?before HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) +
                   body +
                   b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2, r3 = (read_response(c) for _ in range(3))
    assert r1.json()["target"] == "/echo?before"
    assert r2.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert r3.json()["target"] == "/echo?after"
    assert r3.json()["method"] == "GET"


def test_pipelined_chunked_post_between_gets(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = b"abc" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                       for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    c.sock.sendall(b"GET /echo?1 HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   chunked +
                   b"POST /echo?3 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                   b"GET /echo?4 HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2, r3, r4 = (read_response(c) for _ in range(4))
    assert r1.json()["target"] == "/echo?1"
    assert r2.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    d3 = r3.json()
    assert (d3["target"], d3["body_length"]) == ("/echo?3", 3)
    assert d3["body_sha256"] == hashlib.sha256(b"xyz").hexdigest()
    assert r4.json()["target"] == "/echo?4"


def test_pipeline_ending_with_connection_close(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo?a HTTP/1.1\r\nHost: t\r\n\r\n"
                   b"GET /echo?b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                   b"GET /echo?never HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, r2 = read_response(c), read_response(c)
    assert r1.json()["target"] == "/echo?a"
    assert r2.json()["target"] == "/echo?b"
    assert (r2.header("Connection") or "").lower() == "close"
    assert is_closed(c)
    assert "/echo?never" not in [t for _, t, _ in o.requests]


def test_many_small_pipelined_requests(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    n = 50
    c.sock.sendall(b"".join(b"GET /echo?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(n)))
    for i in range(n):
        r = read_response(c)
        assert r.status == 200 and r.json()["target"] == f"/echo?i={i}"
