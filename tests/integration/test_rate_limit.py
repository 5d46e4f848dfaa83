"""rate_limit: GCRA per key (client address, a header, the route), 429 with Retry-After
and Proxy-Status, RateLimit headers, nodelay false holding the burst to the rate, and the
heavy hitters in /status and /metrics. Clients from other addresses bind 127.0.0.2 and
127.0.0.3 (all of 127.0.0.0/8 is loopback on Linux) before they connect."""
import http.client
import json
import re
import socket
import threading
import time
import urllib.request

from conftest import simple_config
from origins import free_port, wait_for

STATUS_RE = re.compile(r'^"(?P<name>(?:[^"\\]|\\.)*)";q=(?P<q>\d+);w=(?P<w>\d+)$')
STATE_RE = re.compile(r'^"(?P<name>(?:[^"\\]|\\.)*)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def start(bulwark, origin, rate_limit=None, routes=None, extra_top="", workers=2):
    o = origin()
    admin = free_port()
    top = f'admin: "127.0.0.1:{admin}"\n' + extra_top
    if rate_limit:
        top += f"rate_limit: {rate_limit}\n"
    cfg = simple_config([o.addr], extra_top=top, routes=routes)
    cfg = cfg.replace("workers: 1", f"workers: {workers}")
    b = bulwark(cfg)
    b.admin = admin
    return b, o


def conn(b, source="127.0.0.1", timeout=10.0):
    return http.client.HTTPConnection("127.0.0.1", b.port, timeout=timeout,
                                      source_address=(source, 0))


def get(c, path="/echo", headers=None):
    """(status, headers, seconds) of one request on a kept-alive connection."""
    t0 = time.monotonic()
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    r.read()
    return r.status, r.headers, time.monotonic() - t0


def admin(b, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.admin}{path}", timeout=10) as r:
        return r.read().decode()


def test_twice_the_rate_gets_about_half_429s_each_with_retry_after(bulwark, origin):
    # burst 1: a tolerance of one interval, so a client's timer jitter (a request
    # 1 ms early) does not cost it its slot; 10 s at 10/s lets 100 + 2 through.
    b, _ = start(bulwark, origin, '{rate: "10/s", burst: 1, nodelay: true}')
    c = conn(b)
    statuses = []
    t0 = time.monotonic()
    for i in range(200):  # 20/s for 10 s, on an absolute schedule
        delay = t0 + i * 0.05 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        status, headers, _ = get(c)
        statuses.append(status)
        assert status in (200, 429)
        if status == 429:
            ra = headers.get("Retry-After")
            assert ra is not None and ra.isdigit() and int(ra) >= 1, headers
            assert headers.get("Proxy-Status") == "bulwark; error=http_request_denied"
    refused = statuses.count(429) / len(statuses)
    assert abs(refused - 0.5) <= 0.05, f"{statuses.count(429)} of {len(statuses)} refused"
    b.wait_log(r'" 429 \d+ .* error=http_request_denied rid=', what="access")


def test_burst_is_honoured_exactly(bulwark, origin):
    # One request a minute: nothing refills during the test. GCRA with burst B lets
    # B + 1 requests through at once; the next waits one interval (60 s) for its turn.
    b, o = start(bulwark, origin, '{rate: "1/m", burst: 4, nodelay: true}')
    c = conn(b)
    got = [get(c) for _ in range(7)]
    assert [s for s, _, _ in got] == [200] * 5 + [429] * 2
    for _, headers, _ in got[5:]:
        assert 55 <= int(headers["Retry-After"]) <= 60, headers
    assert len(o.requests) == 5


def test_nodelay_false_holds_the_burst_to_the_rate(bulwark, origin):
    # 5/s: one every 200 ms. Burst 3: of five requests at once, four are served, at
    # 0, 200, 400 and 600 ms; the fifth is over the burst and refused at once.
    b, o = start(bulwark, origin, '{rate: "5/s", burst: 3}')
    results = [None] * 5
    conns = [conn(b) for _ in range(5)]
    for c in conns:
        c.connect()

    def one(i):
        results[i] = get(conns[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(r[0] for r in results) == [200] * 4 + [429], results
    served = sorted(r[2] for r in results if r[0] == 200)
    refused = [r[2] for r in results if r[0] == 429]
    assert served[-1] >= 0.55, served  # the last one waited three intervals
    assert served[-1] < 5.0, served  # and not much more (bound for a busy machine)
    assert served[0] < 0.5, served  # the first one was not held
    assert refused[0] < served[-1], (refused, served)  # the refusal was not held
    assert len(o.requests) == 4
    metrics = admin(b, "/metrics")
    m = re.search(r'bulwark_rate_limit_delayed_total\{route="\*/"\} (\d+)', metrics)
    assert m and int(m.group(1)) == 3, metrics


def test_client_gone_while_delayed_ends_the_request(bulwark, origin):
    # 1/s, burst 5: the second request at once is held 1 s. Its client closes
    # meanwhile: the request ends (499) and never reaches the origin.
    b, o = start(bulwark, origin, '{rate: "1/s", burst: 5}', workers=1)
    c = conn(b)
    assert get(c)[0] == 200
    s = socket.create_connection(("127.0.0.1", b.port))
    s.sendall(b"GET /echo?gone HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    b.wait_log(r'"GET /echo\?gone HTTP/1.1" 499 ', what="access")
    # A third request is queued behind the one that left: once it is served, the
    # gone one's turn has passed too.
    assert get(c, "/echo?third")[0] == 200
    targets = [t for _, t, _ in o.requests]
    assert targets == ["/echo", "/echo?third"], targets


def test_one_flooder_does_not_limit_or_slow_the_others(bulwark, origin):
    b, o = start(bulwark, origin, '{rate: "20/s", burst: 10, nodelay: true}')
    stop = threading.Event()
    flood_statuses = []

    def flood():
        c = conn(b)
        while not stop.is_set():
            flood_statuses.append(get(c)[0])

    floods = [threading.Thread(target=flood) for _ in range(3)]
    for t in floods:
        t.start()
    wait_for(lambda: flood_statuses.count(429) > 50, "the flooder to be refused")
    normal = {"127.0.0.2": [], "127.0.0.3": []}

    def polite(source):
        c = conn(b, source)
        t0 = time.monotonic()
        for i in range(15):  # 5/s for 3 s: well under the limit
            delay = t0 + i * 0.2 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            normal[source].append(get(c)[::2])

    politeness = [threading.Thread(target=polite, args=(src,)) for src in normal]
    for t in politeness:
        t.start()
    for t in politeness:
        t.join(60)
    stop.set()
    for t in floods:
        t.join(20)
    for source, got in normal.items():
        assert [s for s, _ in got] == [200] * 15, (source, got)
        lat = sorted(t for _, t in got)
        assert lat[len(lat) * 9 // 10] < 0.25, (source, lat)  # p90 under 250 ms, busy machine
    assert flood_statuses.count(429) > flood_statuses.count(200)

    # Heavy hitters: the flooder leads both lists, in /status and in /metrics.
    st = json.loads(admin(b, "/status"))
    top = st["top_clients"]
    assert top["by_requests"][0]["key"] == "127.0.0.1", top
    assert top["by_rejected"][0]["key"] == "127.0.0.1", top
    assert all(c["key"] != "127.0.0.2" for c in top["by_rejected"]), top
    first = top["by_requests"][0]
    assert first["count"] >= first["error"] >= 0
    assert st["rate_limit"]["entries"] >= 3 and st["rate_limit"]["capacity"] >= 1000000
    metrics = admin(b, "/metrics")
    assert re.search(r'(?m)^bulwark_top_client_requests\{client="127\.0\.0\.1"\} \d+$', metrics)
    assert re.search(r'(?m)^bulwark_top_client_rejected\{client="127\.0\.0\.1"\} \d+$', metrics)
    m = re.search(r'(?m)^bulwark_rate_limited_total\{route="\*/"\} (\d+)$', metrics)
    assert m and int(m.group(1)) == flood_statuses.count(429)


def test_header_key_and_route_key(bulwark, origin):
    routes = ("routes:\n"
              "  - match: {path: /h/}\n    upstream: app\n"
              '    rate_limit: {rate: "1/m", key: "header:X-Api-Key", nodelay: true}\n'
              "  - match: {path: /r/}\n    upstream: app\n"
              '    rate_limit: {rate: "1/m", burst: 1, key: route, nodelay: true}\n'
              "  - upstream: app\n")
    b, _ = start(bulwark, origin, routes=routes)
    c = conn(b)
    assert get(c, "/h/1", {"X-Api-Key": "alice"})[0] == 200
    assert get(c, "/h/2", {"X-Api-Key": "alice"})[0] == 429
    assert get(c, "/h/3", {"X-Api-Key": "bob"})[0] == 200
    # no header: keyed on the client's address, so leaving it out escapes nothing
    assert get(c, "/h/4")[0] == 200
    assert get(c, "/h/5")[0] == 429
    assert get(conn(b, "127.0.0.2"), "/h/6")[0] == 200
    # key route: one budget for everyone on the route (burst 1: two at once)
    assert get(conn(b, "127.0.0.2"), "/r/1")[0] == 200
    assert get(conn(b, "127.0.0.3"), "/r/2")[0] == 200
    assert get(c, "/r/3")[0] == 429
    # the catch-all route has no limit
    assert all(get(c, "/x")[0] == 200 for _ in range(5))


def test_ratelimit_headers_on_allowed_and_refused_responses(bulwark, origin):
    b, _ = start(bulwark, origin, '{rate: "60/m", burst: 2, nodelay: true, headers: true}',
                 extra_top="errors: {expose_details: true}\n")
    c = conn(b)
    remaining = []
    for i in range(4):
        status, headers, _ = get(c)
        policy = STATUS_RE.match(headers["RateLimit-Policy"])
        state = STATE_RE.match(headers["RateLimit"])
        assert policy and state, headers
        assert policy["name"] == state["name"] == "default"
        assert (policy["q"], policy["w"]) == ("60", "60")
        assert 1 <= int(state["t"]) <= 4
        remaining.append(int(state["r"]))
        assert status == (200 if i < 3 else 429)
    assert remaining == [2, 1, 0, 0]
    # with expose_details, the 429 says which limit
    assert headers["Proxy-Status"] == ('bulwark; error=http_request_denied; '
                                       'details="rate limit 60/m burst 2 exceeded (key client_ip)"')
    assert headers["Retry-After"] == "1"


def test_bad_rate_limit_config_is_refused_with_its_position(tmp_path):
    import subprocess
    from conftest import BIN
    p = tmp_path / "b.yaml"
    p.write_text('listen: ["127.0.0.1:1"]\nupstreams:\n  app:\n    servers: ["127.0.0.1:2"]\n'
                 'rate_limit: {rate: "ten/s", burst: -3, key: ip}\nroutes:\n  - upstream: app\n')
    r = subprocess.run([BIN, "check", "--no-probe", "-c", str(p)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert re.search(r'b\.yaml:5:20: bad rate "ten/s"', r.stderr + r.stdout)
    assert "burst must be 0 or more" in r.stderr + r.stdout
    assert 'unknown rate_limit key "ip"' in r.stderr + r.stdout
