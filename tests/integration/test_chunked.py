"""Chunked transfer coding both ways, and close-delimited upstream bodies."""
import hashlib
import random

from conftest import simple_config
from origins import client, header, is_closed, pattern_bytes, read_response


def chunk(data, ext=b""):
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


def sink_result(body):
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_request_body_reaches_the_origin_intact(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    rnd = random.Random(7)
    body = bytes(rnd.getrandbits(8) for _ in range(300000))
    sizes = [1, 2, 15, 16, 255, 4096, 65535, 65536, 70000]
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    pos = 0
    i = 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        piece = body[pos:pos + n]
        # extensions and upper-case hex are legal and must not reach the data
        ext = b";name=value" if i % 3 == 0 else b""
        line = (b"%X" % len(piece)) + ext + b"\r\n"
        c.sock.sendall(line + piece + b"\r\n")
        pos += n
        i += 1
    c.sock.sendall(b"0\r\nX-Trailer: yes\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.json() == sink_result(body)
    # the origin got a chunked request, not some other framing
    method, target, headers = o.requests[-1]
    assert header(headers, "Transfer-Encoding", "").lower() == "chunked"
    assert header(headers, "Content-Length") is None
    # and the connection carries the next request
    c.sock.sendall(b"GET /echo?next HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?next"


def test_chunked_request_body_split_at_every_boundary(bulwark, origin):
    """Chunk-size lines, CRLFs and data arrive byte by byte."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    body = b"hello, chunked world"
    wire = chunk(body[:5], b";a=b") + chunk(body[5:]) + b"0\r\n\r\n"
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(len(wire)):
        c.sock.sendall(wire[i:i + 1])
    r = read_response(c)
    assert r.json() == sink_result(body)


def test_empty_chunked_request_body(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert read_response(c).json() == sink_result(b"")
    c.sock.sendall(b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?after"


def test_chunked_response_is_relayed_chunked_to_http11(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    for n in (0, 1, 10000, 123457):
        c.sock.sendall(b"GET /chunked/%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        r = read_response(c)
        assert r.status == 200
        assert r.framing == "chunked", r.headers
        assert r.header("Content-Length") is None
        assert r.body == pattern_bytes(n)
        assert r.chunk_sizes[-1] == 0
    assert not is_closed(c, timeout=0.2)


def test_chunked_response_is_close_delimited_to_http10(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /chunked/123457 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.header("Transfer-Encoding") is None, "chunked sent to an HTTP/1.0 client"
    assert r.header("Content-Length") is None
    assert r.framing == "close"
    assert r.body == pattern_bytes(123457)  # read until the close: body ends there
    assert (r.header("Connection") or "close").lower() == "close"


def test_close_delimited_response_is_rechunked_for_http11(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /close/200000 HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.framing == "chunked", r.headers
    assert r.body == pattern_bytes(200000)
    # the client connection survives the upstream close
    c.sock.sendall(b"GET /echo?next HTTP/1.1\r\nHost: t\r\n\r\n")
    r2 = read_response(c)
    assert r2.json()["target"] == "/echo?next"
    assert o.connections == 2  # a close-delimited upstream connection is never reused


def test_close_delimited_response_to_http10_client(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /close/50000 HTTP/1.0\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.header("Transfer-Encoding") is None
    assert r.framing == "close"
    assert r.body == pattern_bytes(50000)


def test_chunked_response_with_trailer_and_extensions(bulwark, origin):
    """Extensions and trailer fields from the upstream are syntax, not data."""
    def handler(c, o):
        from origins import read_request
        read_request(c)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5;ext=1\r\nhello\r\n"
                       b"1\r\n,\r\n"
                       b"6\r\n world\r\n"
                       b"0\r\nX-Checksum: abc\r\n\r\n")
        c.read_some(1)  # hold the connection until bulwark drops it

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.body == b"hello, world"
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).body == b"hello, world"


def test_large_chunked_upload_and_download_on_one_connection(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port, timeout=30)
    body = pattern_bytes(5 * 1024 * 1024 + 3)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), 100000):
        c.sock.sendall(chunk(body[i:i + 100000]))
    c.sock.sendall(b"0\r\n\r\n")
    assert read_response(c).json() == sink_result(body)
    c.sock.sendall(b"GET /chunked/3000000 HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.framing == "chunked"
    assert r.body == pattern_bytes(3000000)
