"""Backpressure: a slow client is the client's wait, not the upstream's fault."""
import hashlib
import time

from conftest import simple_config
from origins import client, pattern_bytes


def test_client_pausing_longer_than_read_timeout_still_gets_the_whole_body(bulwark, origin):
    # The origin sends 32 MB at once; the client reads 1 MB, then stops reading for 2.5 s,
    # more than twice the upstream read_timeout, with every socket buffer full. bulwark stops
    # reading the upstream while the client is behind, so read_timeout must not fire (that
    # would blame the upstream for the client's pace and cut the response).
    o = origin()
    n = 32 * 1024 * 1024
    b = bulwark(simple_config([o.addr], extra_upstream="    read_timeout: 1s\n"))
    c = client(b.port, timeout=10)
    c.sock.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = c.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    h = hashlib.sha256()
    got = 0
    paused = False
    while got < n:
        piece = c.read_some(min(65536, n - got))
        h.update(piece)
        got += len(piece)
        if got >= 1024 * 1024 and not paused:
            time.sleep(2.5)
            paused = True
    assert h.hexdigest() == hashlib.sha256(pattern_bytes(n)).hexdigest()
    b.wait_log(rf'"GET /bytes/{n} HTTP/1.1" 200 {n} .* error=- ', what="access")
    assert "connection_read_timeout" not in b.error_log()


def test_upstream_stall_after_the_client_caught_up_is_still_timed(bulwark, origin):
    # After the client has drained everything, an upstream that stalls mid-body must
    # still be cut after read_timeout (the timer restarts once we wait on the upstream).
    def handler(c, o):
        c.read_until(b"\r\n\r\n")
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300000)
        time.sleep(5)

    o = origin(handler)
    b = bulwark(simple_config([o.addr], extra_upstream="    read_timeout: 500ms\n"))
    c = client(b.port, timeout=5)
    t0 = time.monotonic()
    c.sock.sendall(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n")
    got = 0
    while True:
        try:
            piece = c.sock.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        got += len(piece)
    elapsed = time.monotonic() - t0
    assert got < 1000000
    assert elapsed < 3.0, f"client hung {elapsed:.1f}s on a stalled upstream"
    b.wait_log(r'"GET /stall HTTP/1.1" 200 .* error=connection_read_timeout ', what="access")


def test_upstream_slow_to_read_the_body_is_not_blamed_on_the_client(bulwark, origin):
    # The origin reads a 16 MB upload slowly (pauses 2 s after the first MB) with
    # body_timeout 1s: the client is sending as fast as it can, so no 408; the upload
    # completes once the origin reads again (send_timeout 10s is not reached).
    def handler(c, o):
        import hashlib as _h
        head = c.read_until(b"\r\n\r\n")
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                .split(b":")[1])
        h = _h.sha256()
        got = 0
        paused = False
        while got < n:
            piece = c.read_some(min(65536, n - got))
            h.update(piece)
            got += len(piece)
            if got > 1024 * 1024 and not paused:
                time.sleep(2)
                paused = True
        body = h.hexdigest().encode()
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    o = origin(handler)
    n = 16 * 1024 * 1024
    b = bulwark(simple_config([o.addr], extra_upstream="    send_timeout: 10s\n",
                              extra_top="client:\n  body_timeout: 1s\n"))
    c = client(b.port, timeout=15)
    data = pattern_bytes(n)
    c.sock.sendall(f"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n".encode() + data)
    head = c.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert c.read_exact(64).decode() == hashlib.sha256(data).hexdigest()
