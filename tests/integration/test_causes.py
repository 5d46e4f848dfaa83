"""The cause table of DESIGN.md, one test per row: what the client sees (status and
RFC 9209 Proxy-Status), what the access log says (error=TYPE) and the error-log
line that names the server. Each upstream misbehaves on purpose (origins/faulty.py)."""
import re
import time

import pytest

from conftest import simple_config
from origins import free_port
from origins.faulty import (Blackhole, fetch, send_then_close, send_then_hang,
                            reset_after_request, unroutable_address)

# One attempt per request, short timeouts: each row shows its own cause.
FAST = "    retries: 0\n    connect_timeout: 300ms\n    read_timeout: 300ms\n"


def start(bulwark, server, extra=""):
    return bulwark(simple_config([server], extra_upstream=FAST + extra))


def assert_generated(b, resp, status, error, server):
    """A response of ours for this cause, logged in both logs with its request id."""
    assert resp.status == status, resp.head
    # RFC 9209 next-hop names the upstream group: never an internal address by default
    assert resp.get("proxy-status") == f'bulwark; error={error}; next-hop="app"'
    assert server.encode() not in resp.data
    rid = resp.get("x-request-id")
    assert rid and re.fullmatch(r"[0-9a-f]+", rid), resp.head
    assert error.encode() in resp.data and rid.encode() in resp.data
    assert resp.complete
    b.wait_log(rf'(?m)" {status} \d+ .* upstream={re.escape(server)} upstream_status=- .* '
               rf'error={error} rid={rid}$', what="access")
    b.wait_log(rf"{re.escape(server)} \(upstream \"app\"\).*cause={error}\b.*rid={rid}")
    return rid


def assert_aborted(b, resp, error, server, body_bytes=r"\d+"):
    """The response started (200 relayed), then the proxy cut the client off."""
    assert resp.status == 200, resp.head
    assert resp.get("proxy-status") is None
    assert not resp.complete, "the client must not see a complete body"
    assert resp.eof
    b.wait_log(rf'(?m)" 200 {body_bytes} .* upstream={re.escape(server)} upstream_status=200 .* '
               rf'error={error} rid=\w+$', what="access")
    b.wait_log(rf"{re.escape(server)} \(upstream \"app\"\).*cause={error}\b")


def test_nothing_listening_is_502_connection_refused(bulwark):
    server = f"127.0.0.1:{free_port()}"
    b = start(bulwark, server)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "connection_refused", server)
    assert "Connection refused" in b.error_log()


def test_handshake_that_never_completes_is_504_connection_timeout(bulwark):
    hole = Blackhole()
    try:
        b = start(bulwark, hole.addr)
        resp = fetch(b.port, "/x")
        assert_generated(b, resp, 504, "connection_timeout", hole.addr)
        assert 0.25 <= resp.elapsed < 3.0, f"connect_timeout 300ms, answered after {resp.elapsed:.2f}s"
    finally:
        hole.close()


def test_reset_before_response_is_502_connection_terminated(bulwark, origin):
    o = origin(reset_after_request())
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "connection_terminated", o.addr)
    assert len(o.requests) == 1


def test_close_before_full_header_is_502_connection_terminated(bulwark, origin):
    o = origin(send_then_close(b"HTTP/1.1 200 OK\r\nContent-"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "connection_terminated", o.addr)


def test_no_response_header_within_read_timeout_is_504_http_response_timeout(bulwark, origin):
    closed_after = []
    o = origin(send_then_hang(b"", closed_after))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 504, "http_response_timeout", o.addr)
    assert 0.25 <= resp.elapsed < 3.0, f"read_timeout 300ms, answered after {resp.elapsed:.2f}s"
    deadline = time.monotonic() + 20
    while not closed_after and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed_after and closed_after[0] is not None, "the upstream connection must be closed"


def test_garbage_status_line_is_502_http_protocol_error(bulwark, origin):
    o = origin(send_then_hang(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "http_protocol_error", o.addr)


def test_content_length_with_transfer_encoding_is_502_http_protocol_error(bulwark, origin):
    o = origin(send_then_hang(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "http_protocol_error", o.addr)
    assert b"hello" not in resp.body


def test_oversized_response_header_is_502_header_section_size(bulwark, origin):
    # 20 KiB of header against the default 16 KiB limit.
    o = origin(send_then_hang(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 +
                              b"\r\nContent-Length: 0\r\n\r\n"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "http_response_header_section_size", o.addr)


def test_response_header_larger_than_the_buffer_is_502_header_section_size(bulwark, origin):
    # The limit raised to its maximum (the 64 KiB I/O buffer) and a 100 KiB header:
    # the buffer fills before the parser can say the section is too large.
    o = origin(send_then_hang(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100000 +
                              b"\r\nContent-Length: 0\r\n\r\n"))
    b = bulwark(simple_config([o.addr], extra_upstream=FAST,
                              extra_top="client:\n  max_header_size: 64k\n"))
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "http_response_header_section_size", o.addr)


def test_stall_mid_body_aborts_the_client_with_connection_read_timeout(bulwark, origin):
    o = origin(send_then_hang(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert resp.get("content-length") == "1000"
    assert resp.data == b"x" * 100
    assert 0.25 <= resp.elapsed < 3.0, f"read_timeout 300ms, cut after {resp.elapsed:.2f}s"
    assert_aborted(b, resp, "connection_read_timeout", o.addr, 100)


def test_body_shorter_than_declared_aborts_the_client_with_http_response_incomplete(
        bulwark, origin):
    o = origin(send_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert resp.get("content-length") == "1000"
    assert resp.data == b"x" * 100
    assert resp.elapsed < 2.0, "the close ends it, not a timeout"
    assert_aborted(b, resp, "http_response_incomplete", o.addr, 100)


def test_broken_chunked_coding_aborts_the_client(bulwark, origin):
    o = origin(send_then_hang(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\nZZ-not-hex\r\nmore\r\n0\r\n\r\n"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert resp.elapsed < 2.0, "the broken coding ends it, not a timeout"
    assert resp.eof and not resp.complete
    assert b"0\r\n\r\n" not in resp.body, "no terminating chunk after broken coding"
    assert b"more" not in resp.body
    if resp.status is None:
        # The bad chunk-size line came in the same read as the header: the proxy may
        # abort before its copy of the header left. Still an abort, still logged.
        assert resp.head == b""
        b.wait_log(rf'(?m)" 200 0 .* upstream={re.escape(o.addr)} upstream_status=200 .* '
                   rf'error=http_response_incomplete rid=\w+$', what="access")
        b.wait_log(rf"{re.escape(o.addr)} \(upstream \"app\"\).*cause=http_response_incomplete")
        return
    assert resp.get("transfer-encoding") == "chunked"
    # Bytes decoded before the bad chunk-size line may or may not have been relayed.
    assert resp.data in (b"", b"hello")
    assert_aborted(b, resp, "http_response_incomplete", o.addr)


def test_chunked_response_cut_before_last_chunk_never_shows_a_last_chunk(bulwark, origin):
    o = origin(send_then_close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n6\r\n world\r\n"))
    b = start(bulwark, o.addr)
    resp = fetch(b.port, "/x")
    assert resp.get("transfer-encoding") == "chunked"
    assert resp.data == b"hello world"
    assert not resp.body.endswith(b"0\r\n\r\n") and b"\r\n0\r\n" not in resp.body, resp.body
    assert_aborted(b, resp, "http_response_incomplete", o.addr, 11)


def test_unroutable_address_is_502_destination_ip_unroutable(bulwark):
    server, why = unroutable_address()
    if server is None:
        pytest.skip("no candidate address gives a routing error on this host "
                    f"(every one connects or times out here): {why}")
    b = start(bulwark, server)
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "destination_ip_unroutable", server)
    assert resp.elapsed < 2.0


def test_no_route_is_404_destination_not_found(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], routes="routes:\n  - match: { path: /api/ }\n"
                                                "    upstream: app\n"))
    resp = fetch(b.port, "/other")
    assert resp.status == 404
    assert resp.get("proxy-status") == "bulwark; error=destination_not_found"
    rid = resp.get("x-request-id")
    assert rid and b"destination_not_found" in resp.data
    b.wait_log(rf'(?m)"GET /other HTTP/1.1" 404 \d+ .* upstream=- .* attempts=0 '
               rf'error=destination_not_found rid={rid}$', what="access")
    assert o.requests == []
    assert fetch(b.port, "/api/x").status == 200


def test_dns_name_that_does_not_resolve_is_502_dns_error(bulwark):
    # The loader resolves names at load; one that does not resolve is a warning (with
    # its position) and every request to that server is answered 502 dns_error.
    server = "no-such-host.invalid:9000"
    b = start(bulwark, server)
    # printed on stderr before the logs open; simple_config puts servers on line 5
    assert re.search(rf'^warning: {re.escape(b.config_path)}:5:15: host "no-such-host\.invalid" '
                     r"does not resolve", b.output(), re.M), b.output()
    resp = fetch(b.port, "/x")
    assert_generated(b, resp, 502, "dns_error", server)
    assert resp.elapsed < 2.0
