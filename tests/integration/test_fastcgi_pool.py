"""FastCGI connection pools across workers: a PHP-FPM child stays with a kept-alive
connection while it is idle, so in a FastCGI group max_conns counts connections (idle ones
too) across every worker, the slots go to the oldest waiter of any worker, and idle
connections of one worker are closed when another needs their slot. PHP-FPM (pm static,
max_children 2) sits behind a relay that counts the connections open at once: what PHP-FPM
sees. Requests beyond the cap wait in bulwark's queue (or get its 503), never in PHP-FPM's
backlog (a 504). HEAD and 204 answers read on to END_REQUEST and keep the connection."""
import http.client
import os
import socket
import threading

import pytest

from test_fastcgi import FPM, Fpm

pytestmark = pytest.mark.skipif(not os.path.exists(FPM), reason="php-fpm8.2 is not installed")

SCRIPTS = {
    "work.php": r"""<?php usleep(20000); echo "done ", getmypid();""",
    "slow.php": r"""<?php usleep(300000); echo "slow";""",
    "empty.php": r"""<?php http_response_code(204); echo "dropped";""",
}


class GaugeRelay:
    """A unix-socket relay in front of php-fpm that counts the connections it accepts and
    the most that were open at once: at each accept, the earlier connections whose peer has
    not closed (a peek sees the FIN that bulwark's close() queued before it connected
    again, whether or not a relay thread has run since)."""

    def __init__(self, path, target):
        self.target = target
        self.accepted = self.max_open = 0
        self.conns = []
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(64)
        threading.Thread(target=self.run, daemon=True).start()

    def live(self):
        n = 0
        for c in self.conns:
            try:
                if c.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    continue
            except BlockingIOError:
                pass
            except OSError:
                continue
            n += 1
        return n

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns = [x for x in self.conns if x.fileno() >= 0]
            self.max_open = max(self.max_open, self.live() + 1)
            self.accepted += 1
            self.conns.append(c)
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            threading.Thread(target=self.pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c), daemon=True).start()

    @staticmethod
    def pipe(a, z):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                z.sendall(d)
        except OSError:
            pass
        for s in (a, z):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.srv.close()


@pytest.fixture
def fpm(tmp_path):
    f = Fpm(tmp_path, children=2)
    for name, text in SCRIPTS.items():
        (f.www / name).write_text(text)
    f.start()
    yield f
    f.stop()


@pytest.fixture
def relay(tmp_path, fpm):
    r = GaugeRelay(str(tmp_path / "relay.sock"), fpm.sock)
    yield r
    r.close()


def config(tmp_path, root, workers=2, upstream_extra="    max_conns: 2\n"):
    return (f'workers: {workers}\nlisten: ["127.0.0.1:{{port}}"]\n'
            f"upstreams:\n  php:\n    protocol: fastcgi\n"
            f'    servers: ["unix:{tmp_path}/relay.sock"]\n'
            f"    read_timeout: 3s\n    retries: 0\n{upstream_extra}"
            f"routes:\n  - upstream: php\n    root: {root}\n")


def run_clients(port, clients, requests, path, statuses, errors):
    """clients threads, each one keep-alive connection sending requests GETs."""

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(requests):
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                statuses.append((r.status, r.getheader("Proxy-Status") or "", body[:40]))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"


def test_idle_connections_of_one_worker_do_not_starve_the_other(bulwark, fpm, relay, tmp_path):
    b = bulwark(config(tmp_path, fpm.www, upstream_extra=(
        "    max_conns: 2\n    max_pending: 200\n    queue_timeout: 20s\n")))
    statuses, errors = [], []
    # Two bursts: after the first, each worker's pool holds idle connections (each one a
    # PHP-FPM child); the second finds them there. 16 client connections land on both
    # workers (SO_REUSEPORT; all on one: odds 2^-15).
    for _ in range(2):
        run_clients(b.port, 16, 12, "/work.php", statuses, errors)
    assert not errors, errors[:3]
    assert len(statuses) == 2 * 16 * 12
    bad = [s for s in statuses if s[0] != 200]
    assert not bad, bad[:5]
    assert relay.max_open <= 2, f"php-fpm saw {relay.max_open} connections at once"
    # (reuse itself is test_head_and_204_keep_the_connection's: while both workers have
    # waiters, slots change hands by a close, so the connect count here is no measure)
    assert "http_response_timeout" not in b.error_log()


def test_over_max_pending_is_503_from_bulwarks_queue(bulwark, fpm, relay, tmp_path):
    b = bulwark(config(tmp_path, fpm.www, upstream_extra=(
        "    max_conns: 2\n    max_pending: 2\n    queue_timeout: 20s\n")))
    statuses, errors = [], []
    run_clients(b.port, 12, 3, "/slow.php", statuses, errors)
    assert not errors, errors[:3]
    codes = [s[0] for s in statuses]
    assert set(codes) <= {200, 503}, statuses
    assert 200 in codes and 503 in codes, codes
    for status, proxy_status, _ in statuses:
        if status == 503:
            assert "error=connection_limit_reached" in proxy_status, proxy_status
    assert relay.max_open <= 2, f"php-fpm saw {relay.max_open} connections at once"
    b.wait_log(r"upstream \"php\": every server has max_conns=2 .*max_pending=2 wait already; "
               r"answered 503 cause=connection_limit_reached")


def test_fastcgi_group_has_a_default_cap(bulwark, tmp_path):
    """Without max_conns, a FastCGI group holds at most 5 connections (pm.max_children of
    the www.conf PHP ships): with 6 children and 8 clients, 5 are used, none waits in
    PHP-FPM's backlog."""
    f = Fpm(tmp_path, children=6)
    for name, text in SCRIPTS.items():
        (f.www / name).write_text(text)
    f.start()
    r = GaugeRelay(str(tmp_path / "relay.sock"), f.sock)
    try:
        b = bulwark(config(tmp_path, f.www, workers=1, upstream_extra="    max_pending: 200\n"))
        statuses, errors = [], []
        run_clients(b.port, 8, 2, "/slow.php", statuses, errors)
        assert not errors and [s[0] for s in statuses] == [200] * 16, (errors, statuses)
        assert r.max_open == 5, r.max_open
    finally:
        r.close()
        f.stop()


def raw_exchange(sock, request, head_only=False):
    """Send one request on sock and read its response (no body when head_only)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        d = sock.recv(65536)
        assert d, f"closed after {data!r}"
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if head_only or status in (204, 304):
        return status, fields, rest
    if "content-length" in fields:
        n = int(fields["content-length"])
        while len(rest) < n:
            d = sock.recv(65536)
            assert d
            rest += d
        return status, fields, rest
    while not rest.endswith(b"0\r\n\r\n"):
        d = sock.recv(65536)
        assert d
        rest += d
    return status, fields, rest


def test_head_and_204_keep_the_connection(bulwark, fpm, relay, tmp_path):
    b = bulwark(config(tmp_path, fpm.www, workers=1))
    with socket.create_connection(("127.0.0.1", b.port), timeout=20) as s:
        for i in range(5):
            status, fields, rest = raw_exchange(
                s, b"HEAD /work.php HTTP/1.1\r\nHost: php.test\r\n\r\n", head_only=True)
            assert status == 200 and rest == b"", (status, rest)
            status, fields, rest = raw_exchange(
                s, b"GET /empty.php HTTP/1.1\r\nHost: php.test\r\n\r\n")
            assert status == 204 and rest == b"", (status, rest)
            status, fields, rest = raw_exchange(
                s, b"GET /work.php HTTP/1.1\r\nHost: php.test\r\n\r\n")
            assert status == 200 and b"done" in rest, (status, rest)
    # 15 exchanges, one after another: one PHP-FPM connection carried them all
    assert relay.accepted == 1, relay.accepted
    assert "closed instead of pooled" not in b.error_log()
