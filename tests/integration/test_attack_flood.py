"""Attacks on the flood protection from outside: the real binary, raw sockets,
client addresses 127.0.0.1-127.0.0.9 on loopback.

Each test is either a finding (it failed before its fix) or an attack that held,
kept so it keeps holding: X-Forwarded-For tricks, PROXY header edge cases,
conn_limit counters that must return to zero, delayed requests, heavy hitters."""
import json
import re
import socket
import struct
import threading
import time

import pytest

from origins import Conn, free_port, read_response, wait_for, is_closed, read_request, iter_body


def connect(port, source="127.0.0.1", timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(s)


def req(path, headers=(), close=True, method="GET", body=b""):
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body:
        extra += f"Content-Length: {len(body)}\r\n"
    conn = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}{conn}\r\n".encode("latin-1") + body


def get(port, path, source="127.0.0.1", headers=(), prefix=b""):
    c = connect(port, source)
    c.sock.sendall(prefix + req(path, headers))
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
    return int(m.group(1)) if m else None


def gauges_back_to_zero(aport):
    names = ("bulwark_conn_limit_keys", "bulwark_conn_limit_connections",
             "bulwark_conn_limit_requests", "bulwark_client_header_connections")
    wait_for(lambda: all(metric(aport, n) == 0 for n in names),
             "conn_limit and header gauges back to 0",
             timeout=30.0)


def config(origin, aport, extra_top="", routes=None, listen=None, workers=2):
    listen = listen or '["127.0.0.1:{port}"]'
    routes = routes or "routes:\n  - upstream: app\n"
    return (f'workers: {workers}\nlisten: {listen}\nadmin: "127.0.0.1:{aport}"\n{extra_top}'
            f'upstreams:\n  app:\n    servers: ["{origin.addr}"]\n{routes}')


def access_client(b, marker):
    m = b.wait_log(r"(?m)^(\S+) .*" + re.escape(marker) + r"\b", what="access")
    return m.group(1)


# ---- X-Forwarded-For ----

XFF_CASES = [
    # (marker, [XFF field values], expected client)
    ("x1", ["203.0.113.9"], "203.0.113.9"),
    ("x2", ["203.0.113.9, 127.0.0.2"], "203.0.113.9"),
    ("x3", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
    ("x4", ["203.0.113.9,198.51.100.1"], "198.51.100.1"),
    ("x5", ["203.0.113.9:4711"], "127.0.0.2"),
    ("x6", ["[2001:db8::1]"], "127.0.0.2"),
    ("x7", ["[2001:db8::1]:80"], "127.0.0.2"),
    ("x8", ["unknown"], "127.0.0.2"),
    ("x9", ["203.0.113.9,"], "127.0.0.2"),
    ("x10", [",203.0.113.9"], "203.0.113.9"),  # rightmost untrusted is well-formed
    ("x11", ["203.0.113.9, garbage"], "127.0.0.2"),
    ("x12", ["2001:db8::7"], "2001:db8::7"),
    ("x13", ["::ffff:203.0.113.9"], "203.0.113.9"),
    ("x14", ["fe80::1%eth0"], "127.0.0.2"),
    ("x15", ["203.0.113.009"], "127.0.0.2"),
    ("x16", ["0x7f.1"], "127.0.0.2"),
    ("x17", ["127.0.0.2, 127.0.0.2"], "127.0.0.2"),
    ("x18", ["\t203.0.113.9\t"], "203.0.113.9"),
    ("x19", ["203.0.113.9 198.51.100.1"], "127.0.0.2"),
    ("x20", [", ".join(f"10.{i // 256}.{i % 256}.1" for i in range(1000))], "10.3.231.1"),
    ("x21", ["1.2.3.4, ::ffff:127.0.0.2"], "1.2.3.4"),  # a mapped trusted address is trusted
]


def test_x_forwarded_for_tricks_from_a_trusted_peer(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='trusted_proxies: ["127.0.0.2/32"]\n'))
    for marker, values, _ in XFF_CASES:
        r = get(b.port, f"/echo?{marker}", source="127.0.0.2",
                headers=[("X-Forwarded-For", v) for v in values])
        assert r.status == 200, (marker, r)
    for marker, _, want in XFF_CASES:
        assert access_client(b, marker) == want, marker


def test_x_forwarded_for_from_an_untrusted_peer_cannot_dodge_deny(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='trusted_proxies: ["127.0.0.2/32"]\n'
                                           'deny: ["127.0.0.3/32"]\n'))
    for xff in ("127.0.0.1", "127.0.0.2", "127.0.0.1, 127.0.0.2", "::ffff:127.0.0.1"):
        r = get(b.port, "/echo", source="127.0.0.3", headers=[("X-Forwarded-For", xff)])
        assert r.status == 403, xff
    # through the trusted proxy the denied client is still denied, whatever it prepends
    r = get(b.port, "/echo", source="127.0.0.2",
            headers=[("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "127.0.0.3")])
    assert r.status == 403
    r = get(b.port, "/echo", source="127.0.0.2",
            headers=[("X-Forwarded-For", "::ffff:127.0.0.3")])
    assert r.status == 403
    assert len(o.requests) == 0


# ---- heavy hitters count every refusal ----

def test_denied_clients_show_in_the_heavy_hitters(bulwark, origin):
    """README: the refused summary counts 429 and 403. A client refused by deny (or
    by conn_limit.requests) must be named there, or a deny flood is invisible."""
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='deny: ["127.0.0.3/32"]\n'))
    for _ in range(5):
        assert get(b.port, "/echo", source="127.0.0.3").status == 403
    text = admin_get(aport, "/metrics")
    assert re.search(r'^bulwark_top_client_rejected\{client="127\.0\.0\.3"\} [1-9]', text,
                     re.M), text
    assert re.search(r'^bulwark_top_client_requests\{client="127\.0\.0\.3"\} [1-9]', text,
                     re.M), text
