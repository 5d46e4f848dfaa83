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


def test_text_and_binary_frames_are_echoed(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = handshake(b)
    messages = [
        (1, "hello".encode()),
        (1, "ünïcödé ✓".encode()),
        (2, bytes(range(256))),
        (2, b""),
        (1, b"x" * 125),
        (2, os.urandom(126)),        # 16-bit length
        (2, os.urandom(70000)),      # 64-bit length
        (1, b"last"),
    ]
    for opcode, payload in messages:
        c.sock.sendall(ws_client_frame(opcode, payload))
        fin, op, data, masked = ws_read_server_frame(c)
        assert (fin, op, data) == (True, opcode, payload)
        assert not masked, "server frames must not be masked"


def test_frames_sent_back_to_back_arrive_in_order(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = handshake(b)
    payloads = [b"msg-%d" % i * (i + 1) for i in range(30)]
    c.sock.sendall(b"".join(ws_client_frame(2 if i % 2 else 1, p) for i, p in enumerate(payloads)))
    for i, p in enumerate(payloads):
        fin, op, data, _ = ws_read_server_frame(c)
        assert (op, data) == (2 if i % 2 else 1, p)


def test_frame_split_across_writes(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = handshake(b)
    frame = ws_client_frame(1, b"split across many tcp writes")
    for i in range(len(frame)):
        c.sock.sendall(frame[i:i + 1])
    assert ws_read_server_frame(c)[2] == b"split across many tcp writes"


def test_close_handshake_ends_the_tunnel(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    c = handshake(b)
    c.sock.sendall(ws_client_frame(1, b"before close"))
    assert ws_read_server_frame(c)[2] == b"before close"
    close_payload = (1000).to_bytes(2, "big") + b"bye"
    c.sock.sendall(ws_client_frame(8, close_payload))
    fin, op, data, _ = ws_read_server_frame(c)
    assert op == 8 and data == close_payload
    assert is_closed(c, timeout=5.0), "tunnel left open after the close handshake"
    b.wait_log(r'"GET /ws HTTP/1.1" 101 ', what="access")


def test_tunnel_timeout_closes_an_idle_tunnel(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="tunnel_timeout: 1s\n"))
    c = handshake(b)
    c.sock.sendall(ws_client_frame(1, b"ping"))
    assert ws_read_server_frame(c)[2] == b"ping"
    t0 = time.monotonic()
    assert is_closed(c, timeout=5.0), "idle tunnel not closed"
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed < 3.0, f"closed after {elapsed:.2f}s with tunnel_timeout 1s"


def test_active_tunnel_outlives_tunnel_timeout(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="tunnel_timeout: 1s\n"))
    c = handshake(b)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.5:
        c.sock.sendall(ws_client_frame(1, b"tick %d" % i))
        assert ws_read_server_frame(c)[2] == b"tick %d" % i
        assert not is_closed(c, timeout=0.4)  # gaps shorter than the timeout
        i += 1
    assert i >= 5


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
