"""1 GiB bodies stream through bulwark in bounded memory, both ways.

bulwark's RSS (VmRSS from /proc/<pid>/status) is sampled from a thread while
the bytes flow; it must stay under 64 MiB. Bodies are checked by length and
sha256, computed incrementally on both sides."""
import functools
import hashlib
import json
import socket
import threading
import time

from conftest import simple_config
from origins import PATTERN, client, read_request, read_response

GIB = 1 << 30
RSS_LIMIT_KB = 64 * 1024
TRANSFER_TIMEOUT = 120.0
BLOCK = PATTERN * 16  # 1 MiB of the known pattern


@functools.lru_cache(maxsize=None)
def pattern_sha256(n):
    """sha256 of the first n bytes of the repeated pattern, without holding them."""
    h = hashlib.sha256()
    left = n
    while left:
        piece = BLOCK[:min(left, len(BLOCK))]
        h.update(piece)
        left -= len(piece)
    return h.hexdigest()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    def __init__(self, pid, interval=0.01):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                self.samples.append(rss_kb(self.pid))
            except (OSError, AssertionError):
                return
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def peak(self):
        return max(self.samples)


def assert_bounded(sampler, min_samples=20):
    assert len(sampler.samples) >= min_samples, "RSS sampled too rarely to mean anything"
    assert sampler.peak < RSS_LIMIT_KB, \
        f"bulwark RSS peaked at {sampler.peak / 1024:.1f} MiB (limit 64 MiB)"


def recv_body(sock, n, deadline, h, pause_at=None):
    """Read exactly n body bytes into hash h, with an optional reading pause."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    paused = pause_at is None
    while got < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"transfer too slow: {got} of {n} bytes in time")
        if not paused and got >= pause_at:
            # the point of this pause: a proxy without backpressure would
            # now buffer what the origin keeps sending
            time.sleep(1.5)
            paused = True
        k = sock.recv_into(view[:min(len(buf), n - got)])
        if k == 0:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        h.update(view[:k])
        got += k
    return got


def test_1gib_download_streams_in_bounded_memory(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    expected = pattern_sha256(GIB)
    c = client(b.port, timeout=30)
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    with RssSampler(b.pid) as s:
        c.sock.sendall(b"GET /stream/%d HTTP/1.1\r\nHost: t\r\n\r\n" % GIB)
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"\r\nContent-Length: %d\r\n" % GIB in head, head
        h = hashlib.sha256()
        h.update(c.buf)
        got = len(c.buf)
        c.buf = b""
        got += recv_body(c.sock, GIB - got, deadline, h, pause_at=256 << 20)
    assert got == GIB
    assert h.hexdigest() == expected
    assert_bounded(s)
    # the connection is still in a clean state
    c.sock.sendall(b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?after"


def chunked_stream_handler(n, piece=256 << 10):
    """An origin answering every request with n pattern bytes, chunked."""
    def handler(c, o):
        read_request(c)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        left = n
        while left:
            k = min(left, piece)
            c.sock.sendall(b"%x\r\n" % k + BLOCK[:k] + b"\r\n")
            left -= k
        c.sock.sendall(b"0\r\n\r\n")
        c.read_some(1)
    return handler


def test_1gib_chunked_download_streams_in_bounded_memory(bulwark, origin):
    o = origin(chunked_stream_handler(GIB))
    b = bulwark(simple_config([o.addr]))
    expected = pattern_sha256(GIB)
    c = client(b.port, timeout=30)
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    h = hashlib.sha256()
    total = [0]

    def sink(piece):
        if time.monotonic() > deadline:
            raise AssertionError(f"transfer too slow: {total[0]} bytes in time")
        h.update(piece)
        total[0] += len(piece)

    with RssSampler(b.pid) as s:
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = read_response(c, sink=sink)
    assert r.status == 200 and r.framing == "chunked"
    assert total[0] == GIB
    assert h.hexdigest() == expected
    assert_bounded(s)


def upload(b, chunked):
    expected = {"length": GIB, "sha256": pattern_sha256(GIB)}
    c = client(b.port, timeout=30)
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    with RssSampler(b.pid) as s:
        if chunked:
            c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            frame = b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n"
        else:
            c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % GIB)
            frame = BLOCK
        for _ in range(GIB // len(BLOCK)):
            if time.monotonic() > deadline:
                raise AssertionError("upload too slow")
            c.sock.sendall(frame)
        if chunked:
            c.sock.sendall(b"0\r\n\r\n")
        r = read_response(c)
    assert r.status == 200, r
    assert json.loads(r.body) == expected
    assert_bounded(s)
    return c


def test_1gib_upload_streams_in_bounded_memory(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = upload(b, chunked=False)
    c.sock.sendall(b"GET /echo?after HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).json()["target"] == "/echo?after"


def test_1gib_chunked_upload_streams_in_bounded_memory(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    upload(b, chunked=True)


def test_slow_reader_does_not_make_bulwark_buffer(bulwark, origin):
    """The client stops reading a large response: the origin is held back by
    TCP flow control through bulwark, not by bulwark's memory."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port, timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    with RssSampler(b.pid) as s:
        c.sock.sendall(b"GET /stream/%d HTTP/1.1\r\nHost: t\r\n\r\n" % (512 << 20))
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        time.sleep(2.0)  # not reading is the test
    assert_bounded(s, min_samples=20)
