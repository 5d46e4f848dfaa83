"""Bugs found in request engine v2 by attacking the binary (see test_engine_v2.py for
the old engine's bugs). Each test here describes the wanted behaviour and is marked
fixed: chunked request bodies are decoded and re-framed by bulwark (CRLF only, no
extensions, no trailer fields), as the old engine did, while a retry still sends the
same data.

These tests pass against the old engine (BULWARK_BIN=/work/wt-old/bulwark): they are
regressions of engine v2.
"""
import threading

import pytest

from conftest import simple_config
from origins import client, read_response
from origins.faulty import record


def crlf_only_chunked_origin(log):
    """A lenient but common kind of backend: lines end only at CRLF; a chunk-size line
    is its leading hex digits (whatever follows is taken as an extension). Every
    request it parses is logged as (method, target, body)."""
    def handler(c, o):
        while True:
            head = c.read_until(b"\r\n\r\n").decode("latin-1")
            method, target = head.split(" ", 2)[:2]
            body = b""
            while True:
                line = c.read_until(b"\r\n")[:-2]
                digits = b""
                for ch in line:
                    if chr(ch) not in "0123456789abcdefABCDEF":
                        break
                    digits += bytes([ch])
                size = int(digits or b"0", 16)
                if size == 0:
                    while c.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += c.read_exact(size)
                c.read_exact(2)
            with o.lock:
                log.append((method, target, body))
            record(o, method, target, [])
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(target), target.encode()))
    return handler


def test_bare_lf_in_a_chunked_request_body_cannot_smuggle_a_request(bulwark, origin):
    """bulwark accepts a bare LF ending a chunk-size line (RFC 9112 2.2 allows it) and
    forwards the framing as received; a backend that ends lines only at CRLF reads
    other chunk boundaries, and the second chunk's data becomes a request of its own.
    The old engine re-encoded the body (clean CRLF framing): the backend saw one POST."""
    log = []
    o = origin(crlf_only_chunked_origin(log))
    b = bulwark(simple_config([o.addr]))
    smuggled = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    # bulwark: chunk "XX" (size line "2\n"), then a chunk of len(smuggled) bytes.
    # backend: size line "2\nXX" = 2, data = the next size line's two hex digits,
    # then "0" ends the body and the GET follows.
    body = b"2\nXX\r\n" + b"%02x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: test.local\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + body)
    r = read_response(c)
    assert r.status in (200, 400), r
    if r.status == 200:
        # the backend parsed the request: it must have seen exactly one POST with the
        # body bulwark accepted ("XX" + smuggled), and nothing else
        assert [(m, t) for m, t, _b in log] == [("POST", "/upload")], log
        assert log[0][2] == b"XX" + smuggled, log


def test_request_trailer_fields_are_not_forwarded(bulwark, origin):
    """src/http/chunked.c says trailer fields are dropped; engine v2 forwards the
    client's trailer section (here a second Host) to the upstream as received."""
    raw = []
    done = threading.Event()

    def handler(c, o):
        head = c.read_until(b"\r\n\r\n")
        data = c.read_until(b"\r\n0\r\n")  # the last chunk, then the trailer section
        data += c.read_until(b"\r\n\r\n") if not c.buf.startswith(b"\r\n") else c.read_exact(2)
        raw.append(head + data)
        done.set()
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: test.local\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nHost: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
    r = read_response(c)
    assert r.status == 200, r
    assert done.wait(5)
    assert b"evil.example" not in raw[0] and b"6.6.6.6" not in raw[0], raw[0]
