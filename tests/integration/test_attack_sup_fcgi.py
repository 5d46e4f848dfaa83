"""Attacks on the supervisor (src/supervise/, admin POST /programs/<name>/restart,
reload) and the FastCGI exchange (src/proxy/exchange_fastcgi.c, src/http/fastcgi.c)
from outside: the real binary, raw sockets, the real php-fpm from Debian and a
scripted fake FastCGI server sending hostile records. Each test is a finding or a
probe that held; the finding's fix is named in its docstring."""
import json
import sys
import os
import socket
import struct
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
