"""Attacks on the supervisor (src/supervise/, admin POST /programs/<name>/restart,
reload) and the FastCGI exchange (src/proxy/exchange_fastcgi.c, src/http/fastcgi.c)
from outside: the real binary, raw sockets, the real php-fpm from Debian and a
scripted fake FastCGI server sending hostile records. Each test is a finding or a
probe that held; the finding's fix is named in its docstring."""
import json
import os
import socket
import struct
import threading
import time

import pytest

from origins import client, read_response, wait_for
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
