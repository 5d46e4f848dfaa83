"""Keep-alive learned from the backend: its Keep-Alive: timeout=N, max=M hints and
keepalive.max_requests retire pooled connections before the backend closes them (so a
POST never meets the close race), and every retried failure is counted in /metrics."""
import re
import time

from conftest import simple_config
from origins import free_port, read_request, iter_body, wait_for
from origins.faulty import fetch


def hinting_origin(origin, keep_alive, per_conn=None, closed_after=None):
    """An origin answering every request with Keep-Alive: <keep_alive>; per_conn (a list)
    gets how many requests each connection carried, closed_after the seconds between the
    last response on a connection and bulwark closing it."""
    def handler(c, o):
        n = 0
        c.sock.settimeout(30)
        try:
            while True:
                method, target, _v, headers = read_request(c)
                for _ in iter_body(c, headers):
                    pass
                with o.lock:
                    o.requests.append((method, target, headers))
                n += 1
                body = b"conn-request-%d" % n
                c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                               b"Keep-Alive: %s\r\n\r\n" % (len(body), keep_alive) + body)
                t0 = time.monotonic()
                # Wait for the next request or for bulwark to close the connection.
                c.sock.settimeout(30)
                try:
                    peek = c.sock.recv(1, 2)  # MSG_PEEK
                except OSError:
                    peek = b""
                if not peek:
                    if closed_after is not None:
                        closed_after.append(time.monotonic() - t0)
                    return
        finally:
            if per_conn is not None:
                with o.lock:
                    per_conn.append(n)
    return origin(handler)



def test_keep_alive_timeout_hint_retires_the_idle_connection_early(bulwark, origin):
    closed_after = []
    o = hinting_origin(origin, b"timeout=1", closed_after=closed_after)
    b = bulwark(simple_config([o.addr]))
    resp = fetch(b.port, "/a")
    assert resp.status == 200, resp.head
    # The backend said it keeps idle connections 1 s: bulwark closes ours before that
    # (at half the timeout for timeouts of 2 s or less), not after its own 60 s.
    wait_for(lambda: closed_after, timeout=10, what="bulwark to retire the connection")
    assert 0.3 <= closed_after[0] < 1.0, closed_after
    # The next POST goes over a new connection and succeeds.
    post = fetch(b.port, "/p", method="POST", body=b"x" * 100)
    assert post.status == 200 and post.data == b"conn-request-1", post.head
    assert o.connections == 2


def test_keep_alive_max_hint_retires_the_connection_after_its_requests(bulwark, origin):
    per_conn = []
    # max=1: one more request may follow this one on the connection
    o = hinting_origin(origin, b"timeout=30, max=1", per_conn=per_conn)
    b = bulwark(simple_config([o.addr]))
    bodies = [fetch(b.port, f"/r{i}", method="POST", body=b"y").data for i in range(6)]
    assert bodies == [b"conn-request-1", b"conn-request-2"] * 3, bodies
    wait_for(lambda: len(per_conn) == 3, what="three retired connections")
    assert per_conn == [2, 2, 2]


def test_max_requests_setting_caps_each_pooled_connection(bulwark, origin):
    per_conn = []
    o = hinting_origin(origin, b"timeout=30", per_conn=per_conn)
    b = bulwark(simple_config([o.addr], extra_upstream="    keepalive: {max_requests: 3}\n"))
    bodies = [fetch(b.port, f"/r{i}").data for i in range(7)]
    assert bodies == [b"conn-request-1", b"conn-request-2", b"conn-request-3"] * 2 + \
        [b"conn-request-1"], bodies
    wait_for(lambda: len(per_conn) >= 2, what="two retired connections")
    assert per_conn[:2] == [3, 3]
    assert o.connections == 3


def test_retries_are_counted_by_group_and_cause(bulwark, origin):
    live = origin()
    dead = f"127.0.0.1:{free_port()}"
    admin_port = free_port()
    b = bulwark(simple_config([dead, live.addr],
                              extra_top=f'admin: "127.0.0.1:{admin_port}"\n'))
    for i in range(4):
        assert fetch(b.port, f"/echo{i}").status == 200
    # round robin over [dead, live]: two of the four requests met the dead server first
    metrics = fetch(admin_port, "/metrics").data.decode()
    m = re.search(r'^bulwark_upstream_retries_total\{group="app",cause="connection_refused"\} '
                  r'(\d+)$', metrics, re.M)
    assert m and int(m.group(1)) == 2, metrics[-2000:]
