"""WebSocket (HTTP/1.1 Upgrade) tunnels through bulwark."""
import base64
import hashlib
import os
import time

from conftest import simple_config
from origins import client, is_closed, read_response, ws_client_frame, ws_read_server_frame

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake(b, path="/ws"):
    c = client(b.port, timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    c.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    r = read_response(c)
    assert r.status == 101, r
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert r.header("Sec-WebSocket-Accept") == expected
    assert r.header("Upgrade", "").lower() == "websocket"
    assert "upgrade" in r.header("Connection", "").lower()
    return c


def test_upgrade_is_forwarded_with_its_headers(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = handshake(b)
    method, target, headers = o.requests[-1]
    got = {k.lower(): v for k, v in headers}
    assert target == "/ws"
    assert got["upgrade"].lower() == "websocket"
    assert "upgrade" in got["connection"].lower()
    assert got["sec-websocket-version"] == "13"
    c.sock.close()


def test_tunnel_timeout_does_not_apply_to_plain_requests(bulwark, origin):
    """A short tunnel_timeout is not a limit on ordinary keep-alive requests."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="tunnel_timeout: 1s\n"))
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).status == 200
    assert not is_closed(c, timeout=1.5)


def test_upgrade_refused_by_the_origin_is_a_normal_response(bulwark, origin):
    """The origin answers 200 instead of 101: no tunnel, the response is relayed."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert r.json()["target"] == "/echo"
