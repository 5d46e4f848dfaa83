"""An origin that runs as its own process (so a test can kill -9, SIGSTOP or restart
it), the bodies it sends, and a streaming client that judges what the proxy answered.

Run it as `python3 tests/integration/origins/chaos.py --port P [--name N]`: it serves
everything Origin() serves (see origins/__init__.py), plus
  /blob/SIZE/SEED          SIZE bytes of blob_pieces(SIZE, SEED) with Content-Length;
                           ?chunked=1 chunked instead; ?drip=MS sleeps MS between pieces
and prints "ready PORT" on stdout once it listens. Signals: SIGUSR1 drops every open
connection at once (RST), as a backend that restarts its workers does; SIGTERM exits;
SIGSTOP/SIGCONT (sent by the test) stall and resume it.

OriginProcess starts, kills, restarts, stalls and drops such a process by its PID.
fetch_blob() and friends read a response as it streams (sha256 on the fly, so 50 MB
bodies cost no memory) and judge() sorts it into ok / gateway_error / aborted / failed.
"""
import functools
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time

if __package__ in (None, ""):  # run by path: make "origins" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from origins import Conn, Origin, iter_body, free_port  # noqa: E402

BLOCK_SIZE = 1 << 20
_BLOCK = random.Random(20261129).randbytes(BLOCK_SIZE)
_BLOCK2 = _BLOCK + _BLOCK
PIECE = 256 * 1024


def blob_pieces(size, seed, piece=PIECE):
    """The body /blob/SIZE/SEED: a fixed 1 MiB random block rotated by SEED, repeated,
    cut at SIZE. Different seeds give different bytes, so a response relayed to the
    wrong client (or out of order) fails its hash."""
    rot = memoryview(_BLOCK2)[seed % BLOCK_SIZE:seed % BLOCK_SIZE + BLOCK_SIZE]
    pos, left = 0, size
    while left:
        n = min(left, piece, BLOCK_SIZE - pos)
        yield rot[pos:pos + n]
        pos = (pos + n) % BLOCK_SIZE
        left -= n


@functools.lru_cache(maxsize=512)
def blob_sha256(size, seed):
    h = hashlib.sha256()
    for p in blob_pieces(size, seed):
        h.update(p)
    return h.hexdigest()


class ChaosOrigin(Origin):
    """Origin plus /blob; the name goes out in X-Origin on /blob answers."""

    name = "origin"

    def respond(self, c, method, target, version, headers):
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        if parts[0] != "blob":
            return super().respond(c, method, target, version, headers)
        for _ in iter_body(c, headers):
            pass
        size, seed = int(parts[1]), int(parts[2])
        q = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
        drip = int(q.get("drip", "0")) / 1000.0
        s = c.sock
        chunked = q.get("chunked") == "1"
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        s.sendall((f"HTTP/1.1 200 OK\r\n{framing}\r\nX-Origin: {self.name}\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n").encode())
        if method == "HEAD":
            return True
        # chunk sizes vary with the seed so the proxy's chunk parser sees odd splits
        piece = PIECE if not chunked else 1000 + seed % 90000
        for p in blob_pieces(size, seed, piece):
            if chunked:
                s.sendall(b"%x\r\n" % len(p) + bytes(p) + b"\r\n")
            else:
                s.sendall(p)
            if drip:
                time.sleep(drip)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        return True

    def drop_all(self):
        """Reset every open connection (listening goes on)."""
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(argv):
    port, name = 0, "origin"
    for i, a in enumerate(argv):
        if a == "--port":
            port = int(argv[i + 1])
        elif a == "--name":
            name = argv[i + 1]
    ChaosOrigin.name = name
    o = ChaosOrigin(port=port)
    signal.signal(signal.SIGUSR1, lambda *_: o.drop_all())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stdout.write(f"ready {o.port}\n")
    sys.stdout.flush()
    while True:
        signal.pause()


class OriginProcess:
    """A ChaosOrigin in a child process on a fixed port, controlled by its PID."""

    def __init__(self, name="origin", port=None, log_path=None):
        self.name = name
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc = None
        self.stalled = False
        self.start()

    def start(self, timeout=30.0):  # a Python start-up on a loaded machine
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--port", str(self.port),
             "--name", self.name], stdout=subprocess.PIPE, stderr=log)
        if log is not subprocess.DEVNULL:
            log.close()
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else b""
        if not line.startswith(b"ready"):
            self.kill9()
            raise RuntimeError(f"origin {self.name} did not start on {self.port}: {line!r}")
        self.stalled = False

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.proc.stdout.close()
        self.stalled = False

    def restart(self):
        self.kill9()
        self.start()

    def stall(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stalled = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stalled = False

    def drop(self):
        os.kill(self.proc.pid, signal.SIGUSR1)

    def stop(self):
        if not self.alive():
            return self.kill9()
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.kill9()


# ---------------------------------------------------------------------------
# The client side: stream a response, hash it, judge it.
# ---------------------------------------------------------------------------

# Proxy-Status error types per status (README "Gateway errors: causes").
GATEWAY_CAUSES = {
    502: {"connection_refused", "destination_ip_unroutable", "dns_error",
          "connection_terminated", "http_protocol_error", "http_response_header_section_size"},
    503: {"destination_unavailable", "connection_limit_reached"},
    504: {"connection_timeout", "http_response_timeout", "connection_write_timeout"},
}
PROXY_STATUS_RX = re.compile(r'^bulwark; error=([a-z_]+)(;|$)')


class Streamed:
    """One response as read off the wire, its body hashed as it came."""

    def __init__(self):
        self.status = None
        self.headers = []  # (lowercased name, value)
        self.length = 0
        self.sha = hashlib.sha256()
        self.complete = False  # the body ended as its framing said
        self.eof = False       # the connection closed (at or before the end)
        self.elapsed = 0.0
        self.error = None      # "timeout" when the client gave up waiting

    def get(self, name, default=None):
        for k, v in self.headers:
            if k == name:
                return v
        return default

    @property
    def sha256(self):
        return self.sha.hexdigest()


def read_streamed(c, method="GET", pace=None, keep=False):
    """Read one final response from Conn c (1xx skipped). pace(n) is called after each
    body piece of n bytes (a slow reader sleeps there). keep=True also keeps the body
    in .body. A timeout sets .error = "timeout"; an early close is a result, not an
    exception."""
    r = Streamed()
    r.body = b"" if keep else None
    t0 = time.monotonic()

    def put(p):
        r.sha.update(p)
        r.length += len(p)
        if keep:
            r.body += p
        if pace:
            pace(len(p))

    try:
        while True:
            head = c.read_until(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            r.status = int(lines[0].split(" ")[1])
            r.headers = []
            for line in lines[1:]:
                if line:
                    k, v = line.split(":", 1)
                    r.headers.append((k.strip().lower(), v.strip()))
            if r.status >= 200 or r.status == 101:
                break
        if method == "HEAD" or r.status in (101, 204, 304):
            r.complete = True
            return r
        te = r.get("transfer-encoding")
        cl = r.get("content-length")
        if te is not None:
            while True:
                size = int(c.read_until(b"\r\n", limit=4096)[:-2].split(b";")[0], 16)
                if size == 0:
                    while c.read_until(b"\r\n", limit=65536) != b"\r\n":
                        pass
                    break
                left = size
                while left:
                    p = c.read_some(min(left, 65536))
                    left -= len(p)
                    put(p)
                if c.read_exact(2) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
            r.complete = True
        elif cl is not None:
            left = int(cl)
            while left:
                p = c.read_some(min(left, 65536))
                left -= len(p)
                put(p)
            r.complete = True
        else:
            if c.buf:
                put(c.buf)
                c.buf = b""
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                put(d)
            r.eof = r.complete = True
    except (EOFError, ConnectionResetError, BrokenPipeError):
        r.eof = True
    except socket.timeout:
        r.error = "timeout"
    finally:
        r.elapsed = time.monotonic() - t0
    return r


def request_bytes(method, target, headers=(), body=b"", host="test.local"):
    hdrs = [("Host", host)] + list(headers)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
            + "\r\n").encode() + body


def connect(port, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(s)


def fetch_blob(port, size, seed, c=None, timeout=10.0, chunked=False, close=False, pace=None,
               extra_query=""):
    """GET /blob/SIZE/SEED (on Conn c, or a new connection that is closed after).
    Returns the Streamed response; a refused connect or a send that fails is
    .error = "connect" / "send"."""
    own = c is None
    q = "?chunked=1" if chunked else "?x=0"
    if extra_query:
        q += "&" + extra_query
    t0 = time.monotonic()
    try:
        if own:
            c = connect(port, timeout)
    except OSError as e:
        r = Streamed()
        r.error = f"connect: {e}"
        return r
    try:
        hdrs = [("Connection", "close")] if close or own else []
        try:
            c.sock.sendall(request_bytes("GET", f"/blob/{size}/{seed}{q}", hdrs))
        except OSError as e:
            r = Streamed()
            r.error = f"send: {e}"
            r.eof = True
            return r
        r = read_streamed(c, pace=pace)
        r.elapsed = time.monotonic() - t0
        return r
    finally:
        if own:
            c.sock.close()


def post_sink(port, size, seed, c=None, timeout=10.0, chunked=False, pace=None):
    """POST blob (size, seed) to /sink (on Conn c, or a new connection closed after);
    the origin answers the length and sha256 it read. pace(n) after each piece sent
    (a trickling client sleeps there). Returns the Streamed response, body kept."""
    own = c is None
    t0 = time.monotonic()
    try:
        if own:
            c = connect(port, timeout)
    except OSError as e:
        r = Streamed()
        r.error = f"connect: {e}"
        return r
    try:
        hdrs = [("Connection", "close")] if own else []
        hdrs.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size)))
        try:
            c.sock.sendall(request_bytes("POST", f"/sink?seed={seed}", hdrs))
            piece = PIECE if not chunked else 1000 + seed % 70000
            for p in blob_pieces(size, seed, piece):
                c.sock.sendall(b"%x\r\n" % len(p) + bytes(p) + b"\r\n" if chunked else p)
                if pace:
                    pace(len(p))
            if chunked:
                c.sock.sendall(b"0\r\n\r\n")
        except socket.timeout:
            r = Streamed()
            r.error = "timeout"
            r.elapsed = time.monotonic() - t0
            return r
        except OSError:
            pass  # the proxy may have answered early and closed: read what it said
        r = read_streamed(c, keep=True)
        r.elapsed = time.monotonic() - t0
        return r
    finally:
        if own:
            c.sock.close()


def sink_check(size, seed):
    """A judge() check for a /sink answer: the origin read exactly blob (size, seed)."""
    def check(r):
        try:
            got = json.loads(r.body)
        except ValueError:
            return f"/sink answer is not JSON: {r.body[:100]!r}"
        if got.get("length") != size or got.get("sha256") != blob_sha256(size, seed):
            return f"origin read {got.get('length')} bytes sha256 {str(got.get('sha256'))[:16]}, " \
                   f"sent {size} bytes sha256 {blob_sha256(size, seed)[:16]}"
        return None
    return check


def judge(r, size=None, seed=None, check=None):
    """('ok' | 'gateway_error' | 'aborted' | 'failed', why) for a response that should
    carry blob (size, seed), or whose complete 200 passes check(r) (None when right):
      ok             200 whose complete body is exactly the expected one
      gateway_error  502/503/504 whose Proxy-Status names a cause of that status
      aborted        200 whose body the proxy cut (framing shows it incomplete): what
                     the design promises when the upstream fails mid-body
      failed         anything else: no answer, a hang, a wrong or short 'complete'
                     body, a bad status, an error without its cause"""
    if r.error and r.error.startswith("timeout"):
        return "failed", f"client timed out after {r.elapsed:.1f}s (status {r.status})"
    if r.error:
        return "failed", r.error
    if r.status is None:
        return "failed", "connection closed with no response"
    if r.status == 200:
        if not r.complete:
            return "aborted", f"body cut at {r.length} bytes"
        if check is not None:
            why = check(r)
            return ("failed", why) if why else ("ok", "")
        if r.length != size:
            return "failed", f"complete body of {r.length} bytes, expected {size}"
        if r.sha256 != blob_sha256(size, seed):
            return "failed", f"body sha256 {r.sha256[:16]} != expected {blob_sha256(size, seed)[:16]}"
        return "ok", ""
    if r.status in GATEWAY_CAUSES:
        ps = r.get("proxy-status")
        m = PROXY_STATUS_RX.match(ps or "")
        if not m:
            return "failed", f"{r.status} without a Proxy-Status cause: {ps!r}"
        if m.group(1) not in GATEWAY_CAUSES[r.status]:
            return "failed", f"{r.status} with a cause of another status: {ps!r}"
        if not r.complete:
            return "failed", f"{r.status} error page cut short"
        return "gateway_error", m.group(1)
    return "failed", f"unexpected status {r.status}"


def sanitized(binary):
    """True when binary is an ASan build: its RSS holds shadow memory and a quarantine
    of freed blocks (up to 256 MiB), so RSS bounds say nothing about it."""
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_sockets(local_port=None, remote_port=None):
    """{state: count} of the IPv4 sockets whose local (or remote) port matches."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            lport = int(parts[1].rsplit(":", 1)[1], 16)
            rport = int(parts[2].rsplit(":", 1)[1], 16)
            if local_port is not None and lport != local_port:
                continue
            if remote_port is not None and rport != remote_port:
                continue
            st = TCP_STATES.get(parts[3], parts[3])
            out[st] = out.get(st, 0) + 1
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
