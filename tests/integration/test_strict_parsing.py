"""Strict request parsing: an ambiguous or malformed request is refused with
the right status, the connection is closed, and nothing reaches the origin."""
import pytest

from conftest import simple_config
from origins import client, is_closed, iter_body, read_request, read_response

H = b"Host: t\r\n"

# (id, raw request, accepted statuses)
CASES = [
    ("cl_and_te",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", {400}),
    ("te_and_cl",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\n", {400}),
    ("two_differing_content_length",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     {400}),
    ("content_length_list_differing",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", {400}),
    ("content_length_not_digits", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5a\r\n\r\n",
     {400}),
    ("content_length_plus_sign", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\n",
     {400}),
    ("content_length_negative", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
     {400}),
    ("content_length_hex", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n",
     {400}),
    ("content_length_empty", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n", {400}),
    ("content_length_overflow",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", {400}),
    ("te_gzip_only", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
     {400, 501}),
    ("te_chunked_not_final",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", {400, 501}),
    ("te_chunked_twice",
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
     {400, 501}),
    ("te_identity", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
     {400, 501}),
    ("te_in_http10", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     {400}),
    ("obs_fold", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: one\r\n  two\r\n\r\n", {400}),
    ("obs_fold_tab", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n\r\n", {400}),
    ("space_before_first_header", b"GET /echo HTTP/1.1\r\n " + H + b"\r\n", {400}),
    ("bare_cr_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", {400}),
    ("bare_cr_in_request_line", b"GET /echo\r HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("bare_cr_line_end", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\r\rX-B: b\r\n\r\n", {400}),
    ("space_before_colon", b"GET /echo HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", {400}),
    ("space_before_colon_content_length",
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length : 3\r\n\r\nabc", {400}),
    ("tab_before_colon", b"GET /echo HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n", {400}),
    ("paren_in_header_name", b"GET /echo HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n", {400}),
    ("ctl_in_header_name", b"GET /echo HTTP/1.1\r\n" + H + b"X\x01A: b\r\n\r\n", {400}),
    ("high_byte_in_header_name", b"GET /echo HTTP/1.1\r\n" + H + b"X\xe9A: b\r\n\r\n", {400}),
    ("empty_header_name", b"GET /echo HTTP/1.1\r\n" + H + b": b\r\n\r\n", {400}),
    ("nul_in_header_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    ("del_in_header_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", {400}),
    ("ctl_in_header_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x1bb\r\n\r\n", {400}),
    ("header_line_without_colon", b"GET /echo HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", {400}),
    ("http11_without_host", b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n", {400}),
    ("two_host_headers", b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    ("two_identical_host_headers", b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", {400}),
    ("host_with_userinfo", b"GET /echo HTTP/1.1\r\nHost: user@a\r\n\r\n", {400}),
    ("host_with_space", b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n", {400}),
    ("version_1_2", b"GET /echo HTTP/1.2\r\n" + H + b"\r\n", {505}),
    ("version_2_0", b"GET /echo HTTP/2.0\r\n" + H + b"\r\n", {505}),
    ("version_lowercase", b"GET /echo http/1.1\r\n" + H + b"\r\n", {400}),
    ("version_missing_http09", b"GET /echo\r\n\r\n", {400}),
    ("garbage_request_line", b"HELLO\r\n\r\n", {400}),
    ("binary_request_line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", {400}),
    ("double_space_in_request_line", b"GET  /echo HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("trailing_space_in_request_line", b"GET /echo HTTP/1.1 \r\n" + H + b"\r\n", {400}),
    ("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("method_not_a_token", b"G(T /echo HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("target_not_origin_form", b"GET echo HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("asterisk_form_with_get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", {400}),
]


def check_refused(b, o, raw, statuses):
    c = client(b.port)
    c.sock.sendall(raw)
    r = read_response(c)
    assert r.status in statuses, f"{raw!r} -> {r.status}, expected {statuses}"
    assert r.header("Connection", "").lower() == "close", r.headers
    assert is_closed(c), "connection left open after a refused request"
    # what the origin saw so far; a good request afterwards proves the
    # origin works, and that the refused one is not just in flight
    g = client(b.port)
    g.sock.sendall(b"GET /echo?probe HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(g).json()["target"] == "/echo?probe"
    assert [t for _, t, _ in o.requests] == ["/echo?probe"], \
        f"refused request reached the origin: {o.requests!r}"
    return r


@pytest.mark.parametrize("raw,statuses", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request_is_refused(bulwark, origin, raw, statuses):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    r = check_refused(b, o, raw, statuses)
    assert "error=http_request_error" in r.header("Proxy-Status", ""), r.headers


def test_refusal_on_a_kept_alive_connection_closes_it(bulwark, origin):
    """A good request, then a smuggling attempt on the same connection."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo?1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?1"
    c.sock.sendall(b"POST /echo?2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    r = read_response(c)
    assert r.status == 400
    assert is_closed(c)
    assert [t for _, t, _ in o.requests] == ["/echo?1"]


def test_smuggled_request_after_cl_te_is_never_forwarded(bulwark, origin):
    """The classic CL.TE desync: whatever follows must never become a request."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n"
                   b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 400
    assert is_closed(c)
    g = client(b.port)
    g.sock.sendall(b"GET /echo?probe HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(g).status == 200
    assert [t for _, t, _ in o.requests] == ["/echo?probe"]


def bad_chunk_origin(origin):
    """Records for each request whether its body arrived complete."""
    def handler(c, o):
        method, target, version, headers = read_request(c)
        try:
            body = b"".join(iter_body(c, headers))
            o.requests.append((method, target, ("complete", body)))
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (EOFError, ValueError, OSError):
            o.requests.append((method, target, ("aborted", None)))
    return origin(handler)


@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n0\r\n\r\n",              # size not hex
    b"5\r\nhelloXX0\r\n\r\n",                 # data not followed by CRLF
    b"-5\r\nhello\r\n0\r\n\r\n",              # negative size
    b"5 \r\nhello\r\n0\r\n\r\n",              # whitespace after the size
    b"5\r\nhello\r\n1\r\nx\r\nq\r\n\r\n",     # bad size in a later chunk
    b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",  # size over 64 bits
    b"5\rhello\r\n0\r\n\r\n",                 # bare CR ends the size line
    b"\r\nhello\r\n0\r\n\r\n",               # empty size
], ids=["not_hex", "no_crlf_after_data", "negative", "space_after_size", "later_chunk",
        "overflow", "bare_cr", "empty_size"])
def test_bad_chunked_body_is_refused(bulwark, origin, body):
    o = bad_chunk_origin(origin)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    r = read_response(c)
    assert r.status == 400, r
    assert is_closed(c)
    # the header may already be on its way (bodies stream), but the origin must
    # never receive a complete request made from a malformed body
    g = client(b.port)
    g.sock.sendall(b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(g).body == b"ok"
    completed = [(m, t) for m, t, (state, _) in o.requests if state == "complete"]
    assert completed == [("GET", "/probe")], o.requests
