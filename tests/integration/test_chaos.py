"""Chaos under steady load: origins killed with SIGKILL and restarted, stalled
(SIGSTOP), their connections dropped, bulwark reloaded again and again.

Every response must be correct (200 with exactly the body the origin sent), a
proper gateway error (502/503/504 whose Proxy-Status names a cause of that status),
or a 200 whose body bulwark visibly cut (the design's answer to an upstream that
fails mid-body). No client waits longer than the configured timeouts allow, and
bulwark survives it all and exits 0 on SIGTERM.

Origins are separate processes (origins/chaos.py), so SIGKILL and SIGSTOP are real.
"""
import collections
import os
import random
import threading
import time

import pytest

from origins.chaos import (OriginProcess, connect, fetch_blob, judge, post_sink,
                           sink_check)

CONNECT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 1.0
RETRIES = 1
# Longest a request may wait for its response header: every attempt (the retries,
# plus the free one for a dead pooled connection) may spend connect_timeout, the
# last one also send_timeout and read_timeout.
HEADER_BOUND_S = (RETRIES + 2) * CONNECT_TIMEOUT_S + SEND_TIMEOUT_S + READ_TIMEOUT_S
CLIENT_TIMEOUT_S = HEADER_BOUND_S + 1.0  # each recv: a hang shows as a timeout
DRIP_MS = 20
SIZES = [0, 1, 1000, 16384, 65536, 200_000, 1_000_000]


def config(servers, read_timeout=READ_TIMEOUT_S, keepalive=8, extra_route=False):
    srv = ", ".join(f'"{o.addr}"' for o in servers)
    routes = "routes:\n"
    if extra_route:
        routes += "  - match: { path: /never/ }\n    upstream: app\n"
    routes += "  - upstream: app\n"
    return (f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\nshutdown_timeout: 5s\n'
            f'upstreams:\n  app:\n    servers: [{srv}]\n'
            f'    connect_timeout: {int(CONNECT_TIMEOUT_S * 1000)}ms\n'
            f'    read_timeout: {int(read_timeout * 1000)}ms\n'
            f'    send_timeout: {int(SEND_TIMEOUT_S * 1000)}ms\n'
            f'    retries: {RETRIES}\n    keepalive: {keepalive}\n{routes}')


@pytest.fixture
def origin_procs(tmp_path):
    """origin_procs(n) starts n origin processes; all are stopped by PID at teardown."""
    started = []

    def start(n):
        for i in range(n):
            name = f"o{len(started)}"
            started.append(OriginProcess(name, log_path=str(tmp_path / f"{name}.log")))
        return started[-n:]

    yield start
    for o in started:
        o.stop()


class Load:
    """Client threads sending a mix of requests until stop(): keep-alive and new
    connections, Content-Length and chunked bodies down, uploads up, some bodies
    dripped by the origin so a chaos event can land mid-body. Every response is
    judged and recorded with its elapsed time."""

    def __init__(self, port, threads=4, uploads=True, drip=True):
        self.port = port
        self.uploads = uploads
        self.drip = drip
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (verdict, why, elapsed, what)
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def record(self, verdict, why, elapsed, what, bound):
        if verdict != "failed" and elapsed > bound:
            verdict, why = "failed", f"took {elapsed:.2f}s, bound {bound:.2f}s ({why})"
        with self.lock:
            self.results.append((verdict, why, elapsed, what))

    def run(self, i):
        rng = random.Random(i * 7919 + os.getpid())
        c = None
        while not self.stop_event.is_set():
            size = rng.choice(SIZES)
            seed = rng.randrange(1 << 30)
            chunked = rng.random() < 0.3
            keep = rng.random() < 0.6
            drip = self.drip and not chunked and rng.random() < 0.2 and size >= 200_000
            op = "post" if self.uploads and rng.random() < 0.15 else "get"
            if op == "post":
                size = min(size, 200_000)  # fits the socket buffers: sent before any answer
            what = (f"{op} size={size} seed={seed} chunked={chunked} "
                    f"{'keep-alive' if keep else 'new-conn'}{' drip' if drip else ''}")
            # a dripped body comes in 256 KiB pieces, each after a DRIP_MS pause
            bound = HEADER_BOUND_S + (size // (256 * 1024) + 1) * DRIP_MS / 1000.0 + 0.5
            reused = False
            if keep and c is None:
                try:
                    c = connect(self.port, CLIENT_TIMEOUT_S)
                except OSError as e:
                    self.record("failed", f"connect: {e}", 0, what, bound)
                    continue
            elif keep:
                reused = True
            conn = c if keep else None
            if op == "post":
                r = post_sink(self.port, size, seed, c=conn, timeout=CLIENT_TIMEOUT_S,
                              chunked=chunked)
                verdict, why = judge(r, check=sink_check(size, seed))
            else:
                r = fetch_blob(self.port, size, seed, c=conn, timeout=CLIENT_TIMEOUT_S,
                               chunked=chunked, extra_query=f"drip={DRIP_MS}" if drip else "")
                verdict, why = judge(r, size, seed)
            if reused:
                what += " (reused connection)"
            self.record(verdict, why, r.elapsed, what, bound)
            if keep and (verdict != "ok" or r.eof or (r.get("connection") or "") == "close"):
                c.sock.close()
                c = None
        if c is not None:
            c.sock.close()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT_S * 3)
        assert not any(t.is_alive() for t in self.threads), "a client thread hangs"
        return self.summary()

    def summary(self):
        with self.lock:
            res = list(self.results)
        counts = collections.Counter(v for v, *_ in res)
        causes = collections.Counter(w for v, w, *_ in res if v == "gateway_error")
        failures = [(why, what) for v, why, _, what in res if v == "failed"]
        return counts, causes, failures, max((e for _, _, e, _ in res), default=0)

    def count(self):
        with self.lock:
            return len(self.results)


def check_summary(summary, min_ok):
    counts, causes, failures, longest = summary
    report = (f"counts={dict(counts)} causes={dict(causes)} longest={longest:.2f}s "
              f"failures ({len(failures)}):\n" + "\n".join(f"  {w}  <- {what}"
                                                           for w, what in failures[:15]))
    print(report)
    assert not failures, report
    assert counts["ok"] >= min_ok, report
    return counts, causes


def assert_alive(b):
    assert b.proc.poll() is None, "bulwark died:\n" + b.output()[-3000:]


def until(seconds):
    """Sleep seconds (the chaos schedule's pace, not a readiness wait)."""
    time.sleep(seconds)


def recovered(b, n=20):
    """After the chaos, with every origin back: n requests in a row are all ok."""
    bad = []
    for i in range(n):
        r = fetch_blob(b.port, 50_000, 1000 + i, timeout=CLIENT_TIMEOUT_S)
        v, why = judge(r, 50_000, 1000 + i)
        if v != "ok":
            bad.append(why)
    assert not bad, f"after recovery {len(bad)}/{n} requests were not ok: {bad[:5]}"


def stop_clean(b):
    assert_alive(b)
    rc = b.stop()
    assert rc == 0, f"bulwark exited {rc} on SIGTERM:\n" + b.output()[-3000:]


def test_kill9_and_restart_origins_under_load(bulwark, origin_procs):
    a, o2 = origin_procs(2)
    b = bulwark(config([a, o2]))
    load = Load(b.port)
    try:
        for cycle in range(4):
            for o in (a, o2):
                until(0.5)
                o.kill9()
                until(0.4)
                assert_alive(b)
                o.restart()
        # both down at once: nothing to retry on, the answer is 502 connection_refused
        a.kill9()
        o2.kill9()
        until(0.6)
        assert_alive(b)
        a.restart()
        o2.restart()
        until(0.8)
    finally:
        summary = load.stop()
    counts, causes = check_summary(summary, min_ok=100)
    assert causes["connection_refused"] >= 1, "no request saw both origins down"
    recovered(b)
    stop_clean(b)


def test_stalled_origins_answer_504_within_the_read_timeout(bulwark, origin_procs):
    a, o2 = origin_procs(2)
    b = bulwark(config([a, o2]))
    load = Load(b.port)
    try:
        for o in (a, o2, a):
            until(0.5)
            o.stall()
            until(2.0)  # twice read_timeout: requests on it time out
            assert_alive(b)
            o.resume()
        until(0.5)
        a.stall()
        o2.stall()
        until(1.5)
        a.resume()
        o2.resume()
        until(0.8)
    finally:
        a.resume()
        o2.resume()
        summary = load.stop()
    counts, causes = check_summary(summary, min_ok=50)
    assert causes["http_response_timeout"] >= 1, "no request waited on a stalled origin"
    recovered(b)
    stop_clean(b)


def test_origins_dropping_every_connection_under_load(bulwark, origin_procs):
    a, o2 = origin_procs(2)
    b = bulwark(config([a, o2]))
    load = Load(b.port)
    try:
        deadline = time.monotonic() + 8
        i = 0
        while time.monotonic() < deadline:
            until(0.15)
            (a, o2)[i % 2].drop()
            i += 1
            assert_alive(b)
    finally:
        summary = load.stop()
    check_summary(summary, min_ok=100)
    recovered(b)
    stop_clean(b)


def test_reload_storm_under_load_fails_no_request(bulwark, origin_procs):
    a, o2 = origin_procs(2)
    b = bulwark(config([a, o2]))
    variants = [config([a, o2]), config([o2, a], keepalive=2),
                config([a, o2], read_timeout=2.0, extra_route=True), config([o2, a], keepalive=0)]
    load = Load(b.port, uploads=True, drip=True)
    reloads = 0
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert b.reload(variants[reloads % len(variants)]) is True, b.error_log()[-2000:]
            reloads += 1
            assert_alive(b)
            until(0.05)
    finally:
        summary = load.stop()
    counts, causes = check_summary(summary, min_ok=100)
    assert reloads >= 40, f"only {reloads} reloads"
    assert counts["gateway_error"] == 0 and counts["aborted"] == 0, \
        f"a reload (nothing else happened) disturbed requests: {dict(counts)} {dict(causes)}"
    recovered(b)
    stop_clean(b)


def test_everything_at_once(bulwark, origin_procs):
    """Kills, restarts, stalls, drops and reloads in a random order for 12 s."""
    origins = origin_procs(3)
    b = bulwark(config(origins))
    variants = [config(origins), config(origins[::-1], keepalive=2),
                config(origins, read_timeout=2.0, extra_route=True)]
    rng = random.Random(4)
    load = Load(b.port, threads=6)
    actions = collections.Counter()
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            until(rng.uniform(0.05, 0.3))
            o = rng.choice(origins)
            act = rng.choice(["kill", "stall", "drop", "reload", "heal"])
            if act == "kill" and o.alive():
                o.kill9()
            elif act == "stall" and o.alive() and not o.stalled:
                o.stall()
            elif act == "drop" and o.alive() and not o.stalled:
                o.drop()
            elif act == "reload":
                assert b.reload(variants[actions["reload"] % len(variants)]) is True
            else:
                act = "heal"
                for x in origins:
                    if not x.alive():
                        x.start()
                    elif x.stalled:
                        x.resume()
            actions[act] += 1
            assert_alive(b)
        for x in origins:
            if not x.alive():
                x.start()
            elif x.stalled:
                x.resume()
        until(0.5)
    finally:
        for x in origins:
            if x.alive() and x.stalled:
                x.resume()
        summary = load.stop()
    print("actions:", dict(actions))
    check_summary(summary, min_ok=100)
    recovered(b)
    stop_clean(b)
