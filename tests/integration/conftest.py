"""Fixtures that start the real bulwark binary and real origin servers on 127.0.0.1.

Every process is started by a fixture and stopped by PID at teardown; readiness is
a port that answers, never a fixed sleep.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
BIN = os.environ.get("BULWARK_BIN", os.path.join(ROOT, "bulwark"))

from origins import free_port, wait_port  # noqa: E402


class Bulwark:
    """A running bulwark with its config file and log files in a temp dir."""

    def __init__(self, workdir, config, port, extra_args=()):
        self.dir = workdir
        self.port = port
        self.config_path = os.path.join(workdir, "bulwark.yaml")
        self.access_path = os.path.join(workdir, "access.log")
        self.error_path = os.path.join(workdir, "error.log")
        self.write_config(config)
        self.stdout = open(os.path.join(workdir, "stdout.log"), "ab")
        self.proc = subprocess.Popen([BIN, "-c", self.config_path, *extra_args],
                                     stdout=self.stdout, stderr=subprocess.STDOUT)
        try:
            wait_port(port, timeout=30.0, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("bulwark did not start:\n" + self.output())

    def write_config(self, config):
        text = config.replace("{port}", str(self.port))
        if "log:" not in text:
            text += f"\nlog:\n  access: {self.access_path}\n  error: {self.error_path}\n"
        if "probe_at_start" not in text:
            # the start-up probe opens a connection to every origin, which tests
            # counting upstream connections must not see (test_startup_probe.py covers it)
            text += "\nprobe_at_start: false\n"
        with open(self.config_path, "w") as f:
            f.write(text)

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self):
        parts = []
        for p in (os.path.join(self.dir, "stdout.log"), self.error_path):
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    parts.append(f.read())
        return "\n".join(parts)

    def error_log(self):
        if not os.path.exists(self.error_path):
            return ""
        with open(self.error_path, errors="replace") as f:
            return f.read()

    def access_lines(self):
        if not os.path.exists(self.access_path):
            return []
        with open(self.access_path, errors="replace") as f:
            return [l for l in f.read().splitlines() if l]

    # Deadlines below are generous on purpose: they only matter when something is
    # wrong, and a loaded 2-core machine or an ASan build may be slow to get there.
    def wait_log(self, pattern, what="error", timeout=20.0):
        """Wait until a log (error or access) matches the regex; return the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = self.error_log() if what == "error" else "\n".join(self.access_lines())
            m = rx.search(text)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {what} log line matches {pattern!r}:\n{self.output()}")

    def reload(self, config, timeout=20.0):
        """Rewrite the config, SIGHUP, and wait for the reload's verdict line."""
        before = self.error_log().count("configuration reloaded") + self.error_log().count(
            "reload refused: ")
        self.write_config(config)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.error_log()
            if log.count("configuration reloaded") + log.count("reload refused: ") > before:
                return "configuration reloaded" in log.split("reloading configuration")[-1]
            time.sleep(0.02)
        raise AssertionError("reload gave no verdict:\n" + self.output())

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stdout.close()
        return self.proc.returncode


@pytest.fixture
def bulwark(tmp_path):
    """bulwark(config_text) starts an instance; {port} in the text is its listen port.
    Options: port=, args=. Instances are stopped (SIGTERM, by PID) at teardown."""
    started = []

    def start(config, port=None, args=()):
        workdir = tmp_path / f"bw{len(started)}"
        workdir.mkdir()
        b = Bulwark(str(workdir), config, port or free_port(), args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def origin():
    """origin(handler=None, **kw) starts an in-process HTTP origin (see origins/__init__.py)
    and stops it at teardown."""
    from origins import Origin
    started = []

    def start(*args, **kw):
        o = Origin(*args, **kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.close()


def simple_config(upstream_servers, extra_upstream="", extra_top="", routes=None):
    """A config with one listener on {port} and one upstream group "app"."""
    servers = ", ".join(f'"{s}"' for s in upstream_servers)
    routes = routes or "routes:\n  - upstream: app\n"
    return (f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\n{extra_top}'
            f'upstreams:\n  app:\n    servers: [{servers}]\n{extra_upstream}{routes}')
