"""Attacks on the supervisor (src/supervise/, admin POST /programs/<name>/restart,
reload) and the FastCGI exchange (src/proxy/exchange_fastcgi.c, src/http/fastcgi.c)
from outside: the real binary, raw sockets, the real php-fpm from Debian and a
scripted fake FastCGI server sending hostile records. Each test is a finding or a
probe that held; the finding's fix is named in its docstring."""
import json
import os
import socket
import struct
import sys
import threading
import time

import pytest

from origins import client, free_port, read_response, wait_for
from origins.faulty import fetch
from test_fastcgi import FPM, Fpm, config, request

STDIN_END = b"\x01\x05\x00\x01\x00\x00\x00\x00"


def rec(rtype, content, rid=1, padding=0):
    return struct.pack(">BBHHBB", 1, rtype, rid, len(content), padding, 0) + content + \
        b"\0" * padding


def end(rid=1, app_status=0):
    return rec(3, struct.pack(">IB3x", app_status, 0), rid=rid)


def parse_params(data):
    """The FCGI_PARAMS name/value pairs in the request records, in order."""
    out, pos, params = [], 0, b""
    while pos + 8 <= len(data):
        _, t, _, clen, pad, _ = struct.unpack(">BBHHBB", data[pos:pos + 8])
        if t == 4:
            params += data[pos + 8:pos + 8 + clen]
        pos += 8 + clen + pad
    i = 0

    def length():
        nonlocal i
        if params[i] < 128:
            i += 1
            return params[i - 1]
        v = struct.unpack(">I", params[i:i + 4])[0] & 0x7fffffff
        i += 4
        return v
    while i < len(params):
        n = length()
        v = length()
        out.append((params[i:i + n].decode("latin-1"), params[i + n:i + n + v].decode("latin-1")))
        i += n + v
    return out


class FakeFcgi:
    """A FastCGI server on a unix socket. handler(conn, request_bytes, index) is called
    per request once its empty STDIN arrived; it writes whatever it likes and returns
    True to keep the connection for another request (FCGI_KEEP_CONN)."""

    def __init__(self, path, handler):
        self.path = path
        self.handler = handler
        self.requests = []
        self.accepted = 0
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                while STDIN_END in buf:
                    i = buf.index(STDIN_END) + len(STDIN_END)
                    req, buf = buf[:i], buf[i:]
                    self.requests.append(req)
                    if not self.handler(c, req, len(self.requests) - 1):
                        return
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.srv.close()


@pytest.fixture
def fake(tmp_path):
    started = []

    def start(handler, name="fake.sock"):
        f = FakeFcgi(str(tmp_path / name), handler)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def fake_config(f, tmp_path, upstream_extra="    retries: 0\n", route_extra=""):
    return config(f"unix:{f.path}", tmp_path, upstream_extra=upstream_extra,
                  route_extra="    check_script: false\n" + route_extra)


def reply(data, keep=False):
    def handler(c, req, i):
        c.sendall(data)
        return keep
    return handler


@pytest.mark.skipif(not os.path.exists(FPM), reason="php-fpm8.2 is not installed")
def test_dotted_field_names_do_not_override_params(bulwark, tmp_path):
    """Finding: only "_" was refused in field names, but PHP turns "." in a variable
    name into "_": "X.Request.Id" overrode bulwark's HTTP_X_REQUEST_ID, "X.Forwarded.For"
    the real X-Forwarded-For, "Content.Length" passed as HTTP_CONTENT_LENGTH. Fix: only
    names of letters, digits and "-" become HTTP_* params (nginx's ignore_invalid_headers)."""
    f = Fpm(tmp_path)
    (f.www / "srv.php").write_text(
        "<?php header('Content-Type: application/json'); echo json_encode($_SERVER);")
    f.start()
    try:
        b = bulwark(config(f"unix:{f.sock}", f.www))
        r = request(b.port, "GET", "/srv.php", headers=[
            ("X-Forwarded-For", "9.9.9.9"), ("X.Forwarded.For", "6.6.6.6"),
            ("X.Request.Id", "forged"), ("Content.Length", "77"), ("X-Ok", "yes")])
        assert r.status == 200, r
        env = json.loads(r.body)
        assert env["HTTP_X_REQUEST_ID"] == r.header("X-Request-Id")
        assert env["HTTP_X_FORWARDED_FOR"] == "9.9.9.9"
        assert "HTTP_CONTENT_LENGTH" not in env
        assert env["HTTP_X_OK"] == "yes"
    finally:
        f.stop()


OK = rec(6, b"Content-Type: text/plain\r\n\r\nok") + rec(6, b"") + end()


def get(port, target="/a.php", method="GET", headers=""):
    c = client(port, timeout=20)
    c.sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n"
                   f"\r\n".encode())
    r = read_response(c, method)
    c.sock.close()
    return r


def test_index_goes_on_the_script_name_after_the_split(bulwark, fake, tmp_path):
    """Finding: index was appended to the path before split_path_info, so "/a.php/" ran
    a.php with PATH_INFO "/index.php" (nginx: "/"). Fix: split first, then a script name
    ending in "/" gets the index."""
    f = fake(reply(OK, keep=True))
    b = bulwark(fake_config(f, tmp_path))
    want = {"/a.php/": ("/a.php", "/", "/a.php/"),
            "/a.php/b/": ("/a.php", "/b/", "/a.php/b/"),
            "/dir/": ("/dir/index.php", "", "/dir/index.php"),
            "/": ("/index.php", "", "/index.php")}
    for target, (script, info, doc) in want.items():
        assert get(b.port, target).status == 200
        p = dict(parse_params(f.requests[-1]))
        assert (p["SCRIPT_NAME"], p["PATH_INFO"], p["DOCUMENT_URI"]) == (script, info, doc), target
        assert p["SCRIPT_FILENAME"] == f"{tmp_path}{script}"


# ---- the supervisor ----

# An HTTP server that answers its version (argv[2]) and pid; it listens only after
# argv[3] seconds, so a rolling restart spends that long waiting for it to be ready.
SLOW_PROGRAM = r'''
import json, os, socket, sys, time
port, version, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
time.sleep(delay)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d:
            break
        data += d
    if b"\r\n\r\n" in data:
        body = json.dumps({"pid": os.getpid(), "version": version}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % len(body) + body)
    c.close()
'''

TOKEN = "s3cret"


def sup_config(port, progs, aport, token=TOKEN, servers=None):
    srv = ", ".join(f'"{s}"' for s in (servers or [f"127.0.0.1:{port}"]))
    return (f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\n'
            f'admin: {{address: "127.0.0.1:{aport}", token: "{token}"}}\n'
            f"upstreams:\n  app:\n    servers: [{srv}]\n"
            "    connect_timeout: 1s\n    read_timeout: 5s\n    retries: 2\n"
            "routes:\n  - upstream: app\n"
            f"programs:\n{progs}")


def slow_prog(name, path, port, version, delay="0", extra=""):
    args = ", ".join(json.dumps(a) for a in [sys.executable, str(path), str(port), version, delay])
    return (f"  {name}:\n    command: [{args}]\n    upstream: app\n"
            f'    server: "127.0.0.1:{port}"\n    ready_timeout: 20s\n    stop_timeout: 5s\n'
            + "".join(f"    {line}\n" for line in extra.splitlines() if line))


def admin_req(port, path, method="GET", token=TOKEN, headers=()):
    hs = list(headers) + ([("Authorization", f"Bearer {token}")] if token else [])
    return fetch(port, path, method=method, headers=hs)


def programs(aport):
    r = admin_req(aport, "/status")
    assert r.status == 200, r.head
    return json.loads(r.data)["programs"]


def serving(port, version):
    r = fetch(port, "/", timeout=10)
    return r.status == 200 and json.loads(r.body)["version"] == version


def test_reload_while_the_replacement_starts_is_not_lost(bulwark, tmp_path):
    """Finding: a reload that changed a program while its rolling restart waited for the
    replacement to be ready (ROLL_READY) stored the new definition but never restarted
    it again: after a SIGHUP storm the program ran an older version for good. Fix: a
    change that arrives in that phase queues another restart."""
    prog = tmp_path / "slow.py"
    prog.write_text(SLOW_PROGRAM)
    port, aport = free_port(), free_port()
    b = bulwark(sup_config(port, slow_prog("web", prog, port, "v1"), aport))
    wait_for(lambda: serving(b.port, "v1"), "v1 serving")
    assert b.reload(sup_config(port, slow_prog("web", prog, port, "v2", "1.5"), aport))
    b.wait_log(r"program web started: pid=\d+ command=\S+ restarts=1")
    # v2 sleeps before it listens: the rolling restart waits for it to be ready
    assert b.reload(sup_config(port, slow_prog("web", prog, port, "v3"), aport))
    wait_for(lambda: serving(b.port, "v3"), "the last definition (v3) to serve", 30)
    assert programs(aport)["web"]["state"] == "RUNNING"


def test_odd_programs_are_handled(bulwark, origin, tmp_path):
    """Held: a program that forks a daemon and exits 0 (the daemon dies with it), one
    that closes stdout and stderr (no busy loop on the hung-up pipes), one that prints
    binary garbage (/status stays valid JSON), one that ignores SIGTERM (SIGKILL after
    stop_timeout), and commands that do not exist (FATAL after max_restarts)."""
    o = origin()
    aport = free_port()
    (tmp_path / "daemon.sh").write_text(
        f"#!/bin/sh\n(sleep 1000 & echo $! > {tmp_path}/dpid.tmp; "
        f"mv {tmp_path}/dpid.tmp {tmp_path}/dpid) &\n"
        f"while [ ! -e {tmp_path}/dpid ]; do sleep 0.01; done\nexit 0\n")
    (tmp_path / "closer.py").write_text("import os, time\nos.close(1); os.close(2)\n"
                                        "time.sleep(1000)\n")
    (tmp_path / "garbage.py").write_text(
        "import sys, time\nsys.stderr.buffer.write(bytes(range(256)) * 4 + b'\\n\\xff\"\\\\end\\n')\n"
        "sys.stderr.flush()\ntime.sleep(1000)\n")
    (tmp_path / "noterm.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(__file__ + '.ready', 'w').close()\ntime.sleep(1000)\n")
    py = sys.executable
    progs = (f'  daemon:\n    command: [/bin/sh, "{tmp_path}/daemon.sh"]\n    restart: on-failure\n'
             f'  closer:\n    command: ["{py}", "{tmp_path}/closer.py"]\n'
             f'  garbage:\n    command: ["{py}", "{tmp_path}/garbage.py"]\n'
             f'  noterm:\n    command: ["{py}", "{tmp_path}/noterm.py"]\n    stop_timeout: 1s\n'
             f'  missing:\n    command: ["/nonexistent/bin/x"]\n'
             "    backoff: {initial: 50ms, max: 100ms}\n    max_restarts: 2\n")
    b = bulwark(sup_config(o.port, progs, aport, servers=[f"127.0.0.1:{o.port}"]))

    def settled():
        st = programs(aport)
        return st if (st["daemon"]["state"] == "EXITED" and st["missing"]["state"] == "FATAL"
                      and any(line.endswith("end") for line in st["garbage"]["last_stderr"])
                      and os.path.exists(f"{tmp_path}/noterm.py.ready")) else None
    st = wait_for(settled, "the programs to settle", 30)
    assert st["daemon"]["last_exit"]["code"] == 0
    assert st["missing"]["last_exit"]["code"] == 127 and st["missing"]["restarts"] == 2
    assert st["closer"]["state"] == "RUNNING" and st["noterm"]["state"] == "RUNNING"
    dpid = int(wait_for(lambda: os.path.exists(f"{tmp_path}/dpid") and
                        open(f"{tmp_path}/dpid").read().strip(), "the daemon's pid"))
    wait_for(lambda: not os.path.exists(f"/proc/{dpid}") or
             open(f"/proc/{dpid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             "the daemon to die with its keeper")
    # closed pipes: bulwark idles (well under a second of CPU over two seconds)
    def ticks():
        f = open(f"/proc/{b.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    t0, c0 = time.monotonic(), ticks()
    while time.monotonic() - t0 < 2:
        time.sleep(0.1)
    assert ticks() - c0 < os.sysconf("SC_CLK_TCK") // 2
    b.wait_log(r"program missing: cannot run /nonexistent/bin/x: No such file or directory")
    t0 = time.monotonic()
    assert b.stop(timeout=30) == 0
    assert time.monotonic() - t0 < 15
    b.wait_log(r"program noterm did not stop within stop_timeout \(1000 ms\): SIGKILL")


def test_rapid_admin_restarts_keep_one_process_and_serve(bulwark, tmp_path):
    """Held: 40 admin restarts of two programs back to back, while requests flow: every
    request succeeds, each program ends RUNNING with one process."""
    prog = tmp_path / "slow.py"
    prog.write_text(SLOW_PROGRAM)
    p1, p2, aport = free_port(), free_port(), free_port()
    progs = slow_prog("web1", prog, p1, "v1") + slow_prog("web2", prog, p2, "v1")
    b = bulwark(sup_config(p1, progs, aport, servers=[f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]))
    wait_for(lambda: all(p["state"] == "RUNNING" for p in programs(aport).values()), "running")
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(fetch(b.port, "/", timeout=10).status)
    t = threading.Thread(target=load, daemon=True)
    t.start()
    for i in range(40):
        assert admin_req(aport, f"/programs/web{1 + i % 2}/restart", "POST").status == 202
    wait_for(lambda: (lambda st: st["web1"]["restarts"] >= 1 and st["web2"]["restarts"] >= 1 and
                      all(p["state"] == "RUNNING" for p in st.values()))(programs(aport)),
             "both restarted and running", 60)
    n = len(statuses)
    wait_for(lambda: len(statuses) > n + 20, "more requests after the restarts")
    stop.set()
    t.join(20)
    assert set(statuses) == {200}, sorted(set(statuses))
    for name, port in (("web1", p1), ("web2", p2)):
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit() and
                _cmdline_has(int(d), str(prog), str(port))]
        assert pids == [programs(aport)[name]["pid"]], (name, pids)


def _cmdline_has(pid, *words):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return all(w.encode() in argv for w in words)


@pytest.mark.parametrize("data,status,body", [
    # padding on every record, stderr between stdout records
    (rec(6, b"Content-Type: text/plain\r\n\r\n", padding=255) + rec(7, b"warn", padding=3) +
     rec(6, b"ok", padding=7) + rec(6, b"") + end(), 200, b"ok"),
    (rec(7, b"e" * 65535) * 64 + OK, 200, b"ok"),                        # a stderr flood
    (rec(6, b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok") + end(), 200, b"ok"),
    (rec(6, b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nok") + end(), 502, None),
    (rec(6, b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n") + end(), 502, None),
    (rec(6, b"Status: 200\x01\r\n\r\nok") + end(), 502, None),
    (rec(6, b"X-Big: " + b"a" * 60000 + b"\r\n\r\nok") + end(), 502, None),
    (rec(6, b"Content-Length: 999999999999\r\n\r\nok") + end(), 502, None),
    (rec(6, b"\r\nok") + end(rid=2), 502, None),                          # END for another id
    (rec(6, b"\r\nok", rid=2) + OK, 502, None),                          # multiplexed ids
    (OK + rec(6, b"Status: 299\r\n\r\nSTALE") + end(), 502, None),       # STDOUT after END
], ids=["padding", "stderr-flood", "same-cl-twice", "cl-conflict", "transfer-encoding",
        "status-garbage", "header-over-limit", "huge-cl", "end-other-id", "multiplexed",
        "stdout-after-end"])
def test_hostile_records(bulwark, fake, tmp_path, data, status, body):
    """Held: hostile FastCGI responses are decoded or refused with 502, never relayed
    half-checked; the next request on the same client connection is answered too."""
    f = fake(reply(data, keep=True))
    b = bulwark(fake_config(f, tmp_path))
    c = client(b.port, timeout=20)
    for _ in range(2):
        c.sock.sendall(b"GET /a.php HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_response(c)
        assert r.status == status, r
        if body is not None:
            assert r.body == body and r.header("Content-Length") == str(len(body))
            assert len(r.all("Content-Length")) == 1
        else:
            assert "error=http_" in r.header("Proxy-Status")
    c.sock.close()


def test_keep_conn_is_not_reused_after_a_truncated_or_stale_response(bulwark, fake, tmp_path):
    """Held: a FCGI_KEEP_CONN connection whose response was cut (Content-Length 10, two
    bytes) is closed, and stale records that arrive on a pooled connection after its
    END_REQUEST never become the next request's response."""
    stale_sent = threading.Event()

    def handler(c, req, i):
        if i == 0:
            c.sendall(rec(6, b"Content-Length: 10\r\n\r\nok") + end())
        elif i == 1:
            c.sendall(OK)
            time.sleep(0.2)
            c.sendall(rec(6, b"Status: 299\r\n\r\nSTALE") + end())
            stale_sent.set()
        else:
            c.sendall(OK)
        return True
    f = fake(handler)
    b = bulwark(fake_config(f, tmp_path))
    assert get(b.port).status == 502
    r = get(b.port)
    assert (r.status, r.body) == (200, b"ok")
    assert f.accepted == 2
    assert stale_sent.wait(20)
    for _ in range(3):
        r = get(b.port)
        assert (r.status, r.body) == (200, b"ok")
