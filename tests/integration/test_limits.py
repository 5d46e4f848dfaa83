"""Size limits: request line (414), header section (431), body (413)."""
import hashlib
import time

from conftest import simple_config
from origins import client, is_closed, iter_body, read_request, read_response

LIMITS = "client:\n  max_request_line: 256\n  max_header_size: 1024\n  max_body_size: 4k\n"
ROUTES = ("routes:\n"
          "  - match: { path: \"/small/\" }\n    upstream: app\n    max_body_size: 1k\n"
          "  - match: { path: \"/unlimited/\" }\n    upstream: app\n    max_body_size: 0\n"
          "  - upstream: app\n")


def config(o):
    return simple_config([o.addr], extra_top=LIMITS, routes=ROUTES)


def assert_refused(c, status):
    r = read_response(c)
    assert r.status == status, r
    assert r.header("Connection", "").lower() == "close"
    assert is_closed(c), f"connection left open after {status}"
    return r


def probe_only(b, o):
    """A good request afterwards; the origin must have seen only it."""
    g = client(b.port)
    g.sock.sendall(b"GET /echo?probe HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(g).status == 200
    assert [t for _, t, _ in o.requests] == ["/echo?probe"], o.requests


def request_line(target_len):
    target = b"/echo?" + b"a" * (target_len - 6)
    return b"GET " + target + b" HTTP/1.1"


def test_request_line_at_the_limit_passes(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    line = request_line(256 - 13)
    assert len(line) == 256
    c = client(b.port)
    c.sock.sendall(line + b"\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert len(r.json()["target"]) == 243


def test_request_line_over_the_limit_gets_414(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    line = request_line(256 - 12)
    assert len(line) == 257
    c = client(b.port)
    c.sock.sendall(line + b"\r\nHost: t\r\n\r\n")
    assert_refused(c, 414)
    probe_only(b, o)


def test_long_request_line_is_refused_before_it_ends(bulwark, origin):
    """The limit applies as soon as it is passed, not when the line ends."""
    o = origin()
    b = bulwark(config(o))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"GET /" + b"a" * 2000)
    t0 = time.monotonic()
    assert_refused(c, 414)
    assert time.monotonic() - t0 < 2.0


def header_block(total):
    """A complete request header section of exactly total bytes."""
    head = b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Pad: "
    pad = total - len(head) - 4
    return head + b"p" * pad + b"\r\n\r\n"


def test_header_section_at_the_limit_passes(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    c.sock.sendall(header_block(1024))
    r = read_response(c)
    assert r.status == 200
    assert dict(r.json()["headers"])["X-Pad"] == "p" * (1024 - 36 - 4)


def test_header_section_over_the_limit_gets_431(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    c.sock.sendall(header_block(1025))
    assert_refused(c, 431)
    probe_only(b, o)


def test_many_small_headers_over_the_limit_get_431(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n" +
                   b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n")
    assert_refused(c, 431)
    probe_only(b, o)


def test_too_many_header_fields_get_431(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))  # default 16 KiB: the count is the limit here
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n" +
                   b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n")
    assert_refused(c, 431)
    probe_only(b, o)


def test_unfinished_header_over_the_limit_is_refused_at_once(bulwark, origin):
    """A header that never ends but passes the limit is refused without
    waiting for header_timeout (the default, 10 s)."""
    o = origin()
    b = bulwark(config(o))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"p" * 1500)
    t0 = time.monotonic()
    assert_refused(c, 431)
    assert time.monotonic() - t0 < 2.0


def post(c, path, body, chunked=False, chunk_size=100):
    if chunked:
        wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk_size]), body[i:i + chunk_size])
                        for i in range(0, len(body), chunk_size)) + b"0\r\n\r\n"
        c.sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
                       b"\r\n\r\n" + wire)
    else:
        c.sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body)


def test_body_at_the_route_limit_passes(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    for chunked in (False, True):
        body = b"b" * 1024
        post(c, b"/small/x", body, chunked)
        r = read_response(c)
        assert r.status == 200, (chunked, r)
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_content_length_over_the_route_limit_gets_413(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    post(c, b"/small/x", b"b" * 1025)
    r = assert_refused(c, 413)
    assert "error=http_request_error" in r.header("Proxy-Status", "")
    probe_only(b, o)


def test_content_length_is_refused_before_the_body_arrives(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    c.sock.sendall(b"POST /small/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n")
    assert_refused(c, 413)
    probe_only(b, o)


def test_chunked_body_over_the_route_limit_gets_413(bulwark, origin):
    def handler(c, o):
        while True:
            method, target, version, headers = read_request(c)
            try:
                n = sum(len(p) for p in iter_body(c, headers))
            except (EOFError, ValueError, OSError):
                o.requests.append((method, target, "aborted"))
                return
            o.requests.append((method, target, n))
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    o = origin(handler)
    b = bulwark(config(o))
    c = client(b.port)
    post(c, b"/small/x", b"b" * 1025, chunked=True, chunk_size=256)
    assert_refused(c, 413)
    # the header may have gone ahead of the streaming body, but the origin
    # never got a complete request from it
    g = client(b.port)
    g.sock.sendall(b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(g).body == b"ok"
    assert [(t, n) for _, t, n in o.requests if n != "aborted"] == [("/probe", 0)], o.requests


def test_default_limit_applies_to_routes_without_their_own(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    post(c, b"/other", b"b" * 4096)
    assert read_response(c).status == 200
    post(c, b"/other", b"b" * 4097)
    assert_refused(c, 413)
    c = client(b.port)
    post(c, b"/other", b"b" * 4097, chunked=True, chunk_size=1000)
    assert_refused(c, 413)


def test_route_limit_zero_is_unlimited(bulwark, origin):
    o = origin()
    b = bulwark(config(o))
    c = client(b.port)
    body = b"u" * 100000
    post(c, b"/unlimited/x", body)
    r = read_response(c)
    assert r.status == 200 and r.json()["body_length"] == len(body)
    post(c, b"/unlimited/x", body, chunked=True, chunk_size=10000)
    r = read_response(c)
    assert r.status == 200 and r.json()["body_length"] == len(body)
