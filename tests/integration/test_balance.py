"""Balancers: round_robin spreads evenly and respects weights, least_conn avoids a
busy server, hash keeps a key on one server."""
import collections
import json
import socket
import threading
import time

from conftest import simple_config
from origins.faulty import drain_request, fetch, record, respond


def served_by(resp):
    assert resp.status == 200, resp.head
    return json.loads(resp.data)["port"]


def weighted(servers):
    """servers: [(addr, weight)] as {address, weight} entries."""
    items = ", ".join(f'{{ address: "{a}", weight: {w} }}' for a, w in servers)
    return ('workers: 1\nlisten: ["127.0.0.1:{port}"]\n'
            f"upstreams:\n  app:\n    servers: [{items}]\n"
            "routes:\n  - upstream: app\n")


def test_round_robin_spreads_requests_evenly(bulwark, origin):
    origins = [origin() for _ in range(3)]
    b = bulwark(simple_config([o.addr for o in origins]))
    counts = collections.Counter(served_by(fetch(b.port, f"/echo?i={i}")) for i in range(30))
    assert counts == {o.port: 10 for o in origins}


def test_round_robin_alternates_over_keep_alive_client_connection(bulwark, origin):
    # The balancer picks per request, not per client connection.
    origins = [origin() for _ in range(2)]
    b = bulwark(simple_config([o.addr for o in origins]))
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        ports = [served_by(fetch(b.port, f"/echo?i={i}", sock=s)) for i in range(6)]
    assert collections.Counter(ports) == {origins[0].port: 3, origins[1].port: 3}
    assert ports[0] != ports[1]


def test_weights_are_respected(bulwark, origin):
    heavy, light = origin(), origin()
    b = bulwark(weighted([(heavy.addr, 3), (light.addr, 1)]))
    counts = collections.Counter(served_by(fetch(b.port, f"/echo?i={i}")) for i in range(40))
    assert counts == {heavy.port: 30, light.port: 10}


def slow_path(release):
    """An origin whose /slow requests wait for release; anything else answers at once
    with JSON naming the origin's port."""
    def handler(c, o):
        while True:
            method, target, headers = drain_request(c)
            record(o, method, target, headers)
            if target.startswith("/slow"):
                release.wait(10)
            respond(c, json.dumps({"port": o.port, "target": target}).encode())
    return handler


def test_least_conn_prefers_the_idle_server(bulwark, origin):
    release = threading.Event()
    x, y = origin(slow_path(release)), origin(slow_path(release))
    b = bulwark(simple_config([x.addr, y.addr], extra_upstream="    balance: least_conn\n"))
    slow = []
    t = threading.Thread(target=lambda: slow.append(fetch(b.port, "/slow")), daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 10
        while not (x.requests or y.requests) and time.monotonic() < deadline:
            time.sleep(0.005)
        busy, idle = (x, y) if x.requests else (y, x)
        assert len(busy.requests) == 1, "the slow request never reached an origin"
        # With one request in flight on `busy`, every new request goes to `idle`
        # (round robin would send half of them to `busy`).
        ports = [served_by(fetch(b.port, f"/fast?i={i}")) for i in range(10)]
        assert ports == [idle.port] * 10
        assert len(busy.requests) == 1
    finally:
        release.set()
    t.join(10)
    assert slow and slow[0].status == 200
    assert json.loads(slow[0].data)["port"] == busy.port
    # Both idle again: least_conn spreads the load over both.
    ports = {served_by(fetch(b.port, f"/fast?j={i}")) for i in range(4)}
    assert ports == {x.port, y.port}


def test_hash_on_header_keeps_each_user_on_one_server(bulwark, origin):
    origins = [origin() for _ in range(3)]
    b = bulwark(simple_config([o.addr for o in origins],
                              extra_upstream="    balance: hash\n    hash_key: header:X-User\n"))
    placement = {}
    for round_ in range(4):
        for u in range(12):
            port = served_by(fetch(b.port, f"/echo?r={round_}", headers=[("X-User", f"user-{u}")]))
            assert placement.setdefault(u, port) == port, f"user-{u} moved between servers"
    assert len(set(placement.values())) >= 2, "12 users must not all hash to one server"


def test_hash_on_uri_keeps_each_path_on_one_server(bulwark, origin):
    origins = [origin() for _ in range(3)]
    b = bulwark(simple_config([o.addr for o in origins],
                              extra_upstream="    balance: hash\n    hash_key: uri\n"))
    placement = {}
    for round_ in range(3):
        for p in range(12):
            port = served_by(fetch(b.port, f"/echo/item{p}"))
            assert placement.setdefault(p, port) == port, f"/echo/item{p} moved between servers"
    assert len(set(placement.values())) >= 2
