"""Client-side timeouts: slow headers (slowloris) and stalled bodies get 408."""
import threading
import time

from conftest import simple_config
from origins import client, is_closed, read_response

TIMEOUTS = "client:\n  header_timeout: 1s\n  body_timeout: 1s\n"


def trickle(sock, pieces, interval, stop):
    """Send pieces one by one every interval until stop is set or a send fails."""
    for p in pieces:
        if stop.wait(interval):
            return
        try:
            sock.sendall(p)
        except OSError:
            return


def test_slowloris_header_gets_408_within_header_timeout(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    t0 = time.monotonic()
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
    stop = threading.Event()
    # a header line every 200 ms, forever (well, 10 s): never finished
    t = threading.Thread(target=trickle, args=(c.sock, [b"X-%d: v\r\n" % i for i in range(50)],
                                               0.2, stop), daemon=True)
    t.start()
    try:
        r = read_response(c)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert 0.8 <= elapsed < 3.0, f"408 after {elapsed:.2f}s with header_timeout 1s"
        assert is_closed(c, timeout=10.0)
        assert time.monotonic() - t0 < 3.0
    finally:
        stop.set()
        t.join()
    assert o.requests == []


def test_byte_by_byte_request_line_gets_408(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    t0 = time.monotonic()
    stop = threading.Event()
    line = b"GET /echo?" + b"x" * 200
    t = threading.Thread(target=trickle, args=(c.sock, [line[i:i + 1] for i in range(len(line))],
                                               0.05, stop), daemon=True)
    t.start()
    try:
        r = read_response(c)
        assert r.status == 408
        assert time.monotonic() - t0 < 3.0
        assert is_closed(c, timeout=10.0)
    finally:
        stop.set()
        t.join()


def test_silent_connection_is_closed_within_header_timeout(bulwark, origin):
    """Connected, never a byte: closed (a 408 is allowed, nothing else)."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    t0 = time.monotonic()
    c.sock.settimeout(5)
    data = b""
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 3.0, f"closed after {elapsed:.2f}s with header_timeout 1s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


def test_slow_second_request_on_a_kept_alive_connection_gets_408(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS +
                              "  keepalive_timeout: 30s\n"))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"GET /echo?first HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).status == 200
    t0 = time.monotonic()
    c.sock.sendall(b"GET /echo?second HTTP/1.1\r\n")
    stop = threading.Event()
    t = threading.Thread(target=trickle, args=(c.sock, [b"X-%d: v\r\n" % i for i in range(50)],
                                               0.2, stop), daemon=True)
    t.start()
    try:
        r = read_response(c)
        assert r.status == 408
        elapsed = time.monotonic() - t0
        assert 0.8 <= elapsed < 3.0, f"408 after {elapsed:.2f}s"
        assert is_closed(c, timeout=10.0)
    finally:
        stop.set()
        t.join()
    assert [t for _, t, _ in o.requests] == ["/echo?first"]


def test_stalled_body_gets_408_after_body_timeout(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    t0 = time.monotonic()
    r = read_response(c)
    elapsed = time.monotonic() - t0
    assert r.status == 408, r
    assert 0.8 <= elapsed < 3.0, f"408 after {elapsed:.2f}s with body_timeout 1s"
    assert is_closed(c, timeout=10.0)


def test_stalled_chunked_body_gets_408(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n")
    t0 = time.monotonic()
    r = read_response(c)
    assert r.status == 408, r
    assert 0.8 <= time.monotonic() - t0 < 3.0
    assert is_closed(c, timeout=10.0)


def test_stalled_body_before_any_body_byte_gets_408(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    t0 = time.monotonic()
    r = read_response(c)
    assert r.status == 408, r
    assert 0.8 <= time.monotonic() - t0 < 3.0
    assert is_closed(c, timeout=10.0)


def test_slow_but_steady_body_is_not_cut(bulwark, origin):
    """body_timeout bounds the gap between reads, not the whole body: a body
    trickled for longer than the timeout, with short gaps, goes through."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    pieces = [b"%02d" % i for i in range(10)]
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n")
    t0 = time.monotonic()
    for p in pieces:
        time.sleep(0.3)  # the point of the test: gaps shorter than body_timeout
        c.sock.sendall(p)
    assert time.monotonic() - t0 > 2.5
    r = read_response(c)
    assert r.status == 200, r
    assert r.json()["length"] == 20


def test_header_timeout_is_total_not_per_read(bulwark, origin):
    """Each gap is short, the total is long: still 408 at about header_timeout."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    stop = threading.Event()
    t0 = time.monotonic()
    t = threading.Thread(target=trickle, args=(c.sock, [b"G", b"E", b"T", b" ", b"/"] +
                                               [b"a"] * 100, 0.1, stop), daemon=True)
    t.start()
    try:
        r = read_response(c)
        assert r.status == 408
        assert time.monotonic() - t0 < 2.5
    finally:
        stop.set()
        t.join()


def test_body_that_stops_after_some_bytes_gets_408(bulwark, origin):
    """Header, then part of the body in a later write, then silence."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=TIMEOUTS))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    deadline = time.monotonic() + 20
    while not o.requests:  # bulwark has taken the header and forwarded it
        assert time.monotonic() < deadline, "header never reached the origin"
        time.sleep(0.01)
    c.sock.sendall(b"y" * 30)
    r = read_response(c)
    assert r.status == 408, r
    assert is_closed(c, timeout=10.0)
    b.wait_log(r'"POST /sink HTTP/1.1" 408 ', what="access")
