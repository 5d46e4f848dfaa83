"""FastCGI: bulwark in front of the real PHP-FPM from Debian (/usr/sbin/php-fpm8.2),
started by the tests with a pool in a temp dir (unix socket and a 127.0.0.1 port,
pm static), and PHP scripts the tests write: CGI/1.1 params, bodies both ways,
headers and cookies, Status and Location, PATH_INFO, the script-path rules (root,
extensions, the cgi.fix_pathinfo hole), and the errors (slow script, FPM gone,
malformed records, "Primary script unknown", a PHP fatal)."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BIN
from origins import client, free_port, pattern_pieces, read_response, wait_for

FPM = "/usr/sbin/php-fpm8.2"

pytestmark = pytest.mark.skipif(not os.path.exists(FPM), reason="php-fpm8.2 is not installed")

SCRIPTS = {
    "env.php": r"""<?php
setcookie("first", "1");
setcookie("second", "2");
header("Content-Type: application/json");
$keys = ["SCRIPT_FILENAME", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD",
         "CONTENT_TYPE", "CONTENT_LENGTH", "REQUEST_URI", "DOCUMENT_URI", "DOCUMENT_ROOT",
         "SERVER_PROTOCOL", "GATEWAY_INTERFACE", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_ADDR",
         "SERVER_PORT", "SERVER_NAME", "HTTPS", "HTTP_HOST", "HTTP_X_CUSTOM", "HTTP_COOKIE",
         "HTTP_PROXY", "HTTP_X_REQUEST_ID", "APP_ENV"];
$out = [];
foreach ($keys as $k) { $out[$k] = $_SERVER[$k] ?? null; }
$out["GET"] = $_GET; $out["POST"] = $_POST; $out["COOKIE"] = $_COOKIE;
echo json_encode($out);
""",
    "md5.php": r"""<?php
$in = fopen("php://input", "rb"); $ctx = hash_init("md5"); $n = 0;
while (!feof($in)) { $b = fread($in, 65536); $n += strlen($b); hash_update($ctx, $b); }
echo hash_final($ctx), " ", $n;
""",
    "teapot.php": r"""<?php header("HTTP/1.1 418 I'm a teapot"); echo "short and stout";""",
    "redirect.php": r"""<?php header("Location: https://example.com/next"); """,
    "big.php": r"""<?php for ($i = 0; $i < 200; $i++) { echo str_repeat(chr(65 + $i % 26), 10000); flush(); }""",
    "slow.php": r"""<?php sleep(5); echo "late";""",
    "fatal.php": r"""<?php no_such_function();""",
    "pid.php": r"""<?php echo getmypid();""",
    "index.php": r"""<?php echo "index";""",
}


class Fpm:
    """php-fpm -F with one pool on a unix socket and one on a 127.0.0.1 port."""

    def __init__(self, tmp_path, children=2):
        self.dir = tmp_path / "fpm"
        self.dir.mkdir(exist_ok=True)
        self.www = tmp_path / "www"
        self.www.mkdir(exist_ok=True)
        for name, text in SCRIPTS.items():
            (self.www / name).write_text(text)
        self.sock = str(self.dir / "php.sock")
        self.port = free_port()
        self.conf = str(self.dir / "fpm.conf")
        pool = (f"pm = static\npm.max_children = {children}\nclear_env = no\n"
                "php_admin_value[display_errors] = off\nphp_admin_value[log_errors] = on\n"
                "php_admin_value[post_max_size] = 100M\n"
                "php_admin_value[upload_max_filesize] = 100M\n")
        with open(self.conf, "w") as f:
            f.write(f"[global]\nerror_log = {self.dir}/fpm.log\ndaemonize = no\n"
                    f"pid = {self.dir}/fpm.pid\n"
                    f"[unix]\nlisten = {self.sock}\n{pool}"
                    f"[tcp]\nlisten = 127.0.0.1:{self.port}\n{pool}")
        self.proc = None

    def argv(self):
        return [FPM, "-F", "-y", self.conf] + (["-R"] if os.getuid() == 0 else [])

    def start(self):
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self.answers, "php-fpm to listen", timeout=30)
        return self

    def answers(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("php-fpm exited: " + self.log())
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.sock)
            return True
        except OSError:
            return False

    def log(self):
        p = self.dir / "fpm.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def fpm(tmp_path):
    f = Fpm(tmp_path).start()
    yield f
    f.stop()


def config(server, root, upstream_extra="", route_extra="", top=""):
    return (f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\n{top}'
            f'upstreams:\n  php:\n    protocol: fastcgi\n    servers: ["{server}"]\n'
            f"{upstream_extra}"
            f"routes:\n  - upstream: php\n    root: {root}\n"
            f"    split_path_info: '^(.+?\\.php)(/.*)$'\n{route_extra}")


def request(port, method, target, headers=(), body=b"", timeout=30.0):
    c = client(port, timeout=timeout)
    head = f"{method} {target} HTTP/1.1\r\nHost: php.test:{port}\r\nConnection: close\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    c.sock.sendall(head.encode() + b"\r\n" + body)
    r = read_response(c, method)
    c.sock.close()
    return r


def test_get_params_headers_and_cookies(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    r = request(b.port, "GET", "/env.php?a=1&b=two%20words",
                headers=[("X-Custom", "hello"), ("Cookie", "c1=v1"), ("Cookie", "c2=v2"),
                         ("Proxy", "http://evil.example:3128"), ("X_Custom", "smuggled")])
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["GET"] == {"a": "1", "b": "two words"}
    assert env["QUERY_STRING"] == "a=1&b=two%20words"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REQUEST_URI"] == "/env.php?a=1&b=two%20words"
    assert env["SCRIPT_FILENAME"] == f"{fpm.www}/env.php"
    assert env["SCRIPT_NAME"] == "/env.php" and env["DOCUMENT_URI"] == "/env.php"
    assert env["DOCUMENT_ROOT"] == str(fpm.www)
    assert env["PATH_INFO"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and int(env["REMOTE_PORT"]) > 0
    assert env["SERVER_ADDR"] == "127.0.0.1" and env["SERVER_PORT"] == str(b.port)
    assert env["SERVER_NAME"] == "php.test" and env["HTTP_HOST"] == f"php.test:{b.port}"
    assert env["HTTPS"] is None  # plain HTTP: absent, as nginx's "if_not_empty"
    # several fields are one param; underscored names and Proxy (httpoxy) are dropped
    assert env["HTTP_X_CUSTOM"] == "hello"
    assert env["COOKIE"] == {"c1": "v1", "c2": "v2"}
    assert env["HTTP_PROXY"] is None
    assert env["HTTP_X_REQUEST_ID"] == r.header("X-Request-Id")
    assert sorted(r.all("Set-Cookie")) == ["first=1", "second=2"]
    assert r.header("Content-Type") == "application/json"
    # the whole response was there at once: it gets a length, not chunks
    assert r.framing == "length"


def test_post_form_and_params_override(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www,
                       route_extra="    params: {APP_ENV: staging, SERVER_NAME: forced}\n"))
    body = b"name=Ada+Lovelace&lang=php"
    r = request(b.port, "POST", "/env.php",
                headers=[("Content-Type", "application/x-www-form-urlencoded")], body=body)
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["POST"] == {"name": "Ada Lovelace", "lang": "php"}
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == str(len(body))
    assert env["APP_ENV"] == "staging" and env["SERVER_NAME"] == "forced"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_50_mib_upload_streams_in_bounded_memory(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    size = 50 << 20
    base = rss_kib(b.pid)
    c = client(b.port, timeout=60)
    c.sock.sendall(f"POST /md5.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
                   f"\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    md5 = hashlib.md5()
    peak = base
    for i, piece in enumerate(pattern_pieces(size)):
        c.sock.sendall(piece)
        md5.update(piece)
        if i % 64 == 0:
            peak = max(peak, rss_kib(b.pid))
    r = read_response(c)
    c.sock.close()
    assert r.status == 200, r
    assert r.body.decode() == f"{md5.hexdigest()} {size}"
    # streamed through 64 KiB blocks: RSS grows by a few MiB at most, never by 50
    assert peak - base < 16 * 1024, (base, peak)


def test_status_location_and_streamed_body(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    r = request(b.port, "GET", "/teapot.php")
    assert (r.status, r.reason, r.body) == (418, "I'm a teapot", b"short and stout")
    r = request(b.port, "GET", "/redirect.php")
    assert r.status == 302 and r.header("Location") == "https://example.com/next"
    # a body PHP flushes in pieces has no length: chunked to an HTTP/1.1 client
    r = request(b.port, "GET", "/big.php")
    assert r.status == 200 and r.framing == "chunked"
    assert r.body == b"".join(bytes([65 + i % 26]) * 10000 for i in range(200))


def test_path_info_and_index(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    env = json.loads(request(b.port, "GET", "/env.php/some/where?x=1").body)
    assert env["SCRIPT_NAME"] == "/env.php" and env["PATH_INFO"] == "/some/where"
    assert env["SCRIPT_FILENAME"] == f"{fpm.www}/env.php"
    r = request(b.port, "GET", "/")
    assert r.status == 200 and r.body == b"index"


def test_unknown_script_is_404(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    r = request(b.port, "GET", "/missing.php")
    assert r.status == 404 and "error=destination_not_found" in r.header("Proxy-Status")
    b.wait_log(r"refused request .* with 404: no script .*/missing\.php under root")
    # without check_script PHP-FPM answers itself: "Primary script unknown", 404 not 502
    b2 = bulwark(config(f"unix:{fpm.sock}", fpm.www, route_extra="    check_script: false\n"))
    r = request(b2.port, "GET", "/missing.php")
    assert r.status == 404, r
    rid = r.header("X-Request-Id")
    b2.wait_log(rf"FastCGI stderr from unix:.*Primary script unknown; rid={rid}")


def test_paths_escaping_root_are_refused(bulwark, fpm, tmp_path):
    (tmp_path / "secret.php").write_text("<?php echo 'SECRET';")
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    for target in ("/../secret.php", "/a/../../secret.php", "/%2e%2e/secret.php",
                   "/..%2fsecret.php"):
        r = request(b.port, "GET", target)
        assert r.status == 403, (target, r)
        assert b"SECRET" not in r.body
    r = request(b.port, "GET", "/x%00.php")
    assert r.status == 400


def test_fix_pathinfo_hole_stays_closed(bulwark, fpm):
    up = fpm.www / "uploads"
    up.mkdir()
    (up / "x.jpg").write_text("<?php echo 'PWNED';")
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    for target in ("/uploads/x.jpg/y.php", "/uploads/x.jpg", "/uploads/x.jpg/y.php/z"):
        r = request(b.port, "GET", target)
        assert r.status in (403, 404), (target, r)
        assert b"PWNED" not in r.body
    # an image is never a script, also not through PATH_INFO tricks with check_script off
    b2 = bulwark(config(f"unix:{fpm.sock}", fpm.www, route_extra="    check_script: false\n"))
    r = request(b2.port, "GET", "/uploads/x.jpg")
    assert r.status == 403 and b"PWNED" not in r.body


def test_slow_script_is_504_with_the_cause(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www, upstream_extra="    read_timeout: 500ms\n"))
    t0 = time.monotonic()
    r = request(b.port, "GET", "/slow.php")
    assert r.status == 504 and "error=http_response_timeout" in r.header("Proxy-Status")
    assert time.monotonic() - t0 < 4.5
    b.wait_log(r"waiting for the response header from unix:.* cause=http_response_timeout")


def test_fpm_stopped_mid_load_is_502_connection_refused(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www, upstream_extra="    retries: 0\n"))
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                statuses.append(request(b.port, "GET", "/pid.php", timeout=20).status)
            except (OSError, EOFError) as e:  # noqa: PERF203
                statuses.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: statuses.count(200) >= 20, "requests served by php-fpm")
    fpm.stop()
    wait_for(lambda: 502 in statuses[-5:], "502s once php-fpm is gone")
    stop.set()
    for t in threads:
        t.join(30)
    assert b.proc.poll() is None, "bulwark died"
    assert set(statuses) <= {200, 502, 504}, statuses
    r = request(b.port, "GET", "/pid.php")
    assert r.status == 502 and "error=connection_refused" in r.header("Proxy-Status")
    b.wait_log(r"connect\(\) to unix:.*php\.sock \(upstream \"php\"\) failed: .*PHP-FPM \(FastCGI\) "
               r"is not listening on unix:.*cause=connection_refused")


class CountingRelay:
    """A unix-socket relay in front of php-fpm that counts the connections it accepts:
    what php-fpm sees."""

    def __init__(self, path, target):
        self.accepted = 0
        self.target = target
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(64)
        self.closed = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            for a, z in ((c, u), (u, c)):
                threading.Thread(target=self.pipe, args=(a, z), daemon=True).start()

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


def test_keep_conn_connections_are_pooled(bulwark, fpm, tmp_path):
    relay = CountingRelay(str(tmp_path / "relay.sock"), fpm.sock)
    try:
        b = bulwark(config(f"unix:{tmp_path}/relay.sock", fpm.www))
        for i in range(20):
            r = request(b.port, "GET", f"/env.php?i={i}")
            assert r.status == 200 and json.loads(r.body)["GET"] == {"i": str(i)}
        assert relay.accepted < 20 and relay.accepted <= 2, relay.accepted
    finally:
        relay.close()


def test_tcp_pool_works_too(bulwark, fpm):
    b = bulwark(config(f"127.0.0.1:{fpm.port}", fpm.www))
    r = request(b.port, "GET", "/index.php")
    assert r.status == 200 and r.body == b"index"


def test_php_fatal_is_500_with_stderr_in_the_log(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    r = request(b.port, "GET", "/fatal.php")
    assert r.status == 500, r
    rid = r.header("X-Request-Id")
    b.wait_log(rf"FastCGI stderr from unix:.*PHP Fatal error: .*no_such_function.*; rid={rid}")


def test_chunked_request_body_is_411(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    c = client(b.port)
    c.sock.sendall(b"POST /md5.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n")
    r = read_response(c)
    assert r.status == 411


def fake_fastcgi(path, reply):
    """A FastCGI server on a unix socket: reads one request's records up to the empty
    STDIN, answers the raw bytes reply, closes."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            buf = b""
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    buf += d
                    if b"\x01\x05\x00\x01\x00\x00\x00\x00" in buf:  # empty STDIN
                        c.sendall(reply)
                        break
            finally:
                c.close()

    threading.Thread(target=run, daemon=True).start()
    return srv


def rec(rtype, content, rid=1, version=1):
    return struct.pack(">BBHHBB", version, rtype, rid, len(content), 0, 0) + content


END = rec(3, b"\x00\x00\x00\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("reply", [
    rec(6, b"Status: 200\r\n\r\nok", version=2) + END,      # bad version
    rec(6, b"Status: 200\r\n\r\nok", rid=7) + END,          # another request id
    rec(9, b"") + END,                                        # a type we never asked for
    rec(6, b"Status: 200\r\n\r\nok") + rec(3, b"\x00" * 4),  # END_REQUEST body too short
    rec(6, b"Status: 20x\r\n\r\nok") + END,                 # bad Status
    rec(6, b"Status: 200\r\nbad header\r\n\r\n") + END,      # no colon
    END,                                                      # no output at all
])
def test_malformed_records_are_502_protocol_error(bulwark, tmp_path, reply):
    srv = fake_fastcgi(str(tmp_path / "fake.sock"), reply)
    try:
        b = bulwark(config(f"unix:{tmp_path}/fake.sock", tmp_path,
                           upstream_extra="    retries: 0\n",
                           route_extra="    check_script: false\n"))
        r = request(b.port, "GET", "/x.php")
        assert r.status == 502 and "error=http_protocol_error" in r.header("Proxy-Status"), r
        b.wait_log(r"parsing the response from unix:.*cause=http_protocol_error")
    finally:
        srv.close()


def test_a_record_split_anywhere_is_decoded(bulwark, tmp_path):
    """Records cut at every byte (the decoder keeps partial headers across reads)."""
    body = rec(7, b"a warning\n") + rec(6, b"Content-Type: text/plain\r\n\r\nhel") + \
        rec(6, b"lo") + rec(6, b"") + END
    path = str(tmp_path / "drip.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def run():
        c, _ = srv.accept()
        buf = b""
        while b"\x01\x05\x00\x01\x00\x00\x00\x00" not in buf:
            buf += c.recv(65536)
        for i in range(len(body)):
            c.sendall(body[i:i + 1])
            time.sleep(0.002)
        c.close()

    threading.Thread(target=run, daemon=True).start()
    try:
        b = bulwark(config(f"unix:{path}", tmp_path, route_extra="    check_script: false\n"))
        r = request(b.port, "GET", "/x.php")
        assert r.status == 200 and r.body == b"hello", r
        b.wait_log(r"FastCGI stderr from unix:.*: a warning; rid=")
    finally:
        srv.close()


def test_php_fpm_as_a_supervised_program_on_a_unix_socket(bulwark, tmp_path):
    f = Fpm(tmp_path)
    argv = ", ".join(json.dumps(a) for a in f.argv())
    cfg = config(f"unix:{f.sock}", f.www) + (
        f"programs:\n  fpm:\n    command: [{argv}]\n    upstream: php\n"
        f'    server: "unix:{f.sock}"\n    ready_timeout: 20s\n    stop_timeout: 10s\n')
    b = bulwark(cfg)
    b.wait_log(r"program fpm is ready: upstream \"php\" server unix:.*php\.sock is up")
    r = request(b.port, "GET", "/index.php")
    assert r.status == 200 and r.body == b"index"
    assert b.stop() == 0
    assert not os.path.exists(f.sock) or not f.answers()


def run_check(tmp_path, text):
    path = tmp_path / "check.yaml"
    path.write_text(text)
    return str(path), subprocess.run([BIN, "check", "--no-probe", "-c", str(path)],
                                     capture_output=True, text=True, timeout=30)


def test_config_errors_name_file_line_column(tmp_path):
    text = ('listen: ["unix:/tmp/x.sock"]\n'                      # 1
            "upstreams:\n"                                         # 2
            "  php:\n"                                             # 3
            "    protocol: fastcgi\n"                              # 4
            '    servers: ["unix:relative.sock"]\n'                # 5
            "    health: {mode: http}\n"                           # 6
            "  app:\n"                                             # 7
            '    servers: ["127.0.0.1:9000"]\n'                    # 8
            "routes:\n"                                            # 9
            "  - upstream: php\n"                                  # 10
            "    split_path_info: '^(.+\\.php)$'\n"                # 11
            "  - upstream: app\n"                                  # 12
            "    root: /var/www\n")                                # 13
    path, p = run_check(tmp_path, text)
    assert p.returncode == 2, p
    err = p.stderr
    assert re.search(rf"^{re.escape(path)}:1:\d+: bad address \"unix:/tmp/x.sock\" for listen: "
                     r"unix sockets are for upstream servers", err, re.M), err
    assert re.search(rf"^{re.escape(path)}:5:\d+: .*unix socket path must be absolute", err, re.M)
    assert re.search(rf"^{re.escape(path)}:6:\d+: health mode http .* speaks FastCGI", err, re.M)
    assert re.search(rf"^{re.escape(path)}:10:\d+: route 1: upstream \"php\" speaks FastCGI, so "
                     r"the route needs root", err, re.M), err
    assert re.search(rf"^{re.escape(path)}:11:\d+: bad split_path_info .* needs two groups",
                     err, re.M), err
    assert re.search(rf"^{re.escape(path)}:13:\d+: root in route 2: only for FastCGI routes",
                     err, re.M), err


def test_unix_socket_http_upstream(bulwark, tmp_path):
    """unix:/path works for HTTP upstreams too (a tiny HTTP server on a unix socket)."""
    path = str(tmp_path / "http.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        break  # a health check's connect-only probe
                    buf += d
                if buf:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                              b"Connection: close\r\n\r\nunix")
            except OSError:
                pass
            c.close()

    threading.Thread(target=run, daemon=True).start()
    try:
        b = bulwark(f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\nupstreams:\n  app:\n'
                    f'    servers: ["unix:{path}"]\n    health: {{mode: tcp, interval: 100ms}}\n'
                    "routes:\n  - upstream: app\n")
        r = request(b.port, "GET", "/")
        assert r.status == 200 and r.body == b"unix"
        srv.close()
        os.unlink(path)
        b.wait_log(r"upstream \"app\" server unix:.*http\.sock is down")
    finally:
        srv.close()
