"""Misbehaving upstreams, and a raw client that sees exactly what the proxy sends.

Handlers are for Origin(handler=...): each is called as fn(conn, origin) for one
accepted connection and misbehaves on purpose (resets, truncations, garbage, stalls).
A handler that "hangs" waits until the proxy closes its side (or a bound passes), so
the test learns when the proxy gave up and no thread outlives the test by long.

Blackhole is an address whose TCP handshake never completes; unroutable_address()
finds an address this host's connect() refuses with a routing error.
"""
import errno
import select
import socket
import struct
import threading
import time

from origins import read_request, iter_body, header

HANG_BOUND_S = 15.0  # no handler waits longer than this for the proxy to close


def drain_request(c):
    """Read one whole request (header and body) from Conn c; return (method, target, headers)."""
    method, target, _version, headers = read_request(c)
    for _ in iter_body(c, headers):
        pass
    return method, target, headers


def wait_peer_close(c, bound=HANG_BOUND_S):
    """Block until the peer closes (or resets) the connection, or bound seconds pass.
    Returns the seconds waited, or None when the bound passed."""
    t0 = time.monotonic()
    c.sock.settimeout(bound)
    try:
        while True:
            if not c.sock.recv(65536):
                return time.monotonic() - t0
    except socket.timeout:
        return None
    except OSError:
        return time.monotonic() - t0


def reset(sock):
    """Close with SO_LINGER 0: the peer gets an RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def record(origin, method, target, headers):
    with origin.lock:
        origin.requests.append((method, target, headers))


def reset_after_request():
    """Read the request, then reset the connection without a response byte."""
    def handler(c, o):
        record(o, *drain_request(c))
        reset(c.sock)
    return handler


def send_then_close(data, rst=False):
    """Read the request, send data (bytes), then close (FIN, or RST with rst=True)."""
    def handler(c, o):
        record(o, *drain_request(c))
        c.sock.sendall(data)
        if rst:
            reset(c.sock)
        else:
            c.sock.shutdown(socket.SHUT_WR)
            wait_peer_close(c, bound=5.0)
    return handler


def send_then_hang(data, closed_after=None):
    """Read the request, send data (may be b""), then stall until the proxy closes.
    closed_after (a list) gets the seconds the proxy took to close, or None."""
    def handler(c, o):
        record(o, *drain_request(c))
        if data:
            c.sock.sendall(data)
        waited = wait_peer_close(c)
        if closed_after is not None:
            closed_after.append(waited)
    return handler


def respond(c, body, extra=b""):
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body)


def gated(release, body=b"slow done", bound=HANG_BOUND_S):
    """A keep-alive origin whose every request waits for release (a threading.Event)
    before it is answered with body. Requests are recorded as they arrive."""
    def handler(c, o):
        while True:
            record(o, *drain_request(c))
            release.wait(bound)
            respond(c, body + b" port=%d" % o.port)
    return handler


def wait_requests(origin, n, timeout=10.0):
    """Wait until origin has received at least n requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with origin.lock:
            if len(origin.requests) >= n:
                return
        time.sleep(0.005)
    raise AssertionError(f"origin {origin.addr} got {len(origin.requests)} requests, wanted {n}")


class Blackhole:
    """A listening socket with backlog 0 that never accepts, its accept queue filled
    by filler connections: a further SYN is dropped, so connect() to it neither
    completes nor fails until the connector's own timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.fillers = []
        # Fill until a probe connection hangs; Linux queues backlog+1 connections.
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            _, w, _ = select.select([], [s], [], 0.2)
            if not w:
                s.close()  # this one hangs: the queue is full
                return
            self.fillers.append(s)
        raise RuntimeError("cannot make a listening socket drop SYNs on this host")

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()


# Addresses connect() refuses for routing reasons on common Linux hosts: TCP to
# multicast or broadcast gives ENETUNREACH at once; the others depend on routes.
UNROUTABLE_CANDIDATES = [
    (socket.AF_INET, "224.0.0.1", "224.0.0.1:80"),
    (socket.AF_INET, "255.255.255.255", "255.255.255.255:80"),
    (socket.AF_INET6, "ff02::1", "[ff02::1]:80"),
    (socket.AF_INET6, "2001:db8::1", "[2001:db8::1]:80"),
    (socket.AF_INET, "240.0.0.1", "240.0.0.1:80"),
]
UNROUTABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


def unroutable_address():
    """(config address text, errno name) of the first candidate whose connect()
    fails with a routing errno here within 1 s; (None, reasons) when none does."""
    reasons = []
    for family, host, text in UNROUTABLE_CANDIDATES:
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            reasons.append(f"{host}: socket(): {e}")
            continue
        s.setblocking(False)
        try:
            rc = s.connect_ex((host, 80))
            if rc == errno.EINPROGRESS:
                select.select([], [s], [], 1.0)
                rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.EINPROGRESS
        finally:
            s.close()
        if rc in UNROUTABLE_ERRNOS:
            return text, errno.errorcode[rc]
        reasons.append(f"{host}: {errno.errorcode.get(rc, rc)}")
    return None, "; ".join(reasons)


class Response:
    def __init__(self):
        self.status = None
        self.head = b""
        self.headers = []  # (lowercased name, value)
        self.body = b""    # body bytes as received (chunked coding not removed)
        self.data = b""    # decoded body
        self.complete = False  # the body ended as its framing says
        self.eof = False       # the proxy closed the connection
        self.elapsed = 0.0

    def get(self, name, default=None):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return default


def fetch(port, path="/", method="GET", headers=(), body=b"", timeout=10.0, sock=None):
    """Send one request and read the response exactly as the proxy sends it, noting
    whether the body was complete and whether the connection was closed after it.
    A connection the proxy aborts mid-body is a result here, not an exception."""
    r = Response()
    t0 = time.monotonic()
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    hdrs = [("Host", "test.local")] + list(headers)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    if own:
        hdrs.append(("Connection", "close"))
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    sock.sendall(req.encode() + body)
    buf = b""

    def fill():
        nonlocal buf
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            r.eof = True
            return False
        buf += d
        return True

    try:
        while True:
            while b"\r\n\r\n" not in buf:
                if not fill():
                    r.head = buf
                    return r
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            r.status = int(lines[0].split(" ")[1])
            r.head = head
            r.headers = []
            for line in lines[1:]:
                k, v = line.split(":", 1)
                r.headers.append((k.strip().lower(), v.strip()))
            if r.status >= 200:
                break
        if method == "HEAD" or r.status in (204, 304):
            r.complete = True
            return r
        te = (r.get("transfer-encoding") or "").lower()
        if te == "chunked":
            pos = 0
            while True:
                while b"\r\n" not in buf[pos:]:
                    if not fill():
                        r.body = buf
                        return r
                line_end = buf.index(b"\r\n", pos)
                size = int(buf[pos:line_end].split(b";")[0], 16)
                need = line_end + 2 + size + 2
                while len(buf) < need:
                    if not fill():
                        r.body = buf
                        return r
                r.data += buf[line_end + 2: line_end + 2 + size]
                pos = need
                if size == 0:
                    r.complete = True
                    r.body = buf[:pos]
                    return r
        elif r.get("content-length") is not None:
            n = int(r.get("content-length"))
            while len(buf) < n:
                if not fill():
                    break
            r.body = r.data = buf[:n]
            r.complete = len(buf) >= n
        else:
            while fill():
                pass
            r.body = r.data = buf
            r.complete = True
        return r
    finally:
        r.elapsed = time.monotonic() - t0
        if own:
            if r.complete and not r.eof:
                # Connection: close was asked: the proxy must close after the body.
                try:
                    while fill():
                        pass
                except socket.timeout:
                    pass
            sock.close()


def wait_refused(port, timeout=20.0):
    """Wait until connect() to port is refused (the listener closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


def in_threads(fn, args_list):
    """Run fn(*args) for each args in threads; return (threads, results dict)."""
    results = {}

    def run(i, args):
        try:
            results[i] = fn(*args)
        except Exception as e:  # reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, a), daemon=True)
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    return threads, results
