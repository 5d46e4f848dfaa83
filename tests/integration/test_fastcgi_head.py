"""HEAD on a FastCGI route answers as for an HTTP upstream (RFC 9110 9.3.2): the header
fields a GET would get, the client connection kept. PHP drops the body of a HEAD itself,
so a length it did not send is unknown and omitted (9.3.2 allows it), a Content-Length the
script set is relayed. Against the real php-fpm (see test_fastcgi.py)."""
import os

import pytest

from origins import client, read_response
from test_fastcgi import FPM, Fpm, config

pytestmark = pytest.mark.skipif(not os.path.exists(FPM), reason="php-fpm8.2 is not installed")

SCRIPTS = {
    "hello.php": r"""<?php header("X-App: hello"); setcookie("a", "1"); setcookie("b", "2");
echo "hello";""",
    "stream.php": r"""<?php header("X-App: stream");
for ($i = 0; $i < 50; $i++) { echo str_repeat("s", 10000); flush(); }""",
    "sized.php": r"""<?php header("Content-Length: 5"); echo "sized";""",
    "gone.php": r"""<?php http_response_code(404); header("X-Why: none"); echo "not here";""",
    "moved.php": r"""<?php header("Location: /hello.php", true, 301);""",
}

# Fields that frame the body (and our per-request id) may differ between a GET and a HEAD.
FRAMING = {"content-length", "transfer-encoding", "x-request-id"}


@pytest.fixture
def fpm(tmp_path):
    f = Fpm(tmp_path)
    for name, text in SCRIPTS.items():
        (f.www / name).write_text(text)
    f.start()
    yield f
    f.stop()


def fields(r, skip=FRAMING):
    return sorted((k.lower(), v) for k, v in r.headers if k.lower() not in skip)


def exchange(c, method, target, version="1.1", extra=""):
    c.sock.sendall(f"{method} {target} HTTP/{version}\r\nHost: php.test\r\n{extra}\r\n".encode())
    return read_response(c, method)


def test_head_has_the_fields_of_get_and_keeps_the_connection(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    c = client(b.port, timeout=20)
    for target, status in (("/hello.php", 200), ("/stream.php", 200), ("/gone.php", 404),
                           ("/moved.php", 301)):
        get = exchange(c, "GET", target)
        head = exchange(c, "HEAD", target)
        assert get.status == head.status == status, (target, get, head)
        assert fields(head) == fields(get), target
        assert head.body == b"", target
        # no close: the next request goes on the same connection (the loop goes on)
        assert head.header("Connection") is None, (target, head.headers)
        assert get.header("Connection") is None, (target, get.headers)
        # the length PHP never computed for the HEAD is left out, not made up
        assert head.header("Content-Length") is None, (target, head.headers)
        assert head.header("Transfer-Encoding") is None, (target, head.headers)
    # a Content-Length the script set is the GET's one
    get = exchange(c, "GET", "/sized.php")
    head = exchange(c, "HEAD", "/sized.php")
    assert (get.status, get.body) == (200, b"sized")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length") == "5"
    assert fields(head, {"x-request-id"}) == fields(get, {"x-request-id"})
    # both Set-Cookie fields of a HEAD stay two fields
    head = exchange(c, "HEAD", "/hello.php")
    assert sorted(head.all("Set-Cookie")) == ["a=1", "b=2"]
    # and the connection still carries a GET after all those HEADs
    r = exchange(c, "GET", "/hello.php")
    assert (r.status, r.body) == (200, b"hello")
    c.sock.close()


def test_head_from_an_http_1_0_client_keeps_alive(bulwark, fpm):
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    c = client(b.port, timeout=20)
    for _ in range(2):
        r = exchange(c, "HEAD", "/hello.php", version="1.0", extra="Connection: keep-alive\r\n")
        assert r.status == 200 and r.body == b"", r
        assert r.header("Connection") == "keep-alive", r.headers
        assert r.header("X-App") == "hello"
    c.sock.close()
