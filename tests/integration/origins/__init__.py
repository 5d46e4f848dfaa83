"""Origin servers for the integration tests: real sockets on 127.0.0.1.

Origin() is a small keep-alive HTTP/1.1 server (threads, raw sockets) whose paths
behave on purpose:
  /echo...         200 JSON describing the request (method, target, headers, body size+sha256)
  /status/N        status N, empty body (no body for 1xx/204/304)
  /bytes/N         N bytes with Content-Length       /chunked/N  N bytes chunked
  /close/N         N bytes, no length, then close     /stream/N   as /bytes/N (any size)
  /sink            reads the body as it streams, answers its length and sha256
  /ws              WebSocket echo (RFC 6455 handshake, text/binary frames echoed)
  /early/N         103 Early Hints, then N bytes
Origin(handler=fn) instead calls fn(conn, origin) for each accepted connection: write any
misbehaviour by hand (garbage, resets, hangs).
origin.requests records (method, target, headers) of each request received.
"""
import base64
import hashlib
import json
import socket
import struct
import threading
import time

PATTERN = bytes(range(256)) * 256  # 64 KiB of a known pattern


def pattern_bytes(n):
    """The body /bytes/N, /chunked/N, /close/N and /stream/N send."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def pattern_pieces(n, piece=65000):
    """pattern_bytes(n) as pieces of at most piece bytes (<= 65280), without building it:
    the pattern repeats every 256 bytes, so any piece is a slice of PATTERN."""
    view = memoryview(PATTERN)
    off = 0
    while off < n:
        k = min(piece, n - off)
        yield view[off % 256: off % 256 + k]
        off += k


def wait_for(cond, what="a condition", timeout=20.0):
    """Poll cond() until it returns a true value, and return that value; fail
    after timeout seconds (a bound for a loaded machine, not a wait)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Conn:
    """A buffered reader over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self, n):
        if not self.buf:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_request(c):
    """Parse one request from Conn c: (method, target, version, headers[list], body_reader)."""
    head = c.read_until(b"\r\n\r\n").decode("latin-1")
    lines = head.split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return method, target, version, headers


def header(headers, name, default=None):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return default


def iter_body(c, headers):
    """Yield the request body in pieces (Content-Length or chunked)."""
    te = header(headers, "Transfer-Encoding")
    if te and te.lower() == "chunked":
        while True:
            size = int(c.read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                while c.read_until(b"\r\n") != b"\r\n":
                    pass
                return
            left = size
            while left:
                piece = c.read_some(min(left, 65536))
                left -= len(piece)
                yield piece
            c.read_exact(2)
    else:
        left = int(header(headers, "Content-Length", "0"))
        while left:
            piece = c.read_some(min(left, 65536))
            left -= len(piece)
            yield piece


def ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def ws_read_frame(c):
    b1, b2 = c.read_exact(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", c.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", c.read_exact(8))[0]
    mask = c.read_exact(4) if b2 & 0x80 else None
    data = c.read_exact(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return b1 & 0x0F, data


class Origin:
    def __init__(self, handler=None, port=None):
        self.handler = handler
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.closed = False
        self.conns = set()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.add(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            if self.handler:
                self.handler(Conn(s), self)
            else:
                self._serve_http(Conn(s))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.conns.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        """Stop listening and drop every open connection."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for s in list(self.conns):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve_http(self, c):
        while True:
            method, target, version, headers = read_request(c)
            with self.lock:
                self.requests.append((method, target, headers))
            if not self.respond(c, method, target, version, headers):
                return
            conn_hdr = (header(headers, "Connection") or "").lower()
            if version == "HTTP/1.0" and "keep-alive" not in conn_hdr:
                return
            if "close" in conn_hdr:
                return

    def respond(self, c, method, target, version, headers):
        """Answer one request; return False to close the connection."""
        s = c.sock
        path = target.split("?")[0]
        parts = path.strip("/").split("/")
        head = method == "HEAD"

        def send(status, body=b"", extra=(), reason="OK"):
            hdrs = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
            hdrs += [f"{k}: {v}" for k, v in extra]
            s.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode() + (b"" if head else body))
            return True

        if parts[0] == "ws" and (header(headers, "Upgrade") or "").lower() == "websocket":
            key = header(headers, "Sec-WebSocket-Key")
            accept = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            while True:
                op, data = ws_read_frame(c)
                if op == 8:
                    s.sendall(ws_frame(8, data))
                    return False
                s.sendall(ws_frame(op, data))
        if parts[0] == "status":
            status = int(parts[1])
            if status < 200 or status in (204, 304):
                s.sendall(f"HTTP/1.1 {status} X\r\n\r\n".encode())
                return True
            return send(status, b"", reason="X")
        if parts[0] in ("bytes", "chunked", "close", "stream", "early"):
            n = int(parts[1])
            for _ in iter_body(c, headers):
                pass
            # The header goes out first and the body in pieces, never built whole: N may
            # be huge (64 MiB to 1 GiB), and building it delayed the header by seconds
            # under load (a 504 from read_timeout) and, for 48 concurrent streams, took
            # GiBs and starved the test process of the GIL.
            kind = parts[0]
            if kind == "early":
                s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            if kind == "chunked":
                s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                if not head:
                    for piece in pattern_pieces(n, 10000):
                        s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    s.sendall(b"0\r\n\r\n")
                return True
            if kind == "close":
                s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            else:  # bytes, early, stream
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            if not head:
                for piece in pattern_pieces(n):
                    s.sendall(piece)
            return kind != "close"
        if parts[0] == "sink":
            h = hashlib.sha256()
            total = 0
            for piece in iter_body(c, headers):
                h.update(piece)
                total += len(piece)
            return send(200, json.dumps({"length": total, "sha256": h.hexdigest()}).encode(),
                        [("Content-Type", "application/json")])
        # default: echo
        h = hashlib.sha256()
        total = 0
        for piece in iter_body(c, headers):
            h.update(piece)
            total += len(piece)
        body = json.dumps({"method": method, "target": target, "version": version,
                           "headers": headers, "body_length": total,
                           "body_sha256": h.hexdigest(), "port": self.port}).encode()
        return send(200, body, [("Content-Type", "application/json")])


# ---------------------------------------------------------------------------
# Client-side helpers: a raw HTTP/1.x client over real sockets, so tests see
# exactly the bytes bulwark sends (framing, interim responses, closes).
# ---------------------------------------------------------------------------

class Response:
    """One response as read off the wire."""

    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in wire order
        self.raw_head = raw_head
        self.body = b""
        self.framing = "none"  # none | length | chunked | close
        self.chunk_sizes = []

    def header(self, name, default=None):
        return header(self.headers, name, default)

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


def client(port, timeout=10.0):
    """A Conn connected to 127.0.0.1:port; every recv is bounded by timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(s)


def read_response(c, method="GET", sink=None):
    """Read one response (an interim 1xx is returned on its own). The body is
    decoded by its framing; chunked syntax is checked strictly. With sink
    (a callable), body pieces go to it instead of .body."""
    head = c.read_until(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = []
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers.append((k, v.strip()))
    r = Response(version, int(status), reason, headers, head)
    out = []
    put = sink or out.append
    te = r.header("Transfer-Encoding")
    cl = r.header("Content-Length")
    if r.status < 200 or r.status in (204, 304) or method == "HEAD":
        return r
    if te is not None:
        assert te.lower() == "chunked", f"unexpected Transfer-Encoding {te!r}"
        r.framing = "chunked"
        while True:
            line = c.read_until(b"\r\n", limit=4096)
            size = int(line[:-2].split(b";")[0], 16)
            r.chunk_sizes.append(size)
            if size == 0:
                while c.read_until(b"\r\n", limit=65536) != b"\r\n":
                    pass
                break
            left = size
            while left:
                piece = c.read_some(min(left, 1 << 20))
                left -= len(piece)
                put(piece)
            crlf = c.read_exact(2)
            assert crlf == b"\r\n", f"chunk data not followed by CRLF: {crlf!r}"
    elif cl is not None:
        r.framing = "length"
        left = int(cl)
        while left:
            piece = c.read_some(min(left, 1 << 20))
            left -= len(piece)
            put(piece)
    else:
        r.framing = "close"
        if c.buf:
            put(c.buf)
            c.buf = b""
        while True:
            data = c.sock.recv(1 << 20)
            if not data:
                break
            put(data)
    r.body = b"".join(out)
    return r


def read_final_response(c, method="GET"):
    """Skip interim responses; return (final, [interim...])."""
    interim = []
    while True:
        r = read_response(c, method)
        if r.status >= 200 or r.status == 101:
            return r, interim
        interim.append(r)


def is_closed(c, timeout=5.0):
    """True if the peer closed (FIN or RST) within timeout with no more bytes
    sent; False if bytes arrived or it stayed open."""
    if c.buf:
        return False
    c.sock.settimeout(timeout)
    try:
        data = c.sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    if data:
        c.buf += data
        return False
    return True


def ws_client_frame(opcode, payload, fin=True, mask=None):
    """A client-to-server WebSocket frame: always masked (RFC 6455 5.3)."""
    import os as _os
    mask = mask if mask is not None else _os.urandom(4)
    n = len(payload)
    b1 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b1, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b1, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b1, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_read_server_frame(c):
    """Read one server frame: (fin, opcode, payload, was_masked)."""
    b1, b2 = c.read_exact(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", c.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", c.read_exact(8))[0]
    masked = bool(b2 & 0x80)
    mask = c.read_exact(4) if masked else None
    data = c.read_exact(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bool(b1 & 0x80), b1 & 0x0F, data, masked
