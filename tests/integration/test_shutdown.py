"""Stopping: SIGTERM closes the listeners and finishes the requests in flight (within
shutdown_timeout), then exits 0; SIGQUIT exits now; a second instance on a port in use
refuses to start."""
import json
import signal
import socket
import subprocess
import threading
import time

from conftest import BIN, simple_config
from origins.faulty import (drain_request, fetch, record, respond, send_then_hang,
                            wait_refused, wait_requests)


def slow_path(release):
    """/slow waits for release; anything else answers at once with the origin's port."""
    def handler(c, o):
        while True:
            method, target, headers = drain_request(c)
            record(o, method, target, headers)
            if target.startswith("/slow"):
                release.wait(10)
            respond(c, json.dumps({"port": o.port}).encode())
    return handler


def start_slow(b, path="/slow"):
    out = []
    t = threading.Thread(target=lambda: out.append(fetch(b.port, path, timeout=15)), daemon=True)
    t.start()
    return t, out


def wait_exit(proc, timeout):
    """Wait for the process to exit; return (returncode, seconds waited)."""
    t0 = time.monotonic()
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.monotonic() - t0


def test_sigterm_finishes_the_request_in_flight_then_exits_0(bulwark, origin):
    release = threading.Event()
    o = origin(slow_path(release))
    b = bulwark(simple_config([o.addr]))
    t, out = start_slow(b)
    try:
        wait_requests(o, 1)
        b.proc.send_signal(signal.SIGTERM)
        assert wait_refused(b.port), "the listener must close at SIGTERM"
        assert b.proc.poll() is None, "bulwark must wait for the request in flight"
    finally:
        release.set()
    t.join(15)
    resp = out[0]
    assert resp.status == 200 and resp.complete, resp.head
    assert json.loads(resp.data)["port"] == o.port
    assert resp.get("connection") == "close", "a response sent while draining closes the connection"
    rc, waited = wait_exit(b.proc, 10)
    assert rc == 0, b.output()
    assert waited < 5
    b.wait_log(r'(?m)"GET /slow HTTP/1.1" 200 .* error=- ', what="access")


def test_sigterm_closes_idle_keep_alive_connections_at_once(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        assert fetch(b.port, "/echo", sock=s).status == 200
        b.proc.send_signal(signal.SIGTERM)
        s.settimeout(5)
        assert s.recv(1) == b"", "an idle keep-alive connection is closed at SIGTERM"
    rc, waited = wait_exit(b.proc, 5)
    assert rc == 0 and waited < 2


def test_shutdown_timeout_bounds_the_wait(bulwark, origin):
    o = origin(send_then_hang(b""))  # never answers
    b = bulwark(simple_config([o.addr], extra_top="shutdown_timeout: 500ms\n"))
    t, out = start_slow(b, "/hang")
    wait_requests(o, 1)
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    rc, _ = wait_exit(b.proc, 10)
    took = time.monotonic() - t0
    assert rc == 0, b.output()
    assert 0.4 <= took < 3.0, f"shutdown_timeout 500ms, exited after {took:.2f}s"
    t.join(10)
    assert out and out[0].status != 200 and out[0].eof, "the hanging request is cut"
    assert "shutdown_timeout reached" in b.error_log()


def test_sigquit_exits_at_once_with_a_request_in_flight(bulwark, origin):
    release = threading.Event()
    o = origin(slow_path(release))
    b = bulwark(simple_config([o.addr], extra_top="shutdown_timeout: 30s\n"))
    t, out = start_slow(b)
    try:
        wait_requests(o, 1)
        b.proc.send_signal(signal.SIGQUIT)
        rc, waited = wait_exit(b.proc, 10)
    finally:
        release.set()
    assert rc == 0, b.output()
    assert waited < 2.0, f"SIGQUIT took {waited:.2f}s"
    t.join(10)
    assert out and out[0].status != 200


def test_sigquit_during_a_drain_exits_at_once(bulwark, origin):
    release = threading.Event()
    o = origin(slow_path(release))
    b = bulwark(simple_config([o.addr], extra_top="shutdown_timeout: 30s\n"))
    t, out = start_slow(b)
    try:
        wait_requests(o, 1)
        b.proc.send_signal(signal.SIGTERM)
        assert wait_refused(b.port)
        assert b.proc.poll() is None
        b.proc.send_signal(signal.SIGQUIT)
        rc, waited = wait_exit(b.proc, 10)
    finally:
        release.set()
    assert rc == 0, b.output()
    assert waited < 2.0, f"SIGQUIT during the drain took {waited:.2f}s"


def test_sigint_drains_and_a_second_signal_does_not_cut_the_drain(bulwark, origin):
    release = threading.Event()
    o = origin(slow_path(release))
    b = bulwark(simple_config([o.addr], extra_top="shutdown_timeout: 30s\n"))
    t, out = start_slow(b)
    try:
        wait_requests(o, 1)
        b.proc.send_signal(signal.SIGINT)
        assert wait_refused(b.port), "the listener must close at SIGINT"
        b.proc.send_signal(signal.SIGTERM)
        b.wait_log(r"SIGTERM ignored: already shutting down")
        b.proc.send_signal(signal.SIGINT)
        b.wait_log(r"SIGINT ignored: already shutting down")
        assert b.proc.poll() is None, "a second signal must not end the drain"
    finally:
        release.set()
    t.join(15)
    assert out and out[0].status == 200 and out[0].complete, out and out[0].head
    rc, waited = wait_exit(b.proc, 10)
    assert rc == 0, b.output()
    assert waited < 5


def test_sighup_during_a_drain_is_ignored(bulwark, origin):
    release = threading.Event()
    o, other = origin(slow_path(release)), origin()
    b = bulwark(simple_config([o.addr], extra_top="shutdown_timeout: 30s\n"))
    t, out = start_slow(b)
    try:
        wait_requests(o, 1)
        b.proc.send_signal(signal.SIGTERM)
        assert wait_refused(b.port)
        b.write_config(simple_config([other.addr]))
        b.proc.send_signal(signal.SIGHUP)
        b.wait_log(r"SIGHUP ignored: shutting down, not reloading")
        assert b.proc.poll() is None, "the drain goes on"
    finally:
        release.set()
    t.join(15)
    assert out and out[0].status == 200 and json.loads(out[0].data)["port"] == o.port
    rc, _ = wait_exit(b.proc, 10)
    assert rc == 0, b.output()
    assert "reloading configuration" not in b.error_log()
    assert not other.requests


def second_instance(tmp_path, port, upstream):
    cfg = tmp_path / "second.yaml"
    cfg.write_text(simple_config([upstream]).replace("{port}", str(port)) +
                   "log:\n  error: stderr\n  access: off\n")
    return subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=10)


def test_second_bulwark_on_the_same_port_fails_to_start(bulwark, origin, tmp_path):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    p = second_instance(tmp_path, b.port, o.addr)
    assert p.returncode != 0, p.stderr
    assert (f"cannot listen on 127.0.0.1:{b.port}: Address already in use "
            "(is another server running on it?)") in p.stderr, p.stderr
    # the first instance is untouched and still answers
    assert b.proc.poll() is None
    for i in range(4):
        assert fetch(b.port, f"/echo?i={i}").status == 200


def test_bulwark_on_a_port_another_program_listens_on_fails_to_start(origin, tmp_path):
    o = origin()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        p = second_instance(tmp_path, port, o.addr)
    assert p.returncode != 0, p.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in p.stderr, p.stderr
