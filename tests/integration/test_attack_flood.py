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


# ---- PROXY protocol edge cases ----

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd=0x21, fam=0x11, src="203.0.113.7", dst="127.0.0.1", sport=4000, dport=80,
       tlvs=b"", block=None):
    if block is None:
        block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    block += tlvs
    return V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(block)) + block


def proxy_config(o, aport, extra=""):
    return config(o, aport, listen='[{address: "127.0.0.1:{port}", proxy_protocol: true}]',
                  extra_top='trusted_proxies: ["127.0.0.2/32"]\n' + extra)


def test_proxy_header_edge_cases(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(proxy_config(o, aport, 'conn_limit: {connections: 5, requests: 5}\n'))
    # v2 with TLVs (ALPN, authority, NOOP padding) and the request in the same packet
    tlvs = b"\x01\x00\x02h2" + b"\x02\x00\x09localhost" + b"\x04\x00\x10" + b"\x00" * 16
    r = get(b.port, "/echo?p1", source="127.0.0.2", prefix=v2(tlvs=tlvs))
    assert r.status == 200
    assert access_client(b, "p1") == "203.0.113.7"
    # v1 dripped one byte at a time, then the request
    c = connect(b.port, "127.0.0.2")
    for ch in b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n":
        c.sock.sendall(bytes([ch]))
        time.sleep(0.002)
    c.sock.sendall(req("/echo?p2"))
    assert read_response(c).status == 200
    c.sock.close()
    assert access_client(b, "p2") == "198.51.100.4"
    # LOCAL over AF_UNIX (216-byte address block): the peer keeps its own address
    r = get(b.port, "/echo?p3", source="127.0.0.2",
            prefix=v2(cmd=0x20, fam=0x31, block=b"\x00" * 216))
    assert r.status == 200
    assert access_client(b, "p3") == "127.0.0.2"
    # the longest header we accept (2048 bytes of address block and TLVs)
    r = get(b.port, "/echo?p4", source="127.0.0.2",
            prefix=v2(tlvs=b"\x04" + struct.pack("!H", 2048 - 12 - 3) + b"\x00" * (2048 - 15)))
    assert r.status == 200
    # one byte more is refused without an answer
    c = connect(b.port, "127.0.0.2")
    c.sock.sendall(v2(tlvs=b"\x04" + struct.pack("!H", 2049 - 15) + b"\x00" * (2049 - 15)))
    assert is_closed(c)
    c.sock.close()
    # PROXY over AF_UNIX with the PROXY command: refused
    c = connect(b.port, "127.0.0.2")
    c.sock.sendall(v2(cmd=0x21, fam=0x31, block=b"\x00" * 216) + req("/echo?p5"))
    assert is_closed(c)
    c.sock.close()
    # two PROXY headers: the second is HTTP garbage, 400
    r = get(b.port, "/echo?p6", source="127.0.0.2",
            prefix=b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n"
                   b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\n")
    assert r.status == 400
    assert len(o.requests) == 4
    gauges_back_to_zero(aport)


def test_proxy_header_on_a_plain_listener_is_a_bad_request(bulwark, origin):
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='trusted_proxies: ["127.0.0.2/32"]\n'))
    r = get(b.port, "/echo", source="127.0.0.2",
            prefix=b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n")
    assert r.status == 400
    c = connect(b.port, "127.0.0.2")
    c.sock.sendall(v2() + req("/echo"))
    assert read_response(c).status == 400
    c.sock.close()
    assert len(o.requests) == 0


# ---- conn_limit counters return to zero ----

class Gate:
    """An origin handler that holds each request until released."""

    def __init__(self):
        self.release = threading.Event()
        self.arrived = 0
        self.lock = threading.Lock()

    def __call__(self, c, o):
        while True:
            method, target, version, headers = read_request(c)
            for _ in iter_body(c, headers):
                pass
            with self.lock:
                self.arrived += 1
            if not target.startswith("/fast"):
                self.release.wait(30)
            body = b"ok"
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body)


def rst_close(c):
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()


def test_conn_limit_counters_return_to_zero_after_abuse(bulwark, origin):
    gate = Gate()
    o = origin(gate)
    aport = free_port()
    b = bulwark(config(o, aport, extra_top="conn_limit: {connections: 3, requests: 2}\n",
                       routes="routes:\n  - upstream: app\n    conn_limit: {requests: 1}\n"))
    # a reset in the middle of a request held by the origin
    c = connect(b.port)
    c.sock.sendall(req("/slow1", close=False))
    wait_for(lambda: gate.arrived >= 1, "the request at the origin")
    assert metric(aport, "bulwark_conn_limit_requests") == 2  # top level and route
    rst_close(c)
    wait_for(lambda: metric(aport, "bulwark_conn_limit_requests") == 0, "requests released")
    # pipelined: the second waits its turn, the third is over the connection count
    c = connect(b.port)
    c.sock.sendall(req("/fast1", close=False) + req("/fast2", close=False) + req("/fast3"))
    for _ in range(3):
        assert read_response(c).status == 200
    c.sock.close()
    # a reset with a partial pipelined head and a body half sent
    c = connect(b.port)
    c.sock.sendall(req("/fast4", close=False) + b"POST /x HTTP/1.1\r\nHost: t\r\n"
                   b"Content-Length: 100\r\n\r\n" + b"a" * 10)
    assert read_response(c).status == 200
    rst_close(c)
    # (the reset reaches the other worker asynchronously: until it does, POST /x is
    # in progress and a new request is one too many)
    wait_for(lambda: metric(aport, "bulwark_conn_limit_requests") == 0, "requests released")
    # a reload in the middle of a held request that turns conn_limit off
    c = connect(b.port)
    c.sock.sendall(req("/slow2"))
    wait_for(lambda: gate.arrived >= 6, "the request at the origin")
    cfg = config(o, aport)
    assert b.reload(cfg)
    gate.release.set()
    assert read_response(c).status == 200
    c.sock.close()
    gauges_back_to_zero(aport)


def ws_open(port, path="/ws/x"):
    c = connect(port)
    c.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    r = read_response(c)
    assert r.status == 101, r
    return c


def test_conn_limit_counters_return_to_zero_after_websocket_tunnels(bulwark, origin):
    from origins import ws_client_frame, ws_read_server_frame
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top="conn_limit: {connections: 4, requests: 2}\n"))
    a = ws_open(b.port)
    a.sock.sendall(ws_client_frame(1, b"hi"))
    assert ws_read_server_frame(a)[2] == b"hi"
    bb = ws_open(b.port)
    assert metric(aport, "bulwark_conn_limit_requests") == 2
    # a third tunnel is one request too many
    c = connect(b.port)
    c.sock.sendall(req("/echo"))
    assert read_response(c).status == 429
    c.sock.close()
    rst_close(a)              # reset in the middle of the tunnel
    bb.sock.shutdown(socket.SHUT_WR)  # half-close: the origin closes in turn
    assert is_closed(bb, timeout=20)
    bb.sock.close()
    gauges_back_to_zero(aport)


def test_sigterm_drains_delayed_requests(bulwark, origin):
    """Requests held by nodelay: false when SIGTERM comes are served (Connection:
    close), not dropped, and the process exits 0 once they are."""
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='rate_limit: {rate: "2/s", burst: 6}\n'
                                           "shutdown_timeout: 20s\n"))
    assert get(b.port, "/echo?d0").status == 200  # the burst's first: not held
    conns = []
    for i in range(1, 5):
        c = connect(b.port)
        c.sock.sendall(req(f"/echo?d{i}", close=False))
        conns.append(c)

    def delayed():
        m = re.search(r"^bulwark_rate_limit_delayed_total\{[^}]*\} (\d+)$",
                      admin_get(aport, "/metrics"), re.M)
        return m and int(m.group(1)) == 4
    wait_for(delayed, "4 requests held")
    b.proc.send_signal(15)
    for c in conns:
        r = read_response(c)
        assert r.status == 200, r
        assert r.header("Connection", "").lower() == "close"
        assert is_closed(c)
        c.sock.close()
    assert b.proc.wait(30) == 0
    assert len(o.requests) == 5


def test_many_delayed_clients_leave_no_state(bulwark, origin):
    """200 connections each with a request held by nodelay: false and closed
    (reset or FIN) while held: every one ends, no descriptor or counter stays."""
    import os
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, extra_top='rate_limit: {rate: "2/s", burst: 500, key: route}\n'
                                           "conn_limit: {connections: 300, requests: 300}\n"))
    assert get(b.port, "/echo").status == 200
    fds_before = len(os.listdir(f"/proc/{b.pid}/fd"))
    conns = []
    for i in range(200):
        c = connect(b.port, source=f"127.0.0.{2 + i % 8}")
        c.sock.sendall(req(f"/echo?h{i}", close=False))
        conns.append(c)
    wait_for(lambda: metric(aport, "bulwark_conn_limit_requests") == 200, "200 held requests")
    for i, c in enumerate(conns):
        if i % 2:
            rst_close(c)
        else:
            c.sock.close()
    gauges_back_to_zero(aport)
    wait_for(lambda: metric(aport, "bulwark_client_connections") == 0, "connections closed")
    wait_for(lambda: len(os.listdir(f"/proc/{b.pid}/fd")) <= fds_before, "descriptors back")
    assert len(o.requests) <= 3


def test_a_duplicated_key_header_does_not_escape_the_rate_limit(bulwark, origin):
    """key: header:X-Api-Key. A client with one real key sends a fresh value first and
    its real key last (the one many applications read): each request had a new key and
    was never limited. A header sent twice keys the request on its client address."""
    o = origin()
    aport = free_port()
    b = bulwark(config(o, aport, routes="routes:\n  - upstream: app\n"
                       '    rate_limit: {rate: "1/m", burst: 1, nodelay: true, '
                       'key: "header:X-Api-Key"}\n'))
    statuses = [get(b.port, "/echo", source="127.0.0.5",
                    headers=[("X-Api-Key", f"fresh{i}"), ("X-Api-Key", "real")]).status
                for i in range(4)]
    assert statuses == [200, 200, 429, 429], statuses
    # one header: its value is the key, whatever the address
    assert get(b.port, "/echo", source="127.0.0.5",
               headers=[("X-Api-Key", "other")]).status == 200
