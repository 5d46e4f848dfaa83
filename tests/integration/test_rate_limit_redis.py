"""rate_limit.store: "redis://host:port": several bulwark instances enforce one budget
through a real redis-server started here; Redis killed, they go on with local limits
(no 5xx, counted in /metrics); Redis back, the shared budget is back."""
import http.client
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import simple_config
from origins import free_port, wait_for, wait_port

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is installed by "
                                "scripts/deps.sh test; without it this feature cannot run")


class Redis:
    def __init__(self, tmp_path, port=None):
        self.port = port or free_port()
        self.log = open(tmp_path / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=20.0, proc=self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def redis(tmp_path):
    started = []

    def start(port=None):
        r = Redis(tmp_path, port)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def start(bulwark, origin_addr, rate_limit, workers=2):
    admin = free_port()
    top = f'admin: "127.0.0.1:{admin}"\nrate_limit: {rate_limit}\n'
    cfg = simple_config([origin_addr], extra_top=top).replace("workers: 1", f"workers: {workers}")
    b = bulwark(cfg)
    b.admin = admin
    return b


def metric(b, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def get(port, path="/echo"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, r.headers
    finally:
        c.close()


def test_two_instances_share_one_budget(bulwark, origin, redis):
    rd = redis()
    o = origin()
    # 1 per minute, burst 4: 5 pass at once in all, nothing refills during the test.
    rl = f'{{rate: "1/m", burst: 4, nodelay: true, store: "redis://127.0.0.1:{rd.port}"}}'
    b1 = start(bulwark, o.addr, rl)
    b2 = start(bulwark, o.addr, rl)
    statuses = []
    for i in range(20):
        status, headers = get((b1 if i % 2 == 0 else b2).port)
        statuses.append(status)
        if status == 429:
            assert headers.get("Retry-After", "").isdigit(), headers
    assert set(statuses) <= {200, 429}, statuses
    # Local limits would let 5 through on each instance (10 in all).
    assert statuses.count(200) == 5, statuses
    assert statuses[:5] == [200] * 5, statuses
    assert metric(b1, "bulwark_rate_limit_store_checks_total") >= 10
    assert metric(b2, "bulwark_rate_limit_store_checks_total") >= 10
    assert metric(b1, "bulwark_rate_limit_store_fallbacks_total") == 0


def test_redis_killed_local_limits_no_5xx_then_shared_again(bulwark, origin, redis):
    rd = redis()
    o = origin()
    rl = f'{{rate: "1/m", burst: 2, nodelay: true, store: "redis://127.0.0.1:{rd.port}"}}'
    b1 = start(bulwark, o.addr, rl, workers=1)
    b2 = start(bulwark, o.addr, rl, workers=1)
    shared = [get(b.port)[0] for b in (b1, b2, b1, b2, b1, b2)]
    assert shared.count(200) == 3, shared  # one budget of burst + 1

    rd.stop()
    # Each instance now decides alone: its own budget of 3, never a 5xx.
    local = {b.port: [get(b.port)[0] for _ in range(6)] for b in (b1, b2)}
    for port, statuses in local.items():
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) == 3, statuses
    for b in (b1, b2):
        assert metric(b, "bulwark_rate_limit_store_fallbacks_total") >= 6
        assert metric(b, "bulwark_rate_limit_store_up") == 0
        b.wait_log(r"rate_limit store redis://127\.0\.0\.1:\d+ unreachable .*local limits")

    # Redis back on its port (empty: a fresh budget): once the store reconnects
    # (tried once a second) the instances share one budget again.
    rd2 = redis(port=rd.port)
    def back():
        get(b1.port, "/echo?probe")
        return metric(b1, "bulwark_rate_limit_store_up") == 1
    wait_for(back, "b1 to use Redis again", 20)
    wait_for(lambda: get(b2.port, "/echo?probe")[0] in (200, 429)
             and metric(b2, "bulwark_rate_limit_store_up") == 1, "b2 to use Redis again", 20)
    b1.wait_log(r"rate_limit store redis://127\.0\.0\.1:\d+ is back: shared limits again")
    assert rd2.proc.poll() is None


def test_bad_store_url_is_a_config_error(tmp_path):
    from conftest import BIN
    cfg = tmp_path / "b.yaml"
    cfg.write_text('listen: ["127.0.0.1:1"]\nupstreams:\n  app:\n    servers: ["127.0.0.1:2"]\n'
                   'routes:\n  - upstream: app\n'
                   'rate_limit: {rate: "1/s", store: "redis://nohost-here-:x"}\n')
    r = subprocess.run([BIN, "check", "--no-probe", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert re.search(r"b\.yaml:\d+:\d+: .*bad rate_limit store", r.stdout + r.stderr), r
