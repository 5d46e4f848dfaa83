"""The admin listener under reload and under attack from raw sockets.

Reload (SIGHUP) applies `admin`: a new address opens and the old one closes, a
removed `admin` closes the listener, a new or removed token applies to the next
request, an unchanged address keeps its socket, and an address that cannot be bound
leaves the old listener with its old token. Connections are served concurrently:
a client dripping its request, or never reading its response, delays nobody, and is
cut at the whole-request deadline; over the connection bound the answer is an
immediate 503 or close."""
import json
import re
import select
import socket
import threading
import time

import pytest

from origins import free_port, wait_port
from test_admin import TOKEN, admin_get, config

# The admin listener's documented bounds (README "Admin API").
REQUEST_DEADLINE_S = 5.0
MAX_CONNECTIONS = 32


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def wait_refused(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refuses(port):
            return
        time.sleep(0.02)
    raise AssertionError(f"127.0.0.1:{port} still accepts connections")


def read_all(s, timeout=10.0):
    """Everything until EOF; a reset after some data ends the read too."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    return data


def parse(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
def admin(bulwark, origin):
    """admin(token=TOKEN, admin_port=None, extra_top="") -> (bulwark, admin port, config
    builder); the builder makes the same config with another admin port or token."""
    def start(token=TOKEN, admin_port=None, extra_top="", servers=None):
        live = origin()
        dead = f"127.0.0.1:{free_port()}"
        aport = admin_port or free_port()

        def build(port=aport, tok=token, with_admin=True):
            text = config(live.addr, dead, port, tok, extra_top)
            if not with_admin:
                text = re.sub(r"^admin: .*\n", "", text, flags=re.M)
            if servers:
                text = text.replace(f'servers: ["{dead}"]', "servers: [" + ", ".join(
                    f'"{s}"' for s in servers) + "]")
            return text

        b = bulwark(build())
        wait_port(aport)
        return b, aport, build
    return start


# ---- reload ----

def test_reload_moves_admin_to_another_port(admin):
    b, old_port, build = admin()
    assert admin_get(old_port, "/status")[0] == 200
    new_port = free_port()
    assert b.reload(build(port=new_port))
    wait_refused(old_port)
    assert admin_get(new_port, "/status")[0] == 200
    assert admin_get(new_port, "/status", token=None)[0] == 401
    b.wait_log(rf"admin listener moved from 127\.0\.0\.1:{old_port} to 127\.0\.0\.1:{new_port}")


def test_reload_removes_admin_and_the_port_closes(admin):
    b, aport, build = admin()
    assert b.reload(build(with_admin=False))
    wait_refused(aport)
    b.wait_log(rf"admin listener on 127\.0\.0\.1:{aport} closed")
    # and a later reload that sets it again opens it again
    assert b.reload(build())
    wait_port(aport)
    assert admin_get(aport, "/status")[0] == 200


def test_reload_adds_admin_when_it_had_none(admin):
    b, aport, build = admin()
    assert b.reload(build(with_admin=False))
    wait_refused(aport)
    fresh = free_port()
    assert b.reload(build(port=fresh))
    wait_port(fresh)
    assert admin_get(fresh, "/status")[0] == 200


def test_reload_removes_the_token(admin):
    b, aport, build = admin()
    assert admin_get(aport, "/status", token=None)[0] == 401
    assert b.reload(build(tok=None))
    assert admin_get(aport, "/status", token=None)[0] == 200
    b.wait_log(r"admin token removed: applies from the next request")


def test_reload_adds_then_changes_the_token(admin):
    b, aport, build = admin(token=None)
    assert admin_get(aport, "/status", token=None)[0] == 200
    assert b.reload(build(tok="first-token"))
    assert admin_get(aport, "/status", token=None)[0] == 401
    assert admin_get(aport, "/status", token="first-token")[0] == 200
    assert b.reload(build(tok="second-token"))
    assert admin_get(aport, "/status", token="first-token")[0] == 401
    assert admin_get(aport, "/status", token="second-token")[0] == 200


def test_an_unchanged_address_keeps_its_socket(admin):
    b, aport, build = admin()
    # A connection made before the reload (accepted or still in the accept queue)
    # is served after it, under the new token: the socket was not reopened.
    with socket.create_connection(("127.0.0.1", aport), timeout=10) as s:
        assert b.reload(build(tok="rotated"))
        s.sendall(b"GET /status HTTP/1.1\r\nAuthorization: Bearer rotated\r\n\r\n")
        status, _, body = parse(read_all(s))
    assert status == 200 and json.loads(body)["upstreams"]
    assert "admin listener moved" not in b.error_log()


def test_a_new_address_that_cannot_be_bound_keeps_the_old_listener_and_token(admin):
    b, aport, build = admin()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        # the move also drops the token: the old address must not lose it
        assert b.reload(build(port=busy, tok=None)), "the rest of the config applies"
        b.wait_log(rf"admin listener: cannot listen on 127\.0\.0\.1:{busy}: Address already in "
                   rf"use.*still listening on 127\.0\.0\.1:{aport} with the previous admin token")
        assert admin_get(aport, "/status", token=None)[0] == 401
        assert admin_get(aport, "/status")[0] == 200
    # once the address is free, the same config applies on the next reload
    assert b.reload(build(port=busy, tok=None))
    wait_refused(aport)
    assert admin_get(busy, "/status", token=None)[0] == 200


# ---- slow and hostile clients ----

class Dripper(threading.Thread):
    """Sends a request head that never ends, one byte per 0.5 s, until the server
    closes the connection (or 15 s pass); records when that happened."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent = 0
        self.cut_after = None
        self.answer = b""
        self.first_byte = threading.Event()

    def run(self):
        t0 = time.monotonic()
        data = b"GET /status HTTP/1.1\r\nX-Drip: " + b"a" * 100
        while time.monotonic() - t0 < 15:
            readable, _, _ = select.select([self.sock], [], [], 0.5)
            if readable:
                try:
                    d = self.sock.recv(65536)
                except ConnectionResetError:
                    d = b""
                self.answer += d
                if not d:
                    self.cut_after = time.monotonic() - t0
                    break
                continue
            try:
                self.sock.send(data[self.sent % len(data):][:1])
            except OSError:
                self.cut_after = time.monotonic() - t0
                break
            self.sent += 1
            self.first_byte.set()
        self.sock.close()


def test_a_dripping_client_delays_no_one_and_is_cut_at_the_request_deadline(admin):
    b, aport, build = admin()
    drip = Dripper(aport)
    drip.start()
    assert drip.first_byte.wait(5)
    for _ in range(3):
        t0 = time.monotonic()
        status, _, body = admin_get(aport, "/status")
        took = time.monotonic() - t0
        assert status == 200 and json.loads(body)["upstreams"]
        assert took < 2.0, f"/status took {took:.2f}s behind a dripping client"
    assert drip.is_alive(), "the dripping client should still be sending"
    drip.join(20)
    assert drip.cut_after is not None, "the dripping client was never cut"
    # cut at the whole-request deadline (5 s from accept), not per read
    assert REQUEST_DEADLINE_S - 0.5 <= drip.cut_after <= REQUEST_DEADLINE_S + 5, drip.cut_after
    assert drip.sent < 25
    assert drip.answer == b"", "a request that never completes gets no answer"


def test_a_client_that_never_reads_its_response_delays_no_one(bulwark):
    # 1500 groups with long names make /metrics (a histogram per group) several MB:
    # more than the socket buffers of a client that does not read can hold
    aport = free_port()
    groups = [f"g{i:04d}" + "x" * 200 for i in range(1500)]
    text = (f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\n'
            f'admin: {{address: "127.0.0.1:{aport}", token: "{TOKEN}"}}\nupstreams:\n' +
            "".join(f'  {g}:\n    servers: ["127.0.0.2:{20000 + i}"]\n'
                    for i, g in enumerate(groups)) +
            f"routes:\n  - upstream: {groups[0]}\n")
    b = bulwark(text)
    wait_port(aport)
    size = int(admin_get(aport, "/metrics", method="HEAD")[1]["content-length"])
    assert size > 5 << 20
    stalled = []
    try:
        sent_at = time.monotonic()
        for _ in range(2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", aport))
            s.sendall(f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            stalled.append(s)
        t0 = time.monotonic()
        status, _, body = admin_get(aport, "/status")
        took = time.monotonic() - t0
        assert status == 200 and len(json.loads(body)["upstreams"]) == 1500
        assert took < 3.0, f"/status took {took:.2f}s behind clients that do not read"
        # Past the response deadline (5 s) the stalled client is cut: reading now gets
        # what the buffers held, then the end, never the whole answer. Waiting out the
        # deadline is what this checks.
        time.sleep(max(0.0, sent_at + REQUEST_DEADLINE_S + 2 - time.monotonic()))
        got = read_all(stalled[0], timeout=20)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        assert len(got) < size, "the client that did not read was not cut"
    finally:
        for s in stalled:
            s.close()


def test_over_the_connection_bound_the_answer_is_immediate(admin):
    b, aport, build = admin()
    # Idle clients fill the bound; the ones beyond it are answered 503 (or closed) at
    # once, not after the request deadline. (A connection from the fixture may still
    # hold a slot for a moment, hence the margin of 5.)
    socks = [socket.create_connection(("127.0.0.1", aport), timeout=10)
             for _ in range(MAX_CONNECTIONS + 5)]
    try:
        answered = {}
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            waiting = [s for s in socks if s not in answered]
            for s in select.select(waiting, [], [], 0.1)[0]:
                answered[s] = read_all(s, timeout=5)
        assert len(answered) >= 3, f"only {len(answered)} answered over the bound"
        assert len(socks) - len(answered) <= MAX_CONNECTIONS
        for data in answered.values():
            if data:
                assert parse(data)[0] == 503, data
        assert any(answered.values()), "not one 503 over the bound"
    finally:
        for s in socks:
            s.close()
    # the slots free up as the idle clients leave
    deadline = time.monotonic() + 10
    while admin_get(aport, "/status")[0] != 200:
        assert time.monotonic() < deadline, "the admin listener did not recover"
        time.sleep(0.05)


def test_pipelined_requests_get_one_whole_answer_with_only_their_own_fields(admin):
    b, aport, build = admin()
    # the second request's token must not authorise the first
    with socket.create_connection(("127.0.0.1", aport), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\n\r\n"
                  b"GET /status HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        data = read_all(s)
    assert parse(data)[0] == 401
    assert data.count(b"HTTP/1.1") == 1, "one request per connection"
    # an authorised request followed by more requests and junk: the whole first answer
    # arrives (unread input is drained, not answered with a reset)
    with socket.create_connection(("127.0.0.1", aport), timeout=10) as s:
        auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + auth + b"\r\n" +
                  (b"GET /errors HTTP/1.1\r\n" + auth + b"\r\n") * 50 + b"x" * 30000)
        status, headers, body = parse(read_all(s))
    assert status == 200 and headers["connection"] == "close"
    assert len(body) == int(headers["content-length"])


def test_half_requests_split_reads_and_bad_request_lines(admin):
    b, aport, build = admin()
    # a head split across reads is put together
    with socket.create_connection(("127.0.0.1", aport), timeout=10) as s:
        s.sendall(b"GET /sta")
        time.sleep(0.2)  # a pause between the two halves is the point of the test
        s.sendall(b"tus HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\n\n")
        assert parse(read_all(s))[0] == 200
    assert admin_get(aport, "/" + "a" * 2000)[0] == 414
    for line in (b"GET /status HTTP/1.1x", b"GET  /status HTTP/1.1", b"GET /status HTTP/2.0",
                 b"GET /status HTTP/1.1 extra", b"GET status HTTP/1.1"):
        assert admin_get(aport, "", raw=line + b"\r\n\r\n")[0] == 400, line
    # a half request then close, and a NUL in the head, leave the listener serving
    with socket.create_connection(("127.0.0.1", aport)) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nAuthori")
    assert admin_get(aport, "", raw=b"GET /status HTTP/1.1\r\nX: a\x00b\r\n\r\n")[0] == 400
    assert admin_get(aport, "/status")[0] == 200
    assert b.proc.poll() is None
