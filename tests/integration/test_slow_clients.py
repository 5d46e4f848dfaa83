"""Slow clients beyond header_timeout: client.min_body_rate, max_header_connections and
reclaim_idle_at, each at its exact limit with raw sockets; bulwark's own descriptor limit;
and slowhttptest's slowloris and slow-body attacks (1,000 connections each, on 127.0.0.1
only) while a normal client keeps getting answers within 100 ms (p99)."""
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import simple_config
from origins import (client, free_port, is_closed, read_request, read_response, wait_for,
                     wait_port)


def metrics_text(aport):
    with urllib.request.urlopen(f"http://127.0.0.1:{aport}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(aport, name, labels=""):
    """The value of one sample (labels as written, e.g. 'defence="min_body_rate"')."""
    text = metrics_text(aport)
    key = f"{name}{{{labels}}}" if labels else name
    m = re.search(r"^" + re.escape(key) + r" (\S+)$", text, re.M)
    assert m, f"no {key} in /metrics:\n{text}"
    return float(m.group(1))


def defence(aport, name):
    return metric(aport, "bulwark_client_defence_total", f'defence="{name}"')


def header_conns(aport):
    return metric(aport, "bulwark_client_header_connections")


def start(bulwark, origin_addrs, extra_top="", workers=1):
    aport = free_port()
    config = simple_config(origin_addrs, extra_top=f'admin: "127.0.0.1:{aport}"\n' + extra_top)
    b = bulwark(config.replace("workers: 1\n", f"workers: {workers}\n", 1))
    return b, aport


def post_head(length, target="/sink"):
    return (f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


def send_at_rate(sock, bytes_per_s, seconds, stop, piece_s=0.1):
    """Send bytes_per_s * piece_s bytes every piece_s seconds on an absolute schedule (a
    late piece is made up by the next), for seconds or until stop is set or a send fails."""
    n = int(bytes_per_s * piece_s)
    t0 = time.monotonic()
    for i in range(int(round(seconds / piece_s))):
        if stop.wait(max(0.0, t0 + i * piece_s - time.monotonic())):
            return
        try:
            sock.sendall(b"x" * n)
        except OSError:
            return


# ---- min_body_rate: 1000 bytes per second after a grace of one second ----

RATE = "client:\n  min_body_rate: {bytes: 1000, per: 1s}\n  body_timeout: 30s\n"


def test_body_just_above_min_body_rate_is_not_cut(bulwark, origin):
    o = origin()
    b, aport = start(bulwark, [o.addr], RATE)
    seconds, rate = 5.0, 1100  # 110% of the minimum, for five times the grace
    length = int(rate * 0.1) * int(seconds / 0.1)
    c = client(b.port, timeout=20)
    t0 = time.monotonic()
    c.sock.sendall(post_head(length))
    stop = threading.Event()
    send_at_rate(c.sock, rate, seconds, stop)
    r = read_response(c)
    elapsed = time.monotonic() - t0
    assert r.status == 200, f"{r!r}\n{b.error_log()[-2000:]}"
    assert r.json()["length"] == length, r.body
    assert elapsed >= seconds - 0.3, f"the body took {elapsed:.2f}s, not the {seconds}s paced"
    assert defence(aport, "min_body_rate") == 0
    assert "defence=min_body_rate" not in b.error_log()


def test_body_below_min_body_rate_gets_408_when_its_credit_runs_out(bulwark, origin):
    o = origin()
    b, aport = start(bulwark, [o.addr], RATE)
    rate = 800  # 80% of the minimum: 1 s of grace lasts 1 / (1 - 0.8) = 5 s (5.4 s with
    #              the first piece sent at once)
    c = client(b.port, timeout=30)
    t0 = time.monotonic()
    c.sock.sendall(post_head(rate * 30))
    stop = threading.Event()
    t = threading.Thread(target=send_at_rate, args=(c.sock, rate, 30, stop), daemon=True)
    t.start()
    try:
        r = read_response(c)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
    assert r.status == 408, r
    assert 4.5 <= elapsed <= 9.0, f"408 after {elapsed:.2f}s; the rate says about 5.4s"
    assert "error=http_request_error" in r.header("Proxy-Status", "")
    assert is_closed(c, timeout=10)
    assert defence(aport, "min_body_rate") == 1
    m = b.wait_log(r"cut 1 request\(s\) whose body came below client\.min_body_rate \(1000 bytes "
                   r"per 1000 ms\), the last from 127\.0\.0\.1: \d+ bytes in \d+ ms; "
                   r"defence=min_body_rate closed=1")
    print(m.group(0))
    assert re.search(r'"POST /sink HTTP/1\.1" 408 ', "\n".join(b.access_lines()))


def answer_before_the_body(c, origin):
    """Answer the head at once with the start of a chunked body, then read (and drop) the
    request body until the proxy closes."""
    read_request(c)
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    c.sock.settimeout(30)
    while c.sock.recv(65536):
        pass


def test_slow_body_after_the_response_started_is_cut(bulwark, origin):
    o = origin(handler=answer_before_the_body)
    b, aport = start(bulwark, [o.addr], RATE)
    c = client(b.port, timeout=30)
    t0 = time.monotonic()
    c.sock.sendall(post_head(200 * 30))
    stop = threading.Event()
    t = threading.Thread(target=send_at_rate, args=(c.sock, 200, 30, stop), daemon=True)
    t.start()
    try:
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert c.read_until(b"hello\r\n").endswith(b"5\r\nhello\r\n")
        # 20% of the rate: the grace of 1 s lasts 1.25 s; then the response is cut short
        assert is_closed(c, timeout=15), f"not cut: {c.buf!r}"
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
    assert 0.9 <= elapsed <= 5.0, f"cut after {elapsed:.2f}s; the rate says about 1.3s"
    assert defence(aport, "min_body_rate") == 1
    b.wait_log(r"defence=min_body_rate closed=1")


def test_min_body_rate_off_lets_a_slow_body_through(bulwark, origin):
    o = origin()
    b, aport = start(bulwark, [o.addr], "client:\n  min_body_rate: {bytes: 0}\n")
    c = client(b.port, timeout=20)
    c.sock.sendall(post_head(300))
    stop = threading.Event()
    send_at_rate(c.sock, 100, 3.0, stop)  # 100 B/s: far below any useful minimum
    r = read_response(c)
    assert r.status == 200, r
    assert defence(aport, "min_body_rate") == 0


# ---- max_header_connections: the oldest partial head goes ----

PARTIAL = b"GET /echo HTTP/1.1\r\nHost: t\r\n"


def test_max_header_connections_closes_the_oldest_partial_head(bulwark, origin):
    o = origin()
    b, aport = start(bulwark, [o.addr],
                     "client:\n  max_header_connections: 5\n  header_timeout: 60s\n")
    conns = []
    for i in range(5):
        c = client(b.port, timeout=10)
        c.sock.sendall(PARTIAL)
        conns.append(c)
        wait_for(lambda: header_conns(aport) == i + 1, f"{i + 1} connections in the header phase")
    # at the cap: nobody is closed
    assert defence(aport, "max_header_connections") == 0
    assert not is_closed(conns[0], timeout=0.2)

    c6 = client(b.port, timeout=10)
    c6.sock.sendall(PARTIAL)
    assert is_closed(conns[0], timeout=10), "the oldest partial head was not closed"
    assert defence(aport, "max_header_connections") == 1
    assert header_conns(aport) == 5
    b.wait_log(r"closed 1 connection\(s\) still sending their request header, oldest first: "
               r"6 were waiting, over max_header_connections=5; "
               r"defence=max_header_connections closed=1")
    # the others were kept: each finishes its head and is answered
    for c in conns[1:] + [c6]:
        c.sock.sendall(b"\r\n")
        r = read_response(c)
        assert r.status == 200, r
    assert wait_for(lambda: header_conns(aport) == 0, "the header phase to empty")


# ---- reclaim_idle_at: idle keep-alive connections make room under pressure ----

def get(c, target="/echo"):
    c.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_response(c)


def test_reclaim_idle_at_closes_the_oldest_idle_keepalive_connection(bulwark, origin):
    o = origin()
    # capacity 10, mark 50%: from 5 open connections, each new one closes an idle one
    b, aport = start(bulwark, [o.addr], "max_connections: 10\nclient:\n  reclaim_idle_at: 50%\n")
    idle = []
    for _ in range(5):
        c = client(b.port, timeout=10)
        assert get(c).status == 200
        idle.append(c)
    # the fifth came with 4 open: under the mark
    assert defence(aport, "reclaim_idle_at") == 0
    assert not is_closed(idle[0], timeout=0.2)

    c6 = client(b.port, timeout=10)
    assert get(c6).status == 200
    assert is_closed(idle[0], timeout=10), "the oldest idle connection was not closed"
    assert defence(aport, "reclaim_idle_at") == 1
    b.wait_log(r"closed 1 idle keep-alive connection\(s\), oldest first, to make room: 5 client "
               r"connections were open, at the reclaim_idle_at mark of 5; "
               r"defence=reclaim_idle_at closed=1")
    for c in idle[1:] + [c6]:
        assert get(c).status == 200, "a kept-alive connection that was not the oldest"
    assert defence(aport, "reclaim_idle_at") == 1


def test_a_busy_connection_is_never_reclaimed(bulwark, origin):
    o = origin()
    b, aport = start(bulwark, [o.addr], "max_connections: 4\nclient:\n  reclaim_idle_at: 25%\n")
    # one request in flight (its body not all sent), then new connections past the mark
    busy = client(b.port, timeout=10)
    busy.sock.sendall(post_head(10))
    wait_for(lambda: o.requests or o.connections, "the busy request to reach the origin")
    others = []
    for _ in range(2):
        c = client(b.port, timeout=10)
        assert get(c).status == 200
        others.append(c)
    # past the mark, the second new connection closed the first (idle), not the busy one
    assert is_closed(others[0], timeout=10)
    assert defence(aport, "reclaim_idle_at") == 1
    busy.sock.sendall(b"0123456789")
    r = read_response(busy)
    assert r.status == 200, r


# ---- bulwark's descriptor limit ----

def proc_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_soft_fd_limit_is_raised_to_the_hard_limit(bulwark, origin, tmp_path, monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}: nothing to raise")
    o = origin()
    # Only bulwark gets the low soft limit (a wrapper that execs it): lowering this
    # test process's own limit would make its next open fail once it holds 256.
    import conftest
    wrapper = tmp_path / "low-nofile.sh"
    wrapper.write_text(f'#!/bin/sh\nulimit -Sn {low} || exit 99\nexec "{conftest.BIN}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "BIN", str(wrapper))
    b, _ = start(bulwark, [o.addr])  # the wrapper's pid becomes bulwark's (exec)
    bsoft, bhard = proc_nofile(b.pid)
    assert bhard == hard and bsoft == bhard, (bsoft, bhard)
    b.wait_log(rf"raised the open-file limit from {low} to the hard limit {hard}")


# ---- slowhttptest: 1,000 connections while a normal client keeps going ----

ATTACK_CONNS = 1000
ATTACK_SECONDS = 20


def raise_own_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < {need}: cannot open the attack's connections")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # slowhttptest inherits it


class Attack:
    """slowhttptest against 127.0.0.1 only, bounded by -l, stopped by PID at the end."""

    def __init__(self, tmp_path, mode_args, port, target):
        exe = shutil.which("slowhttptest")
        assert exe, "slowhttptest is not installed (scripts/deps.sh installs it)"
        self.out_path = os.path.join(str(tmp_path), "slowhttptest.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [exe, *mode_args, "-c", str(ATTACK_CONNS), "-r", "500", "-l", str(ATTACK_SECONDS),
             "-p", "5", "-u", f"http://127.0.0.1:{port}{target}"],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def running(self):
        return self.proc.poll() is None

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f.read())

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.out.close()


class NormalClient:
    """A new connection per request (the case the header cap must not hurt), one request
    every 20 ms, each with its latency; runs until stop()."""

    def __init__(self, port, target="/echo"):
        self.port, self.target = port, target
        self.latencies, self.failures = [], []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                c = client(self.port, timeout=5)
                try:
                    c.sock.sendall(f"GET {self.target} HTTP/1.1\r\nHost: t\r\n"
                                   "Connection: close\r\n\r\n".encode())
                    r = read_response(c)
                finally:
                    c.sock.close()
                if r.status != 200:
                    self.failures.append(f"status {r.status}")
                else:
                    self.latencies.append(time.monotonic() - t0)
            except (OSError, EOFError, ValueError) as e:
                self.failures.append(repr(e))
            self.stop_event.wait(0.02)

    def stop(self):
        self.stop_event.set()
        self.thread.join(10)

    def p99(self):
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(len(s) * 0.99))]


def check_normal_client(nc, what):
    lat = sorted(nc.latencies)
    print(f"{what}: {len(lat)} requests, p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
          f"p99 {nc.p99() * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    assert not nc.failures, f"normal requests failed during the {what}: {nc.failures[:10]}"
    assert len(lat) >= 100, f"only {len(lat)} normal requests during the {what}"
    assert nc.p99() < 0.100, f"p99 {nc.p99() * 1000:.1f} ms during the {what}"


def test_slowloris_of_1000_connections_does_not_slow_a_normal_client(bulwark, origin, tmp_path):
    raise_own_fd_limit(ATTACK_CONNS + 500)
    o = origin()
    # capacity 1200: max_header_connections is 600 (auto), reclaim_idle_at 1080
    b, aport = start(bulwark, [o.addr], "max_connections: 1200\n", workers=2)
    attack = Attack(tmp_path, ["-H", "-i", "3", "-x", "24"], b.port, "/echo")
    nc = None
    peak = 0
    try:
        # the attack is under way once it holds hundreds of partial heads
        wait_for(lambda: header_conns(aport) >= 300 or not attack.running(),
                 "slowloris connections in the header phase", timeout=30)
        assert attack.running(), attack.output()[-3000:]
        nc = NormalClient(b.port)
        deadline = time.monotonic() + ATTACK_SECONDS - 5
        while attack.running() and time.monotonic() < deadline:
            peak = max(peak, header_conns(aport))
            time.sleep(0.2)  # sampling pace, not a wait for a condition
        nc.stop()
    finally:
        if nc:
            nc.stop()
        attack.stop()
    print(attack.output()[-600:])
    check_normal_client(nc, "slowloris")
    closed = defence(aport, "max_header_connections")
    print(f"header-phase peak {peak:.0f}, closed by max_header_connections {closed:.0f}")
    assert closed > 0, "1,000 partial heads against a cap of 600 closed none"
    assert peak <= 600 + 2, f"{peak} connections in the header phase, cap 600 (+1 per worker)"
    # one line a second per worker at most, with counts, not one per connection
    lines = b.error_log().count("defence=max_header_connections")
    assert 1 <= lines <= 2 * (ATTACK_SECONDS + 15), f"{lines} log lines for {closed} closes"
    assert lines < closed or closed <= 2
    assert b.proc.poll() is None


SINK = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(4096)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
"""


def test_slow_body_of_1000_connections_does_not_slow_a_normal_client(bulwark, origin, tmp_path):
    raise_own_fd_limit(ATTACK_CONNS + 500)
    o = origin()
    # The attack's bodies go to an upstream of their own (one process that reads and never
    # answers): bulwark streams bodies, so each holds an upstream connection until it is
    # cut, and an origin thread each in this process would measure Python, not bulwark.
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port)],
                            stdin=subprocess.DEVNULL)
    nc = None
    attack = None
    try:
        wait_port(sink_port, timeout=20, proc=sink)
        aport = free_port()
        config = (f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\nadmin: "127.0.0.1:{aport}"\n'
                  "max_connections: 1200\n"  # min_body_rate: the default, 1 KiB per 10 s
                  f'upstreams:\n  app:\n    servers: ["{o.addr}"]\n'
                  f'  uploads:\n    servers: ["127.0.0.1:{sink_port}"]\n'
                  "routes:\n  - match: {path: /upload}\n    upstream: uploads\n"
                  "  - upstream: app\n")
        b = bulwark(config)
        attack = Attack(tmp_path, ["-B", "-i", "2", "-x", "10", "-s", "8192", "-t", "POST"],
                        b.port, "/upload")
        wait_for(lambda: metric(aport, "bulwark_client_connections") >= 300
                 or not attack.running(), "slow-body connections open", timeout=30)
        assert attack.running(), attack.output()[-3000:]
        nc = NormalClient(b.port)
        # the first slow bodies are cut after about 10 s (the default rate's grace)
        wait_for(lambda: defence(aport, "min_body_rate") >= 100 or not attack.running(),
                 "slow bodies cut by min_body_rate", timeout=ATTACK_SECONDS + 10)
        while attack.running():
            time.sleep(0.2)  # let the attack run its course (-l bounds it)
        nc.stop()
        cut = defence(aport, "min_body_rate")
    finally:
        if nc:
            nc.stop()
        if attack:
            attack.stop()
        if sink.poll() is None:
            os.kill(sink.pid, signal.SIGKILL)
        sink.wait()
    print(attack.output()[-600:])
    check_normal_client(nc, "slow-body attack")
    print(f"slow bodies cut by min_body_rate: {cut:.0f}")
    assert cut >= 500, f"only {cut} of {ATTACK_CONNS} slow bodies were cut"
    access = "\n".join(b.access_lines())
    assert len(re.findall(r'"POST /upload HTTP/1\.1" 408 ', access)) >= 500
    lines = b.error_log().count("defence=min_body_rate")
    assert 1 <= lines <= 2 * (ATTACK_SECONDS + 15), f"{lines} log lines for {cut} cuts"
    assert b.proc.poll() is None
