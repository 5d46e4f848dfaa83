"""Expect: 100-continue: bulwark invites the body, then relays it."""
import hashlib
import socket

from conftest import simple_config
from origins import client, header, is_closed, read_response


def sink_result(body):
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_100_continue_then_body(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = bytes(range(256)) * 400
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                   b"Expect: 100-continue\r\n\r\n" % len(body))
    interim = read_response(c)  # nothing of the body has been sent yet
    assert interim.status == 100, interim
    assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert interim.body == b""
    c.sock.sendall(body)
    r = read_response(c)
    assert r.status == 200
    assert r.json() == sink_result(body)
    # the expectation was bulwark's to answer: not forwarded
    assert header(o.requests[-1][2], "Expect") is None
    c.sock.sendall(b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?after"


def test_100_continue_with_chunked_body(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    interim = read_response(c)
    assert interim.status == 100
    c.sock.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.json() == sink_result(b"hello world")


def test_only_one_100_continue_is_sent(bulwark, origin):
    """The body is sent in pieces; the 100 comes once, before the final 200."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = b"x" * 30000
    c.sock.sendall(b"PUT /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                   b"Expect: 100-continue\r\n\r\n" % len(body))
    assert read_response(c).status == 100
    for i in range(0, len(body), 7000):
        c.sock.sendall(body[i:i + 7000])
    r = read_response(c)
    assert r.status == 200, "a second interim response or wrong status"
    assert r.json() == sink_result(body)


def test_client_that_sends_the_body_without_waiting(bulwark, origin):
    """A client may send the body at once (RFC 9110 10.1.1); the 100 may still
    come, but the final response must be right and come once."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = b"abcdef" * 1000
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                   b"Expect: 100-continue\r\n\r\n" % len(body) + body)
    r = read_response(c)
    if r.status == 100:
        r = read_response(c)
    assert r.status == 200
    assert r.json() == sink_result(body)
    c.sock.sendall(b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 200 and r.json()["target"] == "/echo?after"


def test_no_100_continue_for_a_body_that_is_too_large(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="client:\n  max_body_size: 1k\n"))
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    r = read_response(c)
    assert r.status == 413, "expected the final refusal instead of an invitation"
    assert is_closed(c)
    assert o.requests == []


def test_no_100_continue_for_http10(bulwark, origin):
    """RFC 9110 10.1.1: no 100 (Continue) to an HTTP/1.0 client."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.0\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    c.sock.settimeout(0.5)
    try:
        early = c.sock.recv(65536)
    except socket.timeout:
        early = b""
    assert not early.startswith(b"HTTP/1.1 100"), early
    c.buf = early
    c.sock.settimeout(10)
    c.sock.sendall(b"data")
    r = read_response(c)
    assert r.status == 200
    assert r.json() == sink_result(b"data")
