"""`make run`'s demo (scripts/demo.sh with examples/demo.yaml), on ports the test chooses:
the two HTTP backends bulwark runs answer in turn; with php-fpm installed, /php/ answers
from PHP (a php-fpm bulwark runs, examples/php/index.php); without it (BULWARK_DEMO_FPM=none)
the demo works without the route and the program. Ctrl-C (SIGINT to the demo's process
group) or SIGTERM to the script stops everything: no backend, no php-fpm left, its
temporary directory removed."""
import glob
import http.client
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN, ROOT
from origins import free_port, wait_for

FPMS = sorted(glob.glob("/usr/sbin/php-fpm*"))
TOKEN = "demo"


class Demo:
    def __init__(self, tmp_path, fpm):
        self.port, self.admin = free_port(), free_port()
        self.backends = (free_port(), free_port())
        env = dict(os.environ, BULWARK_BIN=BIN, BULWARK_DEMO_PORT=str(self.port),
                   BULWARK_DEMO_ADMIN_PORT=str(self.admin),
                   BULWARK_DEMO_BACKEND_PORTS="%d %d" % self.backends,
                   BULWARK_DEMO_FPM=fpm, TMPDIR=str(tmp_path))
        self.out_path = tmp_path / "demo.out"
        self.out = open(self.out_path, "wb")
        # a session of its own: SIGINT to its process group is what Ctrl-C does
        self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "demo.sh")], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ready, "the demo to answer", timeout=60)

    def output(self):
        return self.out_path.read_text(errors="replace")

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("demo.sh exited:\n" + self.output())
        # the hints are printed once bulwark answered
        return "Try, in another terminal" in self.output()

    def get(self, path, port=None, method="GET", body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=20)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data

    def programs(self):
        r, data = self.get("/status", port=self.admin,
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200, data
        return json.loads(data)["programs"]

    def stop(self, sig, group):
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self.out.close()

    def kill(self):
        """Teardown after a failed test: the demo's own group, by its id."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.out.closed:
            self.out.close()


@pytest.fixture
def demo(tmp_path):
    started = []

    def start(fpm):
        d = Demo(tmp_path, fpm)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def gone(pid):
    """pid has exited and was reaped (or is a zombie no one will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children(pid):
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(task) as f:
            found += [int(p) for p in f.read().split()]
    return found


def check_backends_take_turns(d):
    seen = set()
    for _ in range(4):
        r, body = d.get("/")
        assert r.status == 200, body
        seen.add(r.getheader("X-Backend"))
    assert seen == {"backend-1", "backend-2"}, seen


@pytest.mark.skipif(not FPMS, reason="php-fpm is not installed")
def test_demo_with_php(demo, tmp_path):
    d = demo("")  # found by demo.sh itself, as `make run` does
    check_backends_take_turns(d)

    r, body = d.get("/php/?q=demo")
    assert r.status == 200, body
    assert r.getheader("X-Backend") == "php-fpm"
    text = body.decode()
    assert text.startswith("Hello from PHP "), text
    assert re.search(r"^QUERY_STRING +q=demo$", text, re.M), text
    assert re.search(r"^SCRIPT_FILENAME +%s/examples/php/index\.php$" % re.escape(ROOT), text,
                     re.M), text
    r, body = d.get("/php/", method="POST", body="name=Ada",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and b'POST form         {"name":"Ada"}' in body, body
    r, body = d.get("/php/", headers={"Accept": "text/html"})
    assert r.status == 200 and b"<h1>PHP " in body, body

    programs = d.programs()
    assert set(programs) == {"backend-1", "backend-2", "php-fpm"}, programs
    assert all(p["state"] == "RUNNING" for p in programs.values()), programs
    fpm_master = programs["php-fpm"]["pid"]
    workers = children(fpm_master)
    assert workers, "php-fpm has no worker processes"
    pids = [p["pid"] for p in programs.values()] + workers
    run_dirs = glob.glob(str(tmp_path / "bulwark-demo.*"))
    assert len(run_dirs) == 1 and os.path.exists(os.path.join(run_dirs[0], "php-fpm.sock"))

    # Ctrl-C: SIGINT to the terminal's foreground group (demo.sh and bulwark)
    rc = d.stop(signal.SIGINT, group=True)
    assert rc == 130, (rc, d.output())
    wait_for(lambda: all(gone(p) for p in pids), "every backend and php-fpm process to exit",
             timeout=30)
    assert not os.path.exists(run_dirs[0]), "demo.sh left its temporary directory"
    out = d.output()
    assert "program php-fpm stopped" in out, out
    assert "bulwark stopped" in out, out


def test_demo_without_php(demo, tmp_path):
    d = demo("none")
    check_backends_take_turns(d)
    # no /php/ route: the path goes to the HTTP backends like any other
    r, body = d.get("/php/")
    assert r.status == 200 and r.getheader("X-Backend") in ("backend-1", "backend-2"), body
    programs = d.programs()
    assert set(programs) == {"backend-1", "backend-2"}, programs
    pids = [p["pid"] for p in programs.values()]
    # SIGTERM to the script alone (as a service manager would): it stops bulwark, which
    # stops the backends
    rc = d.stop(signal.SIGTERM, group=False)
    assert rc == 143, (rc, d.output())
    wait_for(lambda: all(gone(p) for p in pids), "both backends to exit", timeout=30)
    assert not glob.glob(str(tmp_path / "bulwark-demo.*")), "temporary directory left"
    assert "php-fpm" not in d.output(), d.output()
