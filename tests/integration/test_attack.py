"""Attacks from outside: raw clients, misbehaving origins, signals at bad moments.

Each test reproduces one bug found by attacking the binary. Some are memory errors
that only an ASan build shows for certain (build it as in docs/contributing.md, run
with BULWARK_BIN=build-asan/bulwark): those tests also assert that the process is
still alive and that its output holds no sanitizer report."""
import os
import signal
import socket
import struct
import threading
import time

from conftest import simple_config
from origins import free_port, wait_for
from origins.faulty import fetch


def sanitizer_clean(bw):
    out = bw.output()
    assert "AddressSanitizer" not in out and "runtime error" not in out, out[-4000:]
    assert bw.proc.poll() is None, "bulwark exited:\n" + out[-4000:]



def metric(admin_port, name):
    """Sum of every sample of metric `name` in /metrics."""
    text = fetch(admin_port, "/metrics").data.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_settled(admin_port):
    """Every in-flight gauge back to 0, no client connection left but ours."""
    def settled():
        return (metric(admin_port, "bulwark_upstream_in_flight") == 0
                and metric(admin_port, "bulwark_client_connections") == 0)
    try:
        wait_for(settled, "gauges back to 0")
    except AssertionError:
        raise AssertionError("gauges not back to 0:\n" + fetch(admin_port, "/metrics").data.decode())


def sigstop(pid, timeout=20.0):
    """SIGSTOP, and wait until every thread is stopped (kill() returns before they are)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        states = []
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass
        return states and all(st in ("T", "t") for st in states)
    wait_for(stopped, "bulwark stopped", timeout)


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawOrigin:
    """A listener whose accepted sockets the test drives by hand."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.conns = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            c.settimeout(20)
            with self.lock:
                self.conns.append(c)

    def conn(self, i, timeout=20.0):
        return wait_for(lambda: len(self.conns) > i and self.conns[i], f"upstream conn {i}",
                          timeout)

    def close(self):
        self.ls.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def read_one_response(sock, timeout=20.0):
    """(status, body) of one response with a Content-Length, read from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(data)
        body += chunk
    return int(head.split(b" ")[1]), body[:length]


def recv_request_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        data += chunk
    return data


def test_reload_with_queued_request_then_slot_frees_and_waiter_resets_in_one_batch(bulwark):
    """A request waits in the queue (max_conns: 1) of a config a reload retired. In one
    event batch the slot frees (a wake-up is deferred on the old group) and the waiter's
    client resets (the last user of the old set leaves: the set is freed). The deferred
    wake-up then ran on the freed group (ASan: heap-use-after-free in loop_run_deferred)."""
    o = RawOrigin()
    admin = free_port()
    cfg = simple_config([o.addr], extra_upstream="    max_conns: 1\n    queue_timeout: 30s\n",
                        extra_top=f'admin: "127.0.0.1:{admin}"\n')
    bw = bulwark(cfg)
    try:
        a = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        a.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        up = o.conn(0)
        recv_request_head(up)
        b = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        wait_for(lambda: metric(admin, 'bulwark_upstream_queue_total{group="app",outcome="queued"}')
                   >= 1, "the second request queued")
        assert bw.reload(cfg.replace("30s", "29s"))
        # Both events in one epoll batch: stop the process while they happen.
        sigstop(bw.pid)
        try:
            up.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            rst_close(b)
            time.sleep(0.2)
        finally:
            os.kill(bw.pid, signal.SIGCONT)
        assert a.recv(65536).startswith(b"HTTP/1.1 200")
        a.close()
        assert_settled(admin)
        sanitizer_clean(bw)
    finally:
        o.close()


def test_keep_alive_max_is_honoured_next_to_a_huge_timeout(bulwark, origin):
    """`Keep-Alive: timeout=4294967295, max=1`: both values are valid 32-bit numbers.
    request_end() tested `ka_timeout_s + ka_max` (uint32_t) for "any hint", which wraps
    to 0, so the whole hint, max=1 included, was dropped and the connection was reused
    for ever. max=1 means this request and one more: 4 requests need 2 connections."""
    from origins import read_request, iter_body
    conns = []

    def handler(c, o):
        conns.append(c)
        c.sock.settimeout(20)
        try:
            while True:
                _m, _t, _v, headers = read_request(c)
                for _ in iter_body(c, headers):
                    pass
                c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                               b"Keep-Alive: timeout=4294967295, max=1\r\n\r\nok")
        except (OSError, EOFError, ValueError):
            return

    o = origin(handler=handler)
    bw = bulwark(simple_config([f"127.0.0.1:{o.port}"]))
    for i in range(4):
        r = fetch(bw.port, f"/{i}")
        assert r.status == 200 and r.data == b"ok"
    assert len(conns) == 2, f"{len(conns)} upstream connections for 4 requests with max=1"


def test_body_queued_when_the_upstream_resets_is_never_parsed_as_a_request(bulwark):
    """A POST head goes out; its body arrives while the upstream has just reset the
    connection. The body is queued whole (req_body.done), the write fails, no retry
    (one server), and request_fail() answered 502 keeping the connection alive: the
    body bytes, never consumed from the client buffer, were parsed as the next request
    and forwarded (request smuggling: `GET /smuggled` reached the upstream).
    It must answer 502 and close (or linger), never read the body as a request."""
    o = RawOrigin()
    cfg = simple_config([o.addr])
    bw = bulwark(cfg)
    try:
        inner = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        c = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        c.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(inner))
        up = o.conn(0)
        assert recv_request_head(up).startswith(b"POST /upload ")
        # The body arrives first, the reset right after, both before bulwark runs again:
        # the client's event comes first in the batch, the write then fails.
        sigstop(bw.pid)
        try:
            c.sendall(inner)
            time.sleep(0.1)
            rst_close(up)
            time.sleep(0.1)
        finally:
            os.kill(bw.pid, signal.SIGCONT)
        c.settimeout(20)
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        assert data.startswith(b"HTTP/1.1 502 "), data[:200]
        # Then the connection ends (after a linger at most): nothing else is parsed.
        c.settimeout(5)
        closed = False
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        assert data.count(b"HTTP/1.1 ") == 1, data
        assert len(o.conns) == 1, ("the request body was forwarded as a request: "
                                   f"{len(o.conns)} upstream connections")
        assert closed, "the connection stayed open after a 502 with the body unconsumed"
        sanitizer_clean(bw)
    finally:
        o.close()


def test_pooled_connection_closed_during_the_event_batch_is_not_reused_for_a_post(bulwark):
    """The backend closes an idle pooled connection (FIN) while bulwark is busy; the
    next event batch holds a client's POST before the pooled connection's close event.
    The POST was sent on the closed connection, which then failed with
    connection_terminated: a POST whose body was sent is not replayed, so the client got
    a 502 although bulwark could have known the connection was closed. A pooled
    connection is now checked (one MSG_PEEK) before reuse: the POST gets a new one."""
    from origins import Conn, read_request, iter_body
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    close_idle = threading.Event()
    accepted = []

    def serve(sock):
        c = Conn(sock)
        sock.settimeout(20)
        try:
            _m, target, _v, headers = read_request(c)
            n = sum(len(p) for p in iter_body(c, headers))
            body = f"{target} {n}".encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            close_idle.wait(20)  # then close the now idle connection
        except (OSError, EOFError, ValueError):
            pass
        finally:
            sock.close()

    def accept():
        while True:
            try:
                sock, _ = ls.accept()
            except OSError:
                return
            accepted.append(sock)
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    bw = bulwark(simple_config([f"127.0.0.1:{ls.getsockname()[1]}"]))
    try:
        r = fetch(bw.port, "/first")
        assert r.status == 200 and r.data == b"/first 0"
        c = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        sigstop(bw.pid)
        try:
            c.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            time.sleep(0.05)
            close_idle.set()  # the FIN reaches bulwark's idle connection
            wait_for(lambda: all(s.fileno() == -1 for s in accepted[:1]), "the idle close")
            time.sleep(0.05)
        finally:
            os.kill(bw.pid, signal.SIGCONT)
        status, body = read_one_response(c)
        assert (status, body) == (200, b"/post 5"), (status, body)
        c.close()
        sanitizer_clean(bw)
    finally:
        ls.close()


def test_request_queued_after_a_failed_attempt_is_not_timed_out_as_a_slow_client(bulwark):
    """max_conns: 1 on two servers. B is busy; a PUT goes to A, which takes its head
    and resets while bulwark waits for the body (the client body timer runs). The
    retry finds B full and queues. The body timer kept running in the queue, where
    bulwark reads nothing: the client, whose body was sent, got 408 after body_timeout,
    and the request, answered while still linked in the group's queue, was later woken
    from freed memory (ASan: heap-use-after-free in session_drive from queue_wake).
    The queued PUT must be served by B once B is free, its body whole."""
    from origins import Conn, read_request, iter_body
    la, lb = socket.socket(), socket.socket()
    for ls in (la, lb):
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
    release = threading.Event()
    b_requests = []

    def serve_a():  # takes the head, then resets
        while True:
            try:
                c, _ = la.accept()
            except OSError:
                return
            c.settimeout(20)
            try:
                recv_request_head(c)
                time.sleep(0.1)
            except (OSError, EOFError):
                pass
            rst_close(c)

    def serve_b_conn(sock):
        c = Conn(sock)
        sock.settimeout(20)
        try:
            while True:
                _m, target, _v, headers = read_request(c)
                n = sum(len(p) for p in iter_body(c, headers))
                b_requests.append(target)
                release.wait(20)
                body = f"{target} {n}".encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, EOFError, ValueError):
            sock.close()

    def serve_b():
        while True:
            try:
                sock, _ = lb.accept()
            except OSError:
                return
            threading.Thread(target=serve_b_conn, args=(sock,), daemon=True).start()

    threading.Thread(target=serve_a, daemon=True).start()
    threading.Thread(target=serve_b, daemon=True).start()
    admin = free_port()
    cfg = simple_config(
        [f"127.0.0.1:{la.getsockname()[1]}", f"127.0.0.1:{lb.getsockname()[1]}"],
        extra_upstream=("    max_conns: 1\n    queue_timeout: 30s\n    retries: 1\n"
                        "    keepalive: 0\n    max_fails: 0\n"),
        extra_top=f'admin: "127.0.0.1:{admin}"\nclient:\n  body_timeout: 500ms\n')
    bw = bulwark(cfg)
    try:
        # B busy: a GET that A resets is retried on B, which holds it.
        hold = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        hold.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: "/hold" in b_requests, "B holding /hold")
        queued = 'bulwark_upstream_queue_total{group="app",outcome="queued"}'
        before = metric(admin, queued)
        put = socket.create_connection(("127.0.0.1", bw.port), timeout=20)
        put.sendall(b"PUT /put HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        wait_for(lambda: metric(admin, queued) > before, "the PUT queued after A's reset")
        put.sendall(b"0123456789")  # the body, while the request waits in the queue
        time.sleep(1.0)  # twice body_timeout
        release.set()
        assert read_one_response(hold) == (200, b"/hold 0")
        assert read_one_response(put) == (200, b"/put 10")
        hold.close()
        put.close()
        assert_settled(admin)
        sanitizer_clean(bw)
    finally:
        la.close()
        lb.close()
