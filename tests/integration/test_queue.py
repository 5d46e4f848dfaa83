"""max_conns, the group queue (max_pending, queue_timeout) and what overflow gets:
a backend with a concurrency cap never sees more than max_conns exchanges, requests
beyond wait their turn, and the rest get 503 + Retry-After + connection_limit_reached
at once; nothing hangs."""
import re
import threading
import time

from conftest import simple_config
from origins import free_port, read_request, iter_body
from origins.faulty import fetch, in_threads


def fetch_all(port, paths, timeout=60):
    """Fetch every path at once, one connection each; the responses in order."""
    threads, results = in_threads(lambda p: fetch(port, p, timeout=timeout), [(p,) for p in paths])
    for t in threads:
        t.join(timeout + 10)
    out = [results.get(i) for i in range(len(paths))]
    errors = [r for r in out if not hasattr(r, "status")]
    assert not errors, errors[:3]
    return out


class Capped:
    """An origin handler that holds each request hold_s seconds and records the
    highest number of requests it had in progress at once."""

    def __init__(self, hold_s):
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.served = 0

    def __call__(self, c, o):
        c.sock.settimeout(30)
        while True:
            method, target, _v, headers = read_request(c)
            for _ in iter_body(c, headers):
                pass
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(self.hold_s)  # the slow backend under test
            with self.lock:
                self.active -= 1
                self.served += 1
            body = target.encode()
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def capped_config(addr, admin_port, max_conns, max_pending, queue_timeout):
    return simple_config(
        [addr],
        extra_upstream=(f"    max_conns: {max_conns}\n    max_pending: {max_pending}\n"
                        f"    queue_timeout: {queue_timeout}\n"),
        extra_top=f'admin: "127.0.0.1:{admin_port}"\n').replace("workers: 1", "workers: 2")


def test_backend_never_sees_more_than_max_conns(bulwark, origin):
    cap = Capped(hold_s=0.3)
    o = origin(cap)
    admin_port = free_port()
    b = bulwark(capped_config(o.addr, admin_port, 4, 20, "30s"))
    t0 = time.monotonic()
    results = fetch_all(b.port, [f"/r{i}" for i in range(64)])
    elapsed = time.monotonic() - t0
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 503]
    assert len(ok) + len(refused) == 64, [r.head[:60] for r in results]
    assert cap.peak <= 4, f"the backend saw {cap.peak} requests at once"
    # 4 in flight and up to 20 waiting: at least those are served, the rest refused
    assert len(ok) >= 24 and len(refused) >= 1, (len(ok), len(refused))
    for r in ok:
        assert r.data.startswith(b"/r")
    for r in refused:
        assert r.get("retry-after") == "30", r.head
        assert r.get("proxy-status").startswith(
            "bulwark; error=connection_limit_reached"), r.head
    # nothing hung: the served ones took their turn (24+ x 0.3 s over 4 slots)
    assert elapsed < 45, elapsed
    metrics = fetch(admin_port, "/metrics").data.decode()
    rejected = re.search(r'^bulwark_upstream_queue_total\{group="app",outcome="rejected"\} (\d+)$',
                         metrics, re.M)
    assert rejected and int(rejected.group(1)) == len(refused), metrics[-1500:]
    b.wait_log(r"every server has max_conns=4 requests in flight and max_pending=20 wait "
               r"already; answered 503 cause=connection_limit_reached")


def test_queued_request_gives_up_after_queue_timeout(bulwark, origin):
    cap = Capped(hold_s=3.0)
    o = origin(cap)
    admin_port = free_port()
    b = bulwark(capped_config(o.addr, admin_port, 1, 10, "500ms"))
    first = []
    t = threading.Thread(target=lambda: first.append(fetch(b.port, "/slow", timeout=30)))
    t.start()
    deadline = time.monotonic() + 10
    while cap.active == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cap.active == 1
    t0 = time.monotonic()
    late = fetch(b.port, "/late", timeout=30)
    waited = time.monotonic() - t0
    assert late.status == 503, late.head
    assert late.get("retry-after") == "1"
    assert "connection_limit_reached" in late.get("proxy-status")
    # it waited its queue_timeout (not 0, not the 3 s the slot stays busy)
    assert 0.4 <= waited < 2.5, waited
    t.join(30)
    assert first and first[0].status == 200
    assert cap.peak == 1
    b.wait_log(r"no connection slot \(max_conns=1\) within queue_timeout=500ms")


def test_queued_requests_are_served_in_turn(bulwark, origin):
    cap = Capped(hold_s=0.2)
    o = origin(cap)
    admin_port = free_port()
    b = bulwark(capped_config(o.addr, admin_port, 2, 50, "30s"))
    results = fetch_all(b.port, [f"/q{i}" for i in range(12)])
    assert [r.status for r in results] == [200] * 12, [r.head[:40] for r in results]
    assert sorted(r.data for r in results) == sorted(b"/q%d" % i for i in range(12))
    assert cap.peak <= 2
    metrics = fetch(admin_port, "/metrics").data.decode()
    queued = re.search(r'^bulwark_upstream_queue_total\{group="app",outcome="queued"\} (\d+)$',
                       metrics, re.M)
    assert queued and int(queued.group(1)) >= 1, metrics[-1500:]


def test_client_leaving_the_queue_frees_its_place(bulwark, origin):
    import socket
    import struct
    cap = Capped(hold_s=2.0)
    o = origin(cap)
    admin_port = free_port()
    b = bulwark(capped_config(o.addr, admin_port, 1, 1, "10s").replace("workers: 2", "workers: 1"))
    busy = []
    t = threading.Thread(target=lambda: busy.append(fetch(b.port, "/busy", timeout=30)))
    t.start()
    deadline = time.monotonic() + 10
    while cap.active == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # a client takes the only queue place, then goes away
    s = socket.create_connection(("127.0.0.1", b.port))
    s.sendall(b"GET /leaver HTTP/1.1\r\nHost: a\r\n\r\n")
    deadline = time.monotonic() + 10
    metrics = ""
    while time.monotonic() < deadline:
        metrics = fetch(admin_port, "/metrics").data.decode()
        if 'outcome="queued"} 1' in metrics:
            break
        time.sleep(0.02)
    assert 'bulwark_upstream_queue_total{group="app",outcome="queued"} 1' in metrics
    # a reset, not a FIN: a half-closed client may still read its answer
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    # its place is free again: the next request waits (and is served), it is not refused
    nxt = fetch(b.port, "/next", timeout=30)
    assert nxt.status == 200 and nxt.data == b"/next", nxt.head
    t.join(30)
    assert cap.peak == 1
    assert b"/leaver" not in b"".join(r[1].encode() for r in o.requests)
