"""Client identity and access: allow/deny (IPv4, IPv6), X-Forwarded-For from
trusted and untrusted peers, the PROXY protocol (v1, v2, untrusted, malformed,
truncated), conn_limit on connections and requests with its counters back to zero.

Untrusted and trusted peers on loopback: 127.0.0.1 vs 127.0.0.2 as the source
address, with trusted_proxies ["127.0.0.2/32"]."""
import json
import re
import socket
import struct
import threading

import pytest

from origins import Conn, free_port, read_request, read_response, wait_for, is_closed


def connect(port, source="127.0.0.1", host="127.0.0.1", timeout=10.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((host, port))
    return Conn(s)


def get(port, path, source="127.0.0.1", host="127.0.0.1", headers=(), prefix=b""):
    c = connect(port, source, host)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    c.sock.sendall(prefix + f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"
                   .encode())
    r = read_response(c)
    c.sock.close()
    return r


def admin_get(aport, path):
    c = connect(aport)
    c.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
    r = read_response(c)
    c.sock.close()
    assert r.status == 200, r
    return r.body.decode()


def metric(aport, name):
    text = admin_get(aport, "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def denied(aport, reason):
    return metric(aport, f'bulwark_denied_total{{reason="{reason}"}}')


def access_client(b, marker):
    """The client IP the access log gives the request whose target holds marker."""
    m = b.wait_log(r"(?m)^(\S+) .*" + re.escape(marker), what="access")
    return m.group(1)


def config(origin, extra_top="", routes=None, listen=None, admin_port=None):
    listen = listen or '["127.0.0.1:{port}"]'
    routes = routes or "routes:\n  - upstream: app\n"
    admin = f'admin: "127.0.0.1:{admin_port}"\n' if admin_port else ""
    return (f"workers: 2\nlisten: {listen}\n{admin}{extra_top}"
            f'upstreams:\n  app:\n    servers: ["{origin.addr}"]\n{routes}')


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_allow_and_deny_ipv4_top_level_then_route(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(config(o, extra_top='deny: ["127.0.0.3/32"]\n', admin_port=aport,
                       routes="routes:\n  - upstream: app\n"
                              "  - upstream: app\n    match: {path: /private/}\n"
                              '    allow: ["127.0.0.1/32", "::1"]\n'))
    assert get(b.port, "/echo?a1").status == 200
    assert get(b.port, "/private/echo?a2").status == 200
    assert get(b.port, "/echo?a3", source="127.0.0.2").status == 200

    r = get(b.port, "/private/echo?a4", source="127.0.0.2")
    assert r.status == 403
    ps = r.header("Proxy-Status")
    assert "error=http_request_denied" in ps
    assert 'details="client 127.0.0.2 is not in allow (*/private/)"' in ps
    b.wait_log(r"denied request from 127\.0\.0\.2 with 403: client 127\.0\.0\.2 is not in allow")

    r = get(b.port, "/private/echo?a5", source="127.0.0.3")
    assert r.status == 403  # the top level's deny comes first
    assert "matches deny 127.0.0.3/32 (top level)" in r.header("Proxy-Status")
    b.wait_log(r"denied request from 127\.0\.0\.3 with 403: .*deny 127\.0\.0\.3/32.*reason=deny")
    assert get(b.port, "/nothing-routes-here", source="127.0.0.3").status == 403
    assert access_client(b, "a5") == "127.0.0.3"
    assert len(o.requests) == 3
    assert denied(aport, "deny") == 2
    assert denied(aport, "allow") == 1


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_allow_and_deny_ipv6(bulwark, origin):
    o = origin()
    port = free_port()
    b = bulwark(config(o, listen=f'["127.0.0.1:{port}", "[::1]:{port}"]',
                       routes="routes:\n  - upstream: app\n    match: {path: /v6/}\n"
                              '    allow: ["::1/128"]\n'
                              "  - upstream: app\n    match: {path: /not6/}\n"
                              '    deny: ["::1"]\n'), port=port)
    assert get(port, "/v6/echo", source="::1", host="::1").status == 200
    assert get(port, "/v6/echo").status == 403
    assert get(port, "/not6/echo", source="::1", host="::1").status == 403
    assert get(port, "/not6/echo").status == 200


def test_x_forwarded_for_only_from_trusted_peers(bulwark, origin):
    o = origin()
    b = bulwark(config(o, extra_top='trusted_proxies: ["127.0.0.2/32"]\n'
                                    'deny: ["203.0.113.0/24"]\n'))
    xff = [("X-Forwarded-For", "203.0.113.9")]
    # untrusted peer: its X-Forwarded-For names nobody (not denied, not logged)...
    r = get(b.port, "/echo?x1", headers=xff)
    assert r.status == 200
    assert access_client(b, "x1") == "127.0.0.1"
    # ... but it is still forwarded, with the peer appended
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"] == \
        ["203.0.113.9, 127.0.0.1"]

    # trusted peer: the rightmost untrusted address is the client, for deny...
    r = get(b.port, "/echo?x2", source="127.0.0.2", headers=xff)
    assert r.status == 403
    assert "client 203.0.113.9 matches deny 203.0.113.0/24" in r.header("Proxy-Status")
    assert access_client(b, "x2") == "203.0.113.9"
    b.wait_log(r"denied request from 203\.0\.113\.9 with 403")

    # ... and for the logs
    r = get(b.port, "/echo?x3", source="127.0.0.2",
            headers=[("X-Forwarded-For", "198.51.100.7, 127.0.0.2")])
    assert r.status == 200
    assert access_client(b, "x3") == "198.51.100.7"
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"] == \
        ["198.51.100.7, 127.0.0.2, 127.0.0.2"]

    # malformed from a trusted peer: never guessed, the peer is the client
    r = get(b.port, "/echo?x4", source="127.0.0.2",
            headers=[("X-Forwarded-For", "203.0.113.9:443")])
    assert r.status == 200
    assert access_client(b, "x4") == "127.0.0.2"


def pp_config(o, pport, aport):
    return config(o, admin_port=aport,
                  listen=f'["127.0.0.1:{{port}}", {{address: "127.0.0.1:{pport}", '
                         "proxy_protocol: true}]",
                  extra_top='trusted_proxies: ["127.0.0.2/32"]\n'
                            'deny: ["192.0.2.66/32"]\n'
                            "client: {header_timeout: 1s}\n")


def v2_header(src, dst, sport, dport):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    else:
        addrs = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
        fam = 0x11
    block = addrs + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


def test_proxy_protocol_from_trusted_peer_names_the_client(bulwark, origin):
    o = origin()
    pport, aport = free_port(), free_port()
    b = bulwark(pp_config(o, pport, aport))
    r = get(pport, "/echo?p1", source="127.0.0.2",
            prefix=b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\n")
    assert r.status == 200
    assert access_client(b, "p1") == "198.51.100.7"
    # the PROXY header's client is the connection's address: X-Forwarded-For gets it
    assert [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"] == \
        ["198.51.100.7"]

    r = get(pport, "/echo?p2", source="127.0.0.2",
            prefix=v2_header("2001:db8::7", "2001:db8::1", 40000, 80))
    assert r.status == 200
    assert access_client(b, "p2") == "2001:db8::7"

    r = get(pport, "/echo?p3", source="127.0.0.2",
            prefix=v2_header("192.0.2.66", "127.0.0.1", 40000, 80))
    assert r.status == 403  # deny sees the PROXY header's client
    # LOCAL (the balancer's own health check): the connection keeps its address
    local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0, 0])
    r = get(pport, "/echo?p4", source="127.0.0.2", prefix=local)
    assert r.status == 200
    assert access_client(b, "p4") == "127.0.0.2"
    assert denied(aport, "proxy_protocol_rejected") == 0


def refused_without_answer(c):
    assert is_closed(c, timeout=10.0), f"connection not closed, got {c.buf!r}"
    assert c.buf == b""


def test_proxy_protocol_refused_from_untrusted_malformed_or_truncated(bulwark, origin):
    o = origin()
    pport, aport = free_port(), free_port()
    b = bulwark(pp_config(o, pport, aport))
    good = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n"

    c = connect(pport, source="127.0.0.1")  # not a trusted proxy
    c.sock.sendall(good)
    refused_without_answer(c)
    b.wait_log(r"PROXY protocol listener: the peer is not in trusted_proxies; peer=127\.0\.0\.1 "
               r"cause=proxy_protocol_rejected")

    bad = [b"PROXY TCP4 198.51.100.7 127.0.0.1 40000\r\n",       # a field missing
           b"PROXY TCP4 198.51.100.7  127.0.0.1 40000 80\r\n",   # two spaces
           b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n",             # no header at all
           b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # v2, version 3
           b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n"]             # longer than 107 bytes
    for raw in bad:
        c = connect(pport, source="127.0.0.2")
        c.sock.sendall(raw)
        refused_without_answer(c)

    # truncated, then the sender closes: refused
    c = connect(pport, source="127.0.0.2")
    c.sock.sendall(good[:20])
    c.sock.shutdown(socket.SHUT_WR)
    refused_without_answer(c)
    b.wait_log(r"closed before its PROXY header was complete")
    # truncated and stalled: refused at header_timeout (1 s)
    c = connect(pport, source="127.0.0.2")
    c.sock.sendall(v2_header("198.51.100.7", "127.0.0.1", 1, 2)[:20])
    refused_without_answer(c)
    b.wait_log(r"no complete PROXY header within header_timeout")

    assert denied(aport, "proxy_protocol_rejected") == 1 + len(bad) + 2
    assert o.requests == []
    # the plain listener is unaffected
    assert get(b.port, "/echo").status == 200


def test_conn_limit_connections_answers_429_then_counts_return_to_zero(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(config(o, admin_port=aport, extra_top="conn_limit: {connections: 2}\n"))
    held = []
    for _ in range(2):
        c = connect(b.port)
        c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(c).status == 200  # kept alive: still counted
        held.append(c)
    assert metric(aport, "bulwark_conn_limit_connections") == 2

    c = connect(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 429
    assert r.header("Retry-After") == "1"
    assert "error=http_request_denied" in r.header("Proxy-Status")
    assert is_closed(c)
    # another client address has its own count
    assert get(b.port, "/echo", source="127.0.0.2").status == 200
    b.wait_log(r"client connection refused with 429: 127\.0\.0\.1 has conn_limit\.connections "
               r"\(2\) open")
    assert denied(aport, "conn_limit_connections") == 1

    for c in held:
        c.sock.close()
    wait_for(lambda: metric(aport, "bulwark_conn_limit_connections") == 0,
             "conn_limit connections back to 0")
    wait_for(lambda: metric(aport, "bulwark_conn_limit_keys") == 0, "conn_limit keys back to 0")
    assert get(b.port, "/echo").status == 200
    status = json.loads(admin_get(aport, "/status"))
    assert status["limits"]["denied"]["conn_limit_connections"] == 1


def held_origin(origin):
    """An origin that holds each request until release is set."""
    release = threading.Event()

    def handler(c, o):
        while True:
            method, target, version, headers = read_request(c)
            with o.lock:
                o.requests.append((method, target, headers))
            release.wait(30)
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return origin(handler), release


def start_get(port, path):
    c = connect(port)
    c.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return c


def test_conn_limit_requests_top_level_and_route(bulwark, origin):
    o, release = held_origin(origin)
    aport = free_port()
    b = bulwark(config(o, admin_port=aport, extra_top="conn_limit: {requests: 2}\n",
                       routes="routes:\n  - upstream: app\n"
                              "  - upstream: app\n    match: {path: /one/}\n"
                              "    conn_limit: {requests: 1}\n"))
    first = start_get(b.port, "/one/a")
    wait_for(lambda: len(o.requests) == 1, "the first request at the origin")
    r = get(b.port, "/one/b")
    assert r.status == 429  # the route allows one at a time
    assert r.header("Retry-After") == "1"
    assert "conn_limit.requests (1) in progress (*/one/)" in r.header("Proxy-Status")

    second = start_get(b.port, "/two")
    wait_for(lambda: len(o.requests) == 2, "the second request at the origin")
    r = get(b.port, "/three")
    assert r.status == 429  # the top level allows two
    assert "error=http_request_denied" in r.header("Proxy-Status")
    # the first holds a unit at the top level and one on its route
    assert metric(aport, "bulwark_conn_limit_requests") == 3
    b.wait_log(r"denied request from 127\.0\.0\.1 with 429: .*reason=conn_limit_requests")

    release.set()
    assert read_response(first).status == 200
    assert read_response(second).status == 200
    assert denied(aport, "conn_limit_requests") == 2
    wait_for(lambda: metric(aport, "bulwark_conn_limit_requests") == 0,
             "conn_limit requests back to 0")
    wait_for(lambda: metric(aport, "bulwark_conn_limit_keys") == 0, "conn_limit keys back to 0")
    assert get(b.port, "/one/again").status == 200
