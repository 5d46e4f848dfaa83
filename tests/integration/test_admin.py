"""The admin listener: GET /metrics (Prometheus text), /status (JSON, every upstream
group and server with its state and last error), /errors (the most recent gateway
errors with their evidence); an optional bearer token; `bulwark status` prints
/status as a table. Every request here runs against a real bulwark and real origins."""
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN
from origins import free_port, wait_port
from origins.faulty import drain_request, fetch

TOKEN = "t0ken-for-tests"


def config(live, dead, admin_port, token=TOKEN, extra_top=""):
    """Group "app" (a live origin) on /, group "dead" (nothing listening) on /dead/."""
    admin = (f'admin: {{address: "127.0.0.1:{admin_port}", token: "{token}"}}\n' if token
             else f'admin: "127.0.0.1:{admin_port}"\n')
    return ('workers: 2\nlisten: ["127.0.0.1:{port}"]\n' + admin + extra_top +
            "upstreams:\n"
            f'  app:\n    servers: ["{live}"]\n'
            f'  dead:\n    servers: ["{dead}"]\n    retries: 0\n'
            "routes:\n"
            "  - match: { path: /dead/ }\n    upstream: dead\n"
            "  - upstream: app\n")


def admin_get(port, path, token=TOKEN, method="GET", raw=None):
    """(status, headers dict, body bytes) of one admin request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if raw is None:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            raw = f"{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}\r\n".encode()
        s.sendall(raw)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
def setup(bulwark, origin):
    """A running bulwark with an admin port, its live origin and dead address."""
    def start(token=TOKEN, extra_top=""):
        live = origin()
        dead = f"127.0.0.1:{free_port()}"
        aport = free_port()
        b = bulwark(config(live.addr, dead, aport, token, extra_top))
        wait_port(aport)
        return b, aport, live, dead
    return start


def metric(text, name, **labels):
    """The value of the one sample of name whose labels include these."""
    found = []
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            found.append(float(m.group(3)))
    assert len(found) == 1, f"{name}{labels}: {found}\n{text}"
    return found[0]


def test_metrics_count_requests_attempts_and_a_502_cause(setup):
    b, aport, live, dead = setup()
    for _ in range(3):
        assert fetch(b.port, "/echo").status == 200
    for _ in range(2):
        assert fetch(b.port, "/dead/x").status == 502
    status, headers, body = admin_get(aport, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE bulwark_requests_total counter" in text
    five = [l for l in text.splitlines() if l.startswith("bulwark_requests_total{")
            and 'class="5xx"' in l and 'cause="connection_refused"' in l]
    assert len(five) == 1 and five[0].endswith(" 2"), text
    ok = [l for l in text.splitlines() if l.startswith("bulwark_requests_total{")
          and 'class="2xx"' in l and 'cause="none"' in l]
    assert len(ok) == 1 and ok[0].endswith(" 3"), text
    assert metric(text, "bulwark_upstream_attempts_total", group="dead", server=dead) == 2
    assert metric(text, "bulwark_upstream_failures_total", group="dead", server=dead,
                  cause="connection_refused") == 2
    assert metric(text, "bulwark_upstream_attempts_total", group="app", server=live.addr) == 3
    assert metric(text, "bulwark_upstream_header_seconds_count", group="app") == 3
    assert metric(text, "bulwark_upstream_header_seconds_bucket", group="app", le="+Inf") == 3
    assert metric(text, "bulwark_upstream_in_flight", group="app", server=live.addr) == 0
    reused = metric(text, "bulwark_upstream_pool_acquired_total", kind="reused")
    new = metric(text, "bulwark_upstream_pool_acquired_total", kind="new")
    assert reused + new >= 3
    assert 0 <= metric(text, "bulwark_upstream_pool_reuse_ratio") <= 1
    assert metric(text, "bulwark_client_connections") >= 0
    assert metric(text, "bulwark_upstream_connections") >= 0


def test_status_shows_every_group_and_the_last_error_with_evidence(setup):
    b, aport, live, dead = setup()
    assert fetch(b.port, "/echo").status == 200
    resp = fetch(b.port, "/dead/x")
    assert resp.status == 502
    rid = resp.get("x-request-id")
    status, headers, body = admin_get(aport, "/status")
    assert status == 200
    assert headers["content-type"] == "application/json"
    st = json.loads(body)
    assert set(st["upstreams"]) == {"app", "dead"}
    app = st["upstreams"]["app"]["servers"]
    assert [s["server"] for s in app] == [live.addr]
    assert app[0]["state"] == "up"
    assert app[0]["attempts"] == 1 and app[0]["failures"] == 0
    assert app[0]["last_error"] is None
    d = st["upstreams"]["dead"]["servers"][0]
    assert d["server"] == dead
    assert d["state"] == "failing"
    assert d["in_flight"] == 0
    assert d["attempts"] == 1
    assert d["failures_by_cause"] == {"connection_refused": 1}
    err = d["last_error"]
    assert err["cause"] == "connection_refused"
    assert err["errno_text"] == "Connection refused"
    assert err["rid"] == rid
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", err["time"])
    assert "connect_ms" in err and "header_ms" in err
    assert err["sentence"].startswith("Nothing is listening")
    assert st["totals"]["requests"] >= 2
    assert st["totals"]["upstream_failures"] == 1


def test_a_success_after_failures_makes_the_server_up_again(setup, origin):
    b, aport, live, dead = setup()
    assert fetch(b.port, "/echo").status == 200
    st = json.loads(admin_get(aport, "/status")[2])
    assert st["upstreams"]["app"]["servers"][0]["state"] == "up"
    live.close()
    assert fetch(b.port, "/echo").status == 502
    st = json.loads(admin_get(aport, "/status")[2])
    assert st["upstreams"]["app"]["servers"][0]["state"] == "failing"


def balancer_state(aport, group="app"):
    st = json.loads(admin_get(aport, "/status")[2])
    return st["upstreams"][group]["servers"][0]["balancer"]


def test_status_shows_the_balancers_shared_state(bulwark, origin):
    """in_flight is the exchanges of every worker on the server; up is the mark the
    balancers skip a server by (no health section: up, never changed, not checked)."""
    release = threading.Event()

    def held(c, o):
        drain_request(c)
        release.wait(15)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    slow = origin(handler=held)
    aport = free_port()
    b = bulwark(config(slow.addr, f"127.0.0.1:{free_port()}", aport))
    wait_port(aport)
    idle = balancer_state(aport)
    assert idle == {"up": True, "in_flight": 0, "consecutive_failures": 0,
                    "consecutive_passes": 0, "health_checked": False,
                    "changed": None, "change_cause": None}
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(b.port, "/x").status))
               for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while balancer_state(aport)["in_flight"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert balancer_state(aport)["in_flight"] == 2
    finally:
        release.set()
        for t in threads:
            t.join(15)
    assert results == [200, 200]
    deadline = time.monotonic() + 10
    while balancer_state(aport)["in_flight"] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert balancer_state(aport)["in_flight"] == 0


def test_errors_keeps_recent_gateway_errors_with_evidence(setup):
    b, aport, live, dead = setup(extra_top="errors: {ring_size: 2}\n")
    assert fetch(b.port, "/echo").status == 200
    rids = []
    for i in range(3):
        resp = fetch(b.port, f"/dead/{i}")
        assert resp.status == 502
        rids.append(resp.get("x-request-id"))
    status, headers, body = admin_get(aport, "/errors")
    assert status == 200
    assert headers["content-type"] == "application/json"
    ring = json.loads(body)
    assert ring["total"] == 3 and ring["ring_size"] == 2
    errs = ring["errors"]
    assert [e["rid"] for e in errs] == [rids[2], rids[1]], "most recent first, bounded"
    e = errs[0]
    assert e["status"] == 502
    assert e["error"] == "connection_refused"
    assert e["target"] == "/dead/2"
    assert e["upstream_group"] == "dead"
    assert e["upstream"] == dead
    assert e["sentence"].startswith("Nothing is listening")
    assert e["fix"]
    assert e["attempts"] == 1
    assert e["attempt_details"][0]["server"] == dead
    assert e["attempt_details"][0]["error"] == "connection_refused"


def test_token_is_required_when_set(setup):
    b, aport, live, dead = setup()
    for path in ("/metrics", "/status", "/errors", "/nope"):
        status, headers, body = admin_get(aport, path, token=None)
        assert status == 401, path
        assert headers.get("www-authenticate", "").startswith("Bearer")
        status, _, _ = admin_get(aport, path, token="wrong")
        assert status == 401, path
        status, _, _ = admin_get(aport, path, token=TOKEN[:-1])
        assert status == 401, path
    assert admin_get(aport, "/status")[0] == 200
    raw = (f"GET /status HTTP/1.1\r\nauthorization:   bearer {TOKEN}\r\n\r\n").encode()
    assert admin_get(aport, "", raw=raw)[0] == 200


def test_without_a_token_anyone_on_loopback_may_read(setup):
    b, aport, live, dead = setup(token=None)
    assert admin_get(aport, "/metrics", token=None)[0] == 200


def test_unknown_paths_methods_and_garbage(setup):
    b, aport, live, dead = setup()
    assert admin_get(aport, "/nope")[0] == 404
    assert admin_get(aport, "/status/x")[0] == 404
    assert admin_get(aport, "/status", method="POST")[0] == 405
    assert admin_get(aport, "", raw=b"\x00\xff garbage\r\n\r\n")[0] == 400
    assert admin_get(aport, "", raw=b"GET\r\n\r\n")[0] == 400
    assert admin_get(aport, "", raw=b"GET /status HTTP/1.1\r\nX: " + b"a" * 20000)[0] == 431
    # A client that connects and sends nothing, or closes at once, changes nothing.
    socket.create_connection(("127.0.0.1", aport)).close()
    with socket.create_connection(("127.0.0.1", aport)) as s:
        s.sendall(b"GET /sta")
    assert admin_get(aport, "/status")[0] == 200
    assert b.proc.poll() is None


def test_head_has_no_body(setup):
    b, aport, live, dead = setup()
    status, headers, body = admin_get(aport, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_bulwark_status_prints_a_table(setup):
    b, aport, live, dead = setup()
    assert fetch(b.port, "/dead/x").status == 502
    assert fetch(b.port, "/echo").status == 200
    p = subprocess.run([BIN, "status", "--admin", f"127.0.0.1:{aport}", "--token", TOKEN],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert re.match(r"UPSTREAM +SERVER +STATE +IN-FLIGHT +ATTEMPTS +FAILURES +LAST ERROR$",
                    lines[0]), p.stdout
    assert re.search(rf"^app +{re.escape(live.addr)} +up +0 +1 +0 +-$", p.stdout, re.M), p.stdout
    assert re.search(rf"^dead +{re.escape(dead)} +failing +0 +1 +1 +connection_refused \d+s ago "
                     r"\(Connection refused\) rid=\w+$", p.stdout, re.M), p.stdout
    assert re.search(r"^requests \d+, gateway errors 1, upstream attempts 2 \(1 failed\)$",
                     p.stdout, re.M), p.stdout


def test_bulwark_status_takes_address_and_token_from_the_config(setup):
    b, aport, live, dead = setup()
    p = subprocess.run([BIN, "status", "-c", b.config_path], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert "UPSTREAM" in p.stdout and dead in p.stdout


def test_bulwark_status_without_the_token_says_so(setup):
    b, aport, live, dead = setup()
    p = subprocess.run([BIN, "status", "--admin", f"127.0.0.1:{aport}"], capture_output=True,
                       text=True, timeout=30, env={k: v for k, v in os.environ.items()
                                                   if k != "BULWARK_ADMIN_TOKEN"})
    assert p.returncode == 1
    assert "401" in p.stderr and "token" in p.stderr


def test_bulwark_status_with_nothing_listening_exits_1():
    port = free_port()
    p = subprocess.run([BIN, "status", "--admin", f"127.0.0.1:{port}"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    assert f"cannot reach the admin listener at 127.0.0.1:{port}" in p.stderr


def test_reload_applies_a_new_token(setup):
    b, aport, live, dead = setup()
    text = open(b.config_path).read().replace(TOKEN, "second-token")
    assert b.reload(text)
    assert admin_get(aport, "/status")[0] == 401
    assert admin_get(aport, "/status", token="second-token")[0] == 200


def test_json_access_log(bulwark, origin, tmp_path):
    live = origin()
    dead = f"127.0.0.1:{free_port()}"
    workdir = tmp_path / "bw0"  # where the bulwark fixture puts its first instance
    access = workdir / "access.log"
    extra = (f"log:\n  access: {access}\n  error: {workdir / 'error.log'}\n  format: json\n")
    b = bulwark(config(live.addr, dead, free_port(), extra_top=extra))
    assert fetch(b.port, "/echo?a=%22b", headers=[("User-Agent", 'ua\t"q"')]).status == 200
    resp = fetch(b.port, "/dead/x")
    assert resp.status == 502
    rid = resp.get("x-request-id")
    # two workers: each writes its access-log batch at the end of its own loop round, so
    # the second request's line may be written before the first one's; wait for both
    b.wait_log(rf'"rid":"{rid}"', what="access")
    b.wait_log(r'"target":"/echo\?a=%22b"', what="access")
    lines = [json.loads(l) for l in b.access_lines()]
    ok = next(l for l in lines if l["target"] == "/echo?a=%22b")
    assert ok["status"] == 200 and ok["upstream_status"] == 200 and ok["error"] is None
    assert ok["user_agent"] == 'ua\t"q"'
    assert ok["upstream"] == live.addr and ok["upstream_group"] == "app"
    assert isinstance(ok["total"], float) and isinstance(ok["header"], float)
    bad = next(l for l in lines if l["rid"] == rid)
    assert bad["status"] == 502 and bad["error"] == "connection_refused"
    assert bad["upstream"] == dead and bad["attempts"] == 1
    assert bad["attempt_details"][0]["errno_text"] == "Connection refused"
