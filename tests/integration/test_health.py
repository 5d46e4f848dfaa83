"""Active health checks, slow start, backup servers, all-down answers and panic_mode,
against the real binary and real origins: in-process origins whose /health answer a
test sets, and origin processes (origins/chaos.py) that a test kills, restarts or
stops with SIGSTOP. Intervals are short (100-200 ms); every wait has a generous
deadline, so the tests hold on a busy machine."""
import collections
import json
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN
from origins import Origin, free_port, wait_for
from origins.chaos import OriginProcess
from origins.faulty import fetch

INTERVAL_MS = 150
HEALTH = (f"{{path: /health, interval: {INTERVAL_MS}ms, timeout: 400ms, fails: 2, "
          "passes: 2}")


class HealthOrigin(Origin):
    """An in-process origin whose GET /health answers health_status (200 at first);
    everything else as Origin (the echo names the port that served it)."""

    def __init__(self):
        self.health_status = 200
        super().__init__()

    def respond(self, c, method, target, version, headers):
        if target.split("?")[0] == "/health":
            c.sock.sendall(f"HTTP/1.1 {self.health_status} X\r\nContent-Length: 0\r\n\r\n"
                           .encode())
            return True
        return super().respond(c, method, target, version, headers)

    def proxied(self):
        """Requests that were not health checks."""
        with self.lock:
            return [t for _, t, _ in self.requests if not t.startswith("/health")]


@pytest.fixture
def health_origin():
    started = []

    def start():
        o = HealthOrigin()
        started.append(o)
        return o

    yield start
    for o in started:
        o.close()


@pytest.fixture
def origin_procs(tmp_path):
    """origin_procs(n): n origin processes, stopped by PID at teardown."""
    started = []

    def start(n):
        for _ in range(n):
            name = f"o{len(started)}"
            started.append(OriginProcess(name, log_path=str(tmp_path / f"{name}.log")))
        return started[-n:]

    yield start
    for o in started:
        o.stop()


def config(servers, backups=(), health=HEALTH, extra="", admin_port=None, workers=2):
    srv = ", ".join(f'"{s}"' for s in servers)
    text = f'workers: {workers}\nlisten: ["127.0.0.1:{{port}}"]\n'
    if admin_port:
        text += f'admin: "127.0.0.1:{admin_port}"\n'
    text += (f"upstreams:\n  app:\n    servers: [{srv}]\n"
             "    connect_timeout: 1s\n    read_timeout: 2s\n")
    if backups:
        text += "    backup: [" + ", ".join(f'"{s}"' for s in backups) + "]\n"
    if health:
        text += f"    health: {health}\n"
    return text + extra + "routes:\n  - upstream: app\n"


def served_port(resp):
    assert resp.status == 200, (resp.status, resp.head)
    return json.loads(resp.data)["port"]



def down_line(b, server, timeout=10.0):
    return b.wait_log(rf"\[warn\] upstream \"app\" server {re.escape(server)} is down: .*",
                      timeout=timeout).group(0)


def up_line(b, server, timeout=10.0):
    return b.wait_log(rf"upstream \"app\" server {re.escape(server)} is up again.*",
                      timeout=timeout).group(0)


def admin_get(port, path):
    r = fetch(port, path)
    return r.status, r.data.decode()


def server_status(aport, server):
    _, body = admin_get(aport, "/status")
    for s in json.loads(body)["upstreams"]["app"]["servers"]:
        if s["server"] == server:
            return s
    raise AssertionError(f"{server} not in /status: {body}")


def server_up_gauge(aport, server):
    _, text = admin_get(aport, "/metrics")
    m = re.search(r'^bulwark_upstream_server_up\{group="app",server="%s"\} (\d)$'
                  % re.escape(server), text, re.M)
    assert m, text
    return int(m.group(1))


class KeepAliveLoad:
    """Client threads sending GET /echo on keep-alive connections until stop();
    each result is (time sent, status, port that served it or None, error)."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.results = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        sock = None
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                r = fetch(self.port, "/echo", sock=sock)
                port = json.loads(r.data)["port"] if r.status == 200 else None
                err = None if r.status == 200 else f"{r.status} {r.get('proxy-status')}"
                if r.eof or not r.complete:
                    sock.close()
                    sock = None
            except (OSError, ValueError) as e:
                port, err = None, repr(e)
                r = None
                if sock is not None:
                    sock.close()
                sock = None
            with self.lock:
                self.results.append((t0, r.status if r else None, port, err))
        if sock is not None:
            sock.close()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def since(self, t):
        with self.lock:
            return [x for x in self.results if x[0] >= t]

    def wait_count(self, n, after, timeout=20.0):
        wait_for(lambda: len(self.since(after)) >= n, f"{n} requests after {after}", timeout)


def test_killed_backend_is_ejected_and_comes_back_with_slow_start(bulwark, origin_procs):
    """Kill one of two backends under keep-alive load: after one health interval no
    GET fails, and the log says why it went down; restarted, it is back within
    `passes` intervals and its share grows over slow_start."""
    o0, o1 = origin_procs(2)
    slow_start_s = 3
    b = bulwark(config([o0.addr, o1.addr], extra=f"    slow_start: {slow_start_s}s\n"))
    load = KeepAliveLoad(b.port)
    try:
        t_start = time.monotonic()
        load.wait_count(200, t_start)
        ports = collections.Counter(p for _, _, p, _ in load.since(t_start))
        assert ports[o0.port] > 50 and ports[o1.port] > 50, ports

        t_kill = time.monotonic()
        o1.kill9()
        line = down_line(b, o1.addr)
        assert 'cause="connection_refused"' in line, line
        assert "state=down" in line and "group=app" in line, line
        t_down = time.monotonic()
        load.wait_count(300, t_down)
        # GETs are retried on the other server when a connect is refused or a
        # pooled connection dies: after one interval, not one fails.
        after = load.since(t_kill + INTERVAL_MS / 1000.0)
        failed = [x for x in after if x[1] != 200]
        assert not failed, failed[:5]
        assert all(p == o0.port for _, _, p, _ in load.since(t_down + 0.1)), \
            collections.Counter(p for _, _, p, _ in load.since(t_down + 0.1))

        t_restart = time.monotonic()
        o1.start()
        line = up_line(b, o1.addr)
        t_up = time.monotonic()
        # passes (2) intervals, with room for a busy machine
        assert t_up - t_restart < 2 * INTERVAL_MS / 1000.0 + 3.0, t_up - t_restart
        assert "state=up" in line

        # slow start: o1's share in the first moments is small, then grows to half
        first_end = t_up + 0.6
        late_start = t_up + slow_start_s + 0.3
        load.wait_count(200, late_start, timeout=30)
        first = [p for t, _, p, _ in load.since(t_up) if t < first_end]
        late = [p for _, _, p, _ in load.since(late_start)]
        share = lambda ps: sum(1 for p in ps if p == o1.port) / max(1, len(ps))  # noqa: E731
        assert len(first) > 20, len(first)
        assert share(first) < 0.3, (share(first), len(first))
        assert share(late) > 0.35, (share(late), len(late))
        assert not [x for x in load.since(t_restart) if x[1] != 200]
    finally:
        load.stop()


def test_stopped_backend_is_ejected_by_the_timeout(bulwark, origin_procs):
    """A SIGSTOPped backend accepts connections (the kernel does) but never answers:
    the check's timeout catches it."""
    o0, o1 = origin_procs(2)
    b = bulwark(config([o0.addr, o1.addr],
                       health="{path: /health, interval: 150ms, timeout: 300ms, fails: 2, "
                              "passes: 1}"))
    o1.stall()
    try:
        line = down_line(b, o1.addr)
        assert re.search(r'cause="[a-z_]*timeout"', line), line
        for i in range(10):
            r = fetch(b.port, f"/echo?i={i}", timeout=10)
            assert served_port(r) == o0.port
            assert r.elapsed < 1.5, r.elapsed
    finally:
        o1.resume()
    up_line(b, o1.addr)


def test_backend_answering_503_on_health_is_ejected(bulwark, health_origin):
    """/health answering 503 takes the server down (cause "status 503"): the log,
    /status, /metrics and `bulwark status` say so; a 200 brings it back."""
    o0, o1 = health_origin(), health_origin()
    aport = free_port()
    b = bulwark(config([o0.addr, o1.addr], admin_port=aport))
    wait_for(lambda: server_status(aport, o1.addr)["balancer"]["consecutive_passes"] >= 1,
             "a first passed check")
    st = server_status(aport, o1.addr)
    assert st["state"] == "up" and st["backup"] is False
    assert st["balancer"]["health_checked"] is True
    assert server_up_gauge(aport, o1.addr) == 1

    o1.health_status = 503
    line = down_line(b, o1.addr)
    assert 'cause="status 503"' in line and "the last with status 503" in line, line
    st = server_status(aport, o1.addr)
    assert st["state"] == "down"
    assert st["balancer"]["up"] is False
    assert st["balancer"]["change_cause"] == "status 503"
    assert st["balancer"]["consecutive_failures"] >= 2
    assert server_up_gauge(aport, o1.addr) == 0
    assert server_up_gauge(aport, o0.addr) == 1
    table = subprocess.run([BIN, "status", "--admin", f"127.0.0.1:{aport}"],
                           capture_output=True, text=True, timeout=30).stdout
    row = [l for l in table.splitlines() if o1.addr in l]
    assert row and "down (status 503)" in row[0], table

    before = len(o1.proxied())
    for i in range(10):
        assert served_port(fetch(b.port, f"/echo?i={i}")) == o0.port
    assert len(o1.proxied()) == before

    o1.health_status = 200
    up_line(b, o1.addr)
    assert server_up_gauge(aport, o1.addr) == 1
    ports = {served_port(fetch(b.port, f"/echo?j={i}")) for i in range(10)}
    assert o1.port in ports


def test_all_down_answers_503_at_once_without_a_connect(bulwark, health_origin):
    o0, o1 = health_origin(), health_origin()
    b = bulwark(config([o0.addr, o1.addr]))
    o0.health_status = o1.health_status = 503
    down_line(b, o0.addr)
    down_line(b, o1.addr)
    before = len(o0.proxied()) + len(o1.proxied())
    for i in range(5):
        r = fetch(b.port, f"/echo?i={i}", headers=[("Accept", "text/html")])
        assert r.status == 503, r.head
        assert r.get("proxy-status") == 'bulwark; error=destination_unavailable'
        assert r.elapsed < 0.5, r.elapsed
        assert b"All servers of the upstream group are down" in r.data, r.data
    assert len(o0.proxied()) + len(o1.proxied()) == before
    line = b.wait_log(r'no server of upstream "app" is up: all 2 servers are down.*').group(0)
    assert "cause=destination_unavailable" in line
    access = b.wait_log(r'"GET /echo\?i=4 HTTP/1.1" 503 .*', what="access").group(0)
    assert "attempts=0" in access and "error=destination_unavailable" in access, access


def test_panic_mode_tries_the_servers_anyway(bulwark, health_origin):
    o0, o1 = health_origin(), health_origin()
    b = bulwark(config([o0.addr, o1.addr], extra="    panic_mode: true\n"))
    o0.health_status = o1.health_status = 503
    down_line(b, o0.addr)
    down_line(b, o1.addr)
    ports = {served_port(fetch(b.port, f"/echo?i={i}")) for i in range(10)}
    assert ports == {o0.port, o1.port}


def test_backup_takes_over_and_steps_back(bulwark, health_origin):
    p, bk = health_origin(), health_origin()
    aport = free_port()
    b = bulwark(config([p.addr], backups=[bk.addr], admin_port=aport))
    assert server_status(aport, bk.addr)["backup"] is True
    for i in range(5):
        assert served_port(fetch(b.port, f"/echo?a={i}")) == p.port
    # backups are checked too
    wait_for(lambda: server_status(aport, bk.addr)["balancer"]["consecutive_passes"] >= 1,
             "a check of the backup")

    p.health_status = 503
    down_line(b, p.addr)
    for i in range(5):
        assert served_port(fetch(b.port, f"/echo?b={i}")) == bk.port

    p.health_status = 200
    up_line(b, p.addr)
    for i in range(5):
        assert served_port(fetch(b.port, f"/echo?c={i}")) == p.port


def test_reload_keeps_the_state_of_servers_that_stay(bulwark, health_origin):
    o0, o1, o2 = health_origin(), health_origin(), health_origin()
    aport = free_port()
    # fails: 2, passes: 3 and a slow interval: a state rebuilt from scratch would
    # show up as o1 "up" (the default) right after the reload
    health = "{path: /health, interval: 300ms, timeout: 400ms, fails: 2, passes: 3}"
    b = bulwark(config([o0.addr, o1.addr], health=health, admin_port=aport))
    o1.health_status = 503
    down_line(b, o1.addr)
    failures = server_status(aport, o1.addr)["balancer"]["consecutive_failures"]

    o2.health_status = 503
    assert b.reload(config([o0.addr, o1.addr, o2.addr], health=health, admin_port=aport,
                           extra="    retries: 1\n"))
    st = server_status(aport, o1.addr)
    assert st["state"] == "down"
    assert st["balancer"]["consecutive_failures"] >= failures
    for i in range(6):
        assert served_port(fetch(b.port, f"/echo?i={i}")) != o1.port
    # the new server is checked from the reload on
    down_line(b, o2.addr)
    assert "is up again" not in b.error_log()

    # health section removed: nothing checks o1 any more, so it is marked up
    assert b.reload(config([o0.addr, o1.addr], health=None, admin_port=aport))
    b.wait_log(rf"server {re.escape(o1.addr)} is no longer health checked: marked up")
    assert server_status(aport, o1.addr)["state"] == "up"
    assert o1.port in {served_port(fetch(b.port, f"/echo?j={i}")) for i in range(6)}
