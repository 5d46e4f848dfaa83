"""Soak: bulwark under mixed traffic for SOAK_SECONDS, every response checked, its
memory, descriptors and connections sampled every second. `make soak SOAK_SECONDS=N`.

Starts bulwark (2 workers, access and error log to files) in front of 3 origin
processes (tests/integration/origins/chaos.py) and one dead upstream (a port nothing
listens on), then runs these kinds of traffic at once, each in its own client thread:

  keepalive      sequential GETs on one connection, small bodies, Content-Length or chunked
  newconn        one GET per connection (Connection: close)
  pipelined      2..10 GETs written at once on one connection, answers read in order
  large_down     1..50 MB bodies down (Content-Length or chunked), sha256 checked
  large_up       1..50 MB bodies up to /sink (Content-Length or chunked); the origin's
                 length and sha256 checked
  small_up       small POSTs, half of them chunked, on a kept-alive connection
  websocket      a session of 5..30 echoed text/binary messages, then a close
  slow           trickling clients (header byte by byte, body in small pieces) and slow
                 readers (small receive buffer, reading a little at a time)
  errors         the dead upstream (502 connection_refused) and malformed requests
                 (400 http_request_error)

Every response must be the expected status with the expected cause, and every body
must hash to what the origin sent (blob bodies depend on a seed the client picks, so a
response given to the wrong client or out of order fails its hash).

Exits non-zero when any integrity check failed, bulwark died or did not exit 0 on
SIGTERM, or it leaked: the last quarter's median (or the idle sample after the
traffic) of RSS above the first quarter's median by more than RSS_SLACK_MIB, or of
open fds by more than FD_SLACK. Flat means no leak.
"""
import base64
import collections
import hashlib
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from origins import Conn, free_port, wait_port, ws_client_frame, ws_read_server_frame  # noqa: E402
from origins.chaos import (OriginProcess, blob_pieces, connect, fetch_blob, judge,  # noqa: E402
                           post_sink, proc_fds, proc_rss_kib, read_streamed, request_bytes,
                           sink_check, TCP_STATES)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SOAK_SEED = os.environ.get("SOAK_SEED", str(int(time.time())))  # same seed: same requests
BIN = os.environ.get("BULWARK_BIN", os.path.join(ROOT, "bulwark"))
RSS_SLACK_MIB = 20
FD_SLACK = 50
CLIENT_TIMEOUT_S = 60.0  # per recv: far above every server-side timeout below
MB = 1 << 20
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONFIG = """workers: 2
listen: ["127.0.0.1:{port}"]
shutdown_timeout: 30s
client:
  header_timeout: 10s
  body_timeout: 30s
  keepalive_timeout: 30s
  send_timeout: 30s
log:
  access: {dir}/access.log
  error: {dir}/error.log
upstreams:
  app:
    servers: [{servers}]
    connect_timeout: 2s
    read_timeout: 30s
    retries: 1
    keepalive: 16
  dead:
    servers: ["127.0.0.1:{dead_port}"]
    connect_timeout: 1s
    retries: 0
routes:
  - match: {{ path: /dead/ }}
    upstream: dead
  - upstream: app
"""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.failed = collections.Counter()
        self.requests = collections.Counter()  # HTTP requests sent per kind
        self.bytes_down = 0
        self.bytes_up = 0
        self.failures = []

    def result(self, kind, good, why="", what="", requests=1, down=0, up=0):
        with self.lock:
            self.requests[kind] += requests
            self.bytes_down += down
            self.bytes_up += up
            if good:
                self.ok[kind] += 1
            else:
                self.failed[kind] += 1
                self.failures.append((time.monotonic(), kind, why, what))
                print(f"FAIL {kind}: {why} <- {what}", flush=True)


def expect_blob(stats, kind, r, size, seed, what):
    verdict, why = judge(r, size, seed)
    stats.result(kind, verdict == "ok", f"{verdict}: {why}", what, down=r.length)
    return verdict == "ok" and not r.eof and (r.get("connection") or "") != "close"


# ---------------------------------------------------------------- traffic kinds

def keepalive(port, stats, rng, deadline):
    c = None
    while time.monotonic() < deadline:
        if c is None:
            c = connect(port, CLIENT_TIMEOUT_S)
        size, seed = rng.choice([0, 1, 100, 4096, 30000, 65536, 200_000]), rng.randrange(1 << 30)
        chunked = rng.random() < 0.4
        r = fetch_blob(port, size, seed, c=c, chunked=chunked)
        if not expect_blob(stats, "keepalive", r, size, seed, f"GET blob {size} chunked={chunked}"):
            c.sock.close()
            c = None
    if c:
        c.sock.close()


def newconn(port, stats, rng, deadline):
    while time.monotonic() < deadline:
        size, seed = rng.choice([0, 10, 5000, 70000]), rng.randrange(1 << 30)
        r = fetch_blob(port, size, seed, timeout=CLIENT_TIMEOUT_S, chunked=rng.random() < 0.3)
        expect_blob(stats, "newconn", r, size, seed, f"GET blob {size} new connection")


def pipelined(port, stats, rng, deadline):
    while time.monotonic() < deadline:
        c = connect(port, CLIENT_TIMEOUT_S)
        try:
            for _ in range(rng.randint(1, 5)):
                batch = [(rng.choice([0, 10, 1000, 20000, 64000]), rng.randrange(1 << 30),
                          rng.random() < 0.4) for _ in range(rng.randint(2, 10))]
                c.sock.sendall(b"".join(request_bytes(
                    "GET", f"/blob/{n}/{s}" + ("?chunked=1" if ch else "")) for n, s, ch in batch))
                good = True
                for i, (n, s, ch) in enumerate(batch):
                    r = read_streamed(c)
                    v, why = judge(r, n, s)
                    stats.result("pipelined", v == "ok", f"{v}: {why}",
                                 f"response {i + 1} of {len(batch)} pipelined (blob {n})",
                                 down=r.length)
                    if v != "ok":
                        good = False
                        break
                if not good:
                    break
        finally:
            c.sock.close()


def large_down(port, stats, rng, deadline):
    c = None
    while time.monotonic() < deadline:
        if c is None:
            c = connect(port, CLIENT_TIMEOUT_S)
        size, seed = rng.randint(1 * MB, 50 * MB), rng.randrange(1 << 30)
        chunked = rng.random() < 0.5
        r = fetch_blob(port, size, seed, c=c, chunked=chunked)
        if not expect_blob(stats, "large_down", r, size, seed, f"GET {size} bytes chunked={chunked}"):
            c.sock.close()
            c = None
    if c:
        c.sock.close()


def large_up(port, stats, rng, deadline):
    c = None
    while time.monotonic() < deadline:
        if c is None:
            c = connect(port, CLIENT_TIMEOUT_S)
        size, seed = rng.randint(1 * MB, 50 * MB), rng.randrange(1 << 30)
        chunked = rng.random() < 0.5
        r = post_sink(port, size, seed, c=c, chunked=chunked)
        v, why = judge(r, check=sink_check(size, seed))
        stats.result("large_up", v == "ok", f"{v}: {why}", f"POST {size} bytes chunked={chunked}",
                     up=size)
        if v != "ok" or r.eof:
            c.sock.close()
            c = None
    if c:
        c.sock.close()


def small_up(port, stats, rng, deadline):
    c = None
    while time.monotonic() < deadline:
        if c is None:
            c = connect(port, CLIENT_TIMEOUT_S)
        size, seed = rng.choice([0, 1, 500, 10000, 100_000]), rng.randrange(1 << 30)
        chunked = rng.random() < 0.5
        r = post_sink(port, size, seed, c=c, chunked=chunked)
        v, why = judge(r, check=sink_check(size, seed))
        stats.result("small_up", v == "ok", f"{v}: {why}", f"POST {size} bytes chunked={chunked}",
                     up=size)
        if v != "ok" or r.eof:
            c.sock.close()
            c = None
    if c:
        c.sock.close()


def websocket(port, stats, rng, deadline):
    while time.monotonic() < deadline:
        c = connect(port, CLIENT_TIMEOUT_S)
        what = "WebSocket handshake"
        try:
            key = base64.b64encode(rng.randbytes(16)).decode()
            c.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            r = read_streamed(c)
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if r.status != 101 or r.get("sec-websocket-accept") != accept:
                stats.result("websocket", False, f"handshake answered {r.status} "
                             f"accept={r.get('sec-websocket-accept')!r} error={r.error}", what)
                continue
            n = rng.randint(5, 30)
            for i in range(n):
                op = rng.choice([1, 2])
                payload = (rng.randbytes(rng.choice([0, 1, 125, 126, 3000, 8000])) if op == 2 else
                           ("msg %d " % i * rng.randint(1, 200)).encode())
                what = f"message {i + 1} of {n} ({len(payload)} bytes, opcode {op})"
                c.sock.sendall(ws_client_frame(op, payload))
                fin, rop, data, masked = ws_read_server_frame(c)
                if (fin, rop, data, masked) != (True, op, payload, False):
                    raise ValueError(f"echo differs: fin={fin} op={rop} len={len(data)} "
                                     f"masked={masked}")
            what = "close handshake"
            c.sock.sendall(ws_client_frame(8, b"\x03\xe8bye"))
            fin, rop, data, _ = ws_read_server_frame(c)
            if rop != 8:
                raise ValueError(f"close answered with opcode {rop}")
            stats.result("websocket", True, requests=1)
        except (OSError, EOFError, ValueError) as e:
            stats.result("websocket", False, f"{type(e).__name__}: {e}", what)
        finally:
            c.sock.close()


def slow(port, stats, rng, deadline):
    """Alternate a trickling uploader and a slow reader."""
    while time.monotonic() < deadline:
        if rng.random() < 0.5:
            size, seed = rng.choice([1000, 50_000, 200_000]), rng.randrange(1 << 30)
            c = connect(port, CLIENT_TIMEOUT_S)
            try:
                head = request_bytes("POST", f"/sink?slow={seed}",
                                     [("Content-Length", str(size))])
                for i in range(len(head)):  # the header one byte at a time
                    c.sock.sendall(head[i:i + 1])
                    time.sleep(0.002)
                for p in blob_pieces(size, seed, 4096):
                    c.sock.sendall(p)
                    time.sleep(0.01)
                r = read_streamed(c, keep=True)
                v, why = judge(r, check=sink_check(size, seed))
                stats.result("slow", v == "ok", f"{v}: {why}", f"trickled POST of {size} bytes",
                             up=size)
            except OSError as e:
                stats.result("slow", False, f"{type(e).__name__}: {e}", "trickled POST")
            finally:
                c.sock.close()
        else:
            size, seed = rng.randint(1 * MB, 4 * MB), rng.randrange(1 << 30)
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            s.settimeout(CLIENT_TIMEOUT_S)
            try:
                s.connect(("127.0.0.1", port))
                c = Conn(s)
                c.sock.sendall(request_bytes("GET", f"/blob/{size}/{seed}",
                                             [("Connection", "close")]))
                r = read_streamed(c, pace=lambda n: time.sleep(0.004 * n / 16384))
                expect_blob(stats, "slow", r, size, seed, f"slow reader of {size} bytes")
            except OSError as e:
                stats.result("slow", False, f"{type(e).__name__}: {e}", "slow reader")
            finally:
                s.close()


BAD_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : soak\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: soak\r\nContent-Length: 1, 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: soak\r\nX: a\rb\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def errors(port, stats, rng, deadline):
    while time.monotonic() < deadline:
        c = connect(port, CLIENT_TIMEOUT_S)
        try:
            if rng.random() < 0.5:
                what = "GET /dead/ (nothing listens)"
                c.sock.sendall(request_bytes("GET", f"/dead/{rng.randrange(1000)}",
                                             [("Connection", "close")]))
                want = (502, "connection_refused")
            else:
                req = rng.choice(BAD_REQUESTS)
                what = f"malformed {req[:60]!r}"
                c.sock.sendall(req)
                want = (400, "http_request_error")
            r = read_streamed(c, keep=True)
            cause = (r.get("proxy-status") or "").split("error=")[-1].split(";")[0]
            good = (r.status, cause) == want and r.complete
            stats.result("errors", good, f"got {r.status} {r.get('proxy-status')!r} "
                         f"error={r.error} complete={r.complete}, want {want}", what)
        except OSError as e:
            stats.result("errors", False, f"{type(e).__name__}: {e}", what)
        finally:
            c.sock.close()
        time.sleep(0.02)


KINDS = [(keepalive, 2), (newconn, 1), (pipelined, 1), (large_down, 1), (large_up, 1),
         (small_up, 1), (websocket, 1), (slow, 2), (errors, 1)]


# ---------------------------------------------------------------- sampling

def tcp_counts(port, upstream_ports):
    """(client connections, upstream connections) bulwark holds: sockets on its
    listen port (LISTEN and TIME_WAIT left out) and its sockets to the origins."""
    clients = upstreams = 0
    ups = set(upstream_ports)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            st = TCP_STATES.get(parts[3])
            if st in ("LISTEN", "TIME_WAIT"):
                continue
            lport = int(parts[1].rsplit(":", 1)[1], 16)
            rport = int(parts[2].rsplit(":", 1)[1], 16)
            if lport == port:
                clients += 1
            elif rport in ups:
                upstreams += 1
    return clients, upstreams


class Sampler(threading.Thread):
    def __init__(self, pid, port, upstream_ports):
        super().__init__(daemon=True)
        self.pid, self.port, self.ups = pid, port, upstream_ports
        self.samples = []  # (t, rss_kib, fds, client_conns, upstream_conns)
        self.stop_event = threading.Event()

    def sample(self):
        c, u = tcp_counts(self.port, self.ups)
        return (time.monotonic(), proc_rss_kib(self.pid), proc_fds(self.pid), c, u)

    def run(self):
        while not self.stop_event.wait(1.0):
            try:
                self.samples.append(self.sample())
            except OSError:
                return  # the process is gone: reported by the main thread


def quarters(samples, t0, t1):
    q = [[] for _ in range(4)]
    for s in samples:
        if t0 <= s[0] <= t1:
            q[min(3, int(4 * (s[0] - t0) / (t1 - t0)))].append(s)
    return q


def curve_table(samples, t0, t1):
    lines = []
    names = [("RSS MiB", 1, 1 / 1024), ("open fds", 2, 1), ("client conns", 3, 1),
             ("upstream conns", 4, 1)]
    qs = quarters(samples, t0, t1)
    lines.append(f"{'':16}" + "".join(f"{'Q%d min/med/max' % (i + 1):>22}" for i in range(4)))
    for name, idx, scale in names:
        row = f"{name:16}"
        for q in qs:
            vals = [s[idx] * scale for s in q]
            if vals:
                fmt = "{:.1f}" if scale != 1 else "{:.0f}"
                row += f"{'/'.join(fmt.format(v) for v in (min(vals), statistics.median(vals), max(vals))):>22}"
            else:
                row += f"{'-':>22}"
        lines.append(row)
    return "\n".join(lines), qs


# ---------------------------------------------------------------- main

def main():
    workdir = tempfile.mkdtemp(prefix="bulwark-soak-")
    port, dead_port = free_port(), free_port()
    print(f"soak: {SOAK_SECONDS:.0f} s, seed {SOAK_SEED}, bulwark {BIN}, work dir {workdir}",
          flush=True)
    origins = []
    proc = None
    rc = 1
    try:
        for i in range(3):
            origins.append(OriginProcess(f"o{i}", log_path=os.path.join(workdir, f"o{i}.log")))
        cfg_path = os.path.join(workdir, "bulwark.yaml")
        with open(cfg_path, "w") as f:
            f.write(CONFIG.format(port=port, dir=workdir, dead_port=dead_port,
                                  servers=", ".join(f'"{o.addr}"' for o in origins)))
        out = open(os.path.join(workdir, "stdout.log"), "wb")
        proc = subprocess.Popen([BIN, "-c", cfg_path], stdout=out, stderr=subprocess.STDOUT)
        wait_port(port, proc=proc)
        rc = run(proc, port, origins, workdir)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for o in origins:
            o.stop()
    return rc


def run(proc, port, origins, workdir):
    sampler = Sampler(proc.pid, port, [o.port for o in origins])
    time.sleep(1.0)
    idle_before = sampler.sample()
    sampler.start()
    stats = Stats()
    t0 = time.monotonic()
    deadline = t0 + SOAK_SECONDS
    threads = []
    for fn, n in KINDS:
        for i in range(n):
            rng = random.Random(f"{SOAK_SEED}-{fn.__name__}-{i}")

            def body(fn=fn, rng=rng):
                try:
                    fn(port, stats, rng, deadline)
                except Exception as e:  # a crash of the client is a failure too
                    stats.result(fn.__name__, False, f"client thread died: {type(e).__name__}: {e}")
            threads.append(threading.Thread(target=body, daemon=True, name=fn.__name__))
    for t in threads:
        t.start()
    next_report = t0 + max(10.0, SOAK_SECONDS / 10)
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if proc.poll() is not None:
            print(f"bulwark exited with {proc.returncode} during the soak", flush=True)
            break
        if time.monotonic() >= next_report:
            next_report += max(10.0, SOAK_SECONDS / 10)
            s = sampler.samples[-1] if sampler.samples else idle_before
            with stats.lock:
                done, bad = sum(stats.ok.values()), sum(stats.failed.values())
            print(f"  t={time.monotonic() - t0:5.0f}s ok={done} failed={bad} "
                  f"rss={s[1] / 1024:.1f}MiB fds={s[2]} conns={s[3]} upstream={s[4]}", flush=True)
        if time.monotonic() > deadline + 120:
            print("client threads still running 120 s after the deadline", flush=True)
            break
    t1 = time.monotonic()
    hung = [t.name for t in threads if t.is_alive()]
    crashed = proc.poll() is not None
    # idle: let kept-alive connections close and housekeeping trim, then sample
    time.sleep(3.0)
    idle_after = sampler.sample() if not crashed else None
    sampler.stop_event.set()
    sampler.join(5)

    # ------------------------------------------------------------ report
    print(f"\n=== soak report: {t1 - t0:.0f} s of traffic, {len(sampler.samples)} samples ===")
    print(f"{'kind':12}{'ok':>9}{'failed':>8}{'requests':>10}")
    for fn, _ in KINDS:
        k = fn.__name__
        print(f"{k:12}{stats.ok[k]:9}{stats.failed[k]:8}{stats.requests[k]:10}")
    print(f"{'total':12}{sum(stats.ok.values()):9}{sum(stats.failed.values()):8}"
          f"{sum(stats.requests.values()):10}")
    print(f"bytes down {stats.bytes_down / MB:.0f} MiB, up {stats.bytes_up / MB:.0f} MiB")
    table, qs = curve_table(sampler.samples, t0, t1)
    print("\nresource curves (per quarter of the run):")
    print(table)
    print(f"idle before: rss={idle_before[1] / 1024:.1f}MiB fds={idle_before[2]} "
          f"conns={idle_before[3]} upstream={idle_before[4]}")
    if idle_after:
        print(f"idle after:  rss={idle_after[1] / 1024:.1f}MiB fds={idle_after[2]} "
              f"conns={idle_after[3]} upstream={idle_after[4]}")
    access = os.path.join(workdir, "access.log")
    error = os.path.join(workdir, "error.log")
    n_access = sum(1 for _ in open(access, errors="replace")) if os.path.exists(access) else 0
    print(f"access log: {n_access} lines for {sum(stats.requests.values())} requests sent")
    if os.path.exists(error):
        kinds = collections.Counter()
        for line in open(error, errors="replace"):
            kinds[line[21:].split(":")[0][:90]] += 1
        print("error log, by message:")
        for msg, n in kinds.most_common(12):
            print(f"  {n:7}  {msg}")

    problems = []
    if stats.failures:
        problems.append(f"{len(stats.failures)} integrity failures")
        print("\nfailures (first 20):")
        for t, kind, why, what in stats.failures[:20]:
            print(f"  t={t - t0:6.1f}s {kind}: {why} <- {what}")
    if hung:
        problems.append(f"client threads hung: {hung}")
    if crashed:
        problems.append(f"bulwark died with {proc.returncode}")
    else:
        q1 = qs[0]
        q4 = qs[3]
        if q1 and q4:
            rss_q1 = statistics.median(s[1] for s in q1)
            fds_q1 = statistics.median(s[2] for s in q1)
            for label, s_rss, s_fds in (
                    ("last-quarter median", statistics.median(s[1] for s in q4),
                     statistics.median(s[2] for s in q4)),
                    ("idle after", idle_after[1], idle_after[2])):
                if s_rss > rss_q1 + RSS_SLACK_MIB * 1024:
                    problems.append(f"RSS {label} {s_rss / 1024:.1f} MiB > first-quarter median "
                                    f"{rss_q1 / 1024:.1f} MiB + {RSS_SLACK_MIB} MiB")
                if s_fds > fds_q1 + FD_SLACK:
                    problems.append(f"fds {label} {s_fds:.0f} > first-quarter median "
                                    f"{fds_q1:.0f} + {FD_SLACK}")
            print(f"\nleak check: RSS first-quarter median {rss_q1 / 1024:.1f} MiB, last-quarter "
                  f"median {statistics.median(s[1] for s in q4) / 1024:.1f} MiB, idle after "
                  f"{idle_after[1] / 1024:.1f} MiB (slack {RSS_SLACK_MIB} MiB); fds "
                  f"{fds_q1:.0f} / {statistics.median(s[2] for s in q4):.0f} / {idle_after[2]} "
                  f"(slack {FD_SLACK})")
        else:
            problems.append("too few samples for the leak check (run longer)")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(40)
        except subprocess.TimeoutExpired:
            code = "no exit within 40 s"
        if code != 0:
            problems.append(f"bulwark exited {code} on SIGTERM")
    if problems:
        print("\nSOAK FAILED: " + "; ".join(problems))
        print(f"logs in {workdir}")
        return 1
    print("\nSOAK PASSED: every response intact, resources flat, clean exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
