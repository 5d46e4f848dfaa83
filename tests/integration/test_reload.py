"""SIGHUP reload: a new config applies to new requests without dropping a connection
or a request; a bad config is refused with file:line:column and the old one keeps
serving; requests in flight finish on the upstream they started with."""
import json
import os
import re
import signal
import socket
import threading
import time

from conftest import simple_config
from origins import free_port
from origins.faulty import drain_request, fetch, record, respond, wait_requests


def port_of(resp):
    assert resp.status == 200 and resp.complete, resp.head
    return json.loads(resp.data)["port"]


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


def test_reload_sends_new_requests_to_the_new_upstream(bulwark, origin):
    a, b_ = origin(), origin()
    b = bulwark(simple_config([a.addr]))
    assert port_of(fetch(b.port, "/echo")) == a.port
    pid = b.pid
    assert b.reload(simple_config([b_.addr])) is True
    for i in range(3):
        assert port_of(fetch(b.port, f"/echo?i={i}")) == b_.port
    assert b.pid == pid and b.proc.poll() is None
    assert len(a.requests) == 1


def test_keep_alive_client_connection_survives_reload_and_uses_the_new_config(bulwark, origin):
    a, b_ = origin(), origin()
    b = bulwark(simple_config([a.addr]))
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        assert port_of(fetch(b.port, "/echo?n=1", sock=s)) == a.port
        assert b.reload(simple_config([b_.addr])) is True
        resp = fetch(b.port, "/echo?n=2", sock=s)
        assert port_of(resp) == b_.port, "the next request on the connection uses the new config"
        assert not resp.eof


def test_reload_with_a_syntax_error_is_refused_and_the_old_config_keeps_serving(bulwark, origin):
    a, b_ = origin(), origin()
    b = bulwark(simple_config([a.addr]))
    broken = ('workers: 1\nlisten: ["127.0.0.1:{port}"]\nupstreams:\n  app:\n'
              f'    servers: ["{b_.addr}"\nroutes:\n  - upstream: app\n')
    assert b.reload(broken) is False
    path = re.escape(b.config_path)
    b.wait_log(rf"reload refused: {path}:6:1: YAML syntax error: did not find expected ',' or ']'")
    b.wait_log(rf"reload refused: 1 error\(s\) in {path}; still serving the previous configuration")
    assert port_of(fetch(b.port, "/echo")) == a.port
    assert b_.requests == []
    # and a good config after the bad one applies
    assert b.reload(simple_config([b_.addr])) is True
    assert port_of(fetch(b.port, "/echo")) == b_.port


def test_reload_with_an_unknown_key_is_refused_with_its_position(bulwark, origin):
    a, b_ = origin(), origin()
    b = bulwark(simple_config([a.addr]))
    assert b.reload(simple_config([b_.addr], extra_upstream="    retires: 2\n")) is False
    b.wait_log(rf'reload refused: {re.escape(b.config_path)}:6:5: unknown key "retires" in '
               rf'upstream "app" \(did you mean "retries"\?\)')
    assert port_of(fetch(b.port, "/echo")) == a.port
    assert b.proc.poll() is None


def test_reload_onto_a_listen_address_in_use_is_refused(bulwark, origin):
    a, b_ = origin(), origin()
    b = bulwark(simple_config([a.addr]))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        cfg = simple_config([b_.addr]).replace('listen: ["127.0.0.1:{port}"]',
                                               f'listen: ["127.0.0.1:{{port}}", "127.0.0.1:{taken}"]')
        assert b.reload(cfg) is False
        b.wait_log(rf"reload refused: cannot listen on 127\.0\.0\.1:{taken}: Address already in use")
        assert port_of(fetch(b.port, "/echo")) == a.port


def test_reload_opens_a_new_listen_address(bulwark, origin):
    a = origin()
    b = bulwark(simple_config([a.addr]))
    extra = free_port()
    cfg = simple_config([a.addr]).replace('listen: ["127.0.0.1:{port}"]',
                                          f'listen: ["127.0.0.1:{{port}}", "127.0.0.1:{extra}"]')
    assert b.reload(cfg) is True
    deadline = time.monotonic() + 20
    resp = None
    while time.monotonic() < deadline:
        try:
            resp = fetch(extra, "/echo")
            break
        except ConnectionRefusedError:
            time.sleep(0.01)  # the workers apply the new config right after the verdict
    assert resp is not None and port_of(resp) == a.port
    assert port_of(fetch(b.port, "/echo")) == a.port


def test_reload_changes_the_routes(bulwark, origin):
    a, b_ = origin(), origin()
    two = ('workers: 1\nlisten: ["127.0.0.1:{port}"]\nupstreams:\n'
           f'  a:\n    servers: ["{a.addr}"]\n  b:\n    servers: ["{b_.addr}"]\n')
    b = bulwark(two + "routes:\n  - upstream: a\n")
    assert port_of(fetch(b.port, "/api/x")) == a.port
    assert b.reload(two + "routes:\n  - match: { path: /api/ }\n    upstream: b\n") is True
    assert port_of(fetch(b.port, "/api/x")) == b_.port
    resp = fetch(b.port, "/other")
    assert resp.status == 404 and resp.get("proxy-status") == "bulwark; error=destination_not_found"


def test_in_flight_request_finishes_on_the_old_upstream(bulwark, origin):
    release = threading.Event()
    a, b_ = origin(slow_path(release)), origin()
    b = bulwark(simple_config([a.addr]))
    slow = []
    t = threading.Thread(target=lambda: slow.append(fetch(b.port, "/slow")), daemon=True)
    try:
        t.start()
        wait_requests(a, 1)
        assert b.reload(simple_config([b_.addr])) is True
        assert port_of(fetch(b.port, "/echo")) == b_.port
    finally:
        release.set()
    t.join(10)
    assert slow and port_of(slow[0]) == a.port, "the slow request completes on its old upstream"
    b.wait_log(rf'(?m)"GET /slow HTTP/1.1" 200 .* upstream={a.addr} .* error=- ', what="access")


def test_reload_closes_the_old_upstreams_idle_connections(bulwark, origin):
    closed = threading.Event()

    def tracking(c, o):
        try:
            o._serve_http(c)
        except (EOFError, OSError):
            pass
        closed.set()

    a, b_ = origin(tracking), origin()
    b = bulwark(simple_config([a.addr]))
    assert port_of(fetch(b.port, "/echo")) == a.port
    assert not closed.is_set(), "the pooled connection should be open before the reload"
    assert b.reload(simple_config([b_.addr])) is True
    assert closed.wait(5), "the old group's pooled connection must be closed after the reload"


def test_reloads_under_steady_load_fail_no_request(bulwark, origin):
    a, b_ = origin(), origin()
    configs = [simple_config([a.addr]), simple_config([b_.addr])]
    b = bulwark(configs[0])
    stop = threading.Event()
    failures, served = [], []
    lock = threading.Lock()

    def client(keep_alive):
        sock = None
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if keep_alive and sock is None:
                    sock = socket.create_connection(("127.0.0.1", b.port), timeout=5)
                resp = fetch(b.port, f"/echo?n={n}", sock=sock, timeout=5)
                port = port_of(resp)
                if keep_alive and resp.eof:
                    raise AssertionError("the proxy closed a keep-alive connection")
                with lock:
                    served.append(port)
            except Exception as e:  # every failure is reported below
                with lock:
                    failures.append(f"{'keep-alive' if keep_alive else 'new'} #{n}: {e!r}")
                if sock:
                    sock.close()
                    sock = None
        if sock:
            sock.close()

    threads = [threading.Thread(target=client, args=(ka,), daemon=True)
               for ka in (True, True, False, False, False)]
    for t in threads:
        t.start()
    reloads = 0
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            time.sleep(0.4)  # spread the reloads over the run
            reloads += 1
            assert b.reload(configs[reloads % 2]) is True
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert reloads >= 5
    assert failures == [], f"{len(failures)} failed of {len(served) + len(failures)}: {failures[:5]}"
    assert len(served) > 100, f"only {len(served)} requests in 3 s"
    assert a.port in served and b_.port in served
    assert b.proc.poll() is None


def log_fds(pid, directory):
    """{fd number: file name} of the process's descriptors open on files in directory."""
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if os.path.dirname(target) == directory:
            fds[int(fd)] = os.path.basename(target)
    return fds


def exact_exchange(port, target):
    """One request on a new connection (Connection: close); every byte received until
    the proxy closes. Returns (whole bytes, error or None): the bytes must be one 200
    response with its Content-Length body and nothing before or after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    head, sep, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 ") or not sep:
        return data, "not a 200 response"
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    if not m or len(body) != int(m.group(1)):
        return data, "bytes before or after the body"
    try:
        json.loads(body)
    except ValueError:
        return data, "body is not the origin's JSON"
    return data, None


def test_log_reopen_keeps_descriptor_numbers_and_no_line_reaches_a_socket(bulwark, origin,
                                                                            tmp_path):
    """Bug 14: on reload the old log descriptor was closed while a worker could still
    write to its number, which a new client or upstream socket may reuse. Now the new
    file takes over the same descriptor number (dup3): under traffic that opens a new
    client and upstream connection per request, reloads that move both logs never put
    a log byte in a response, and lines land in the newest files."""
    up = origin()
    logs = tmp_path / "logs"
    logs.mkdir()

    def cfg(i):
        return (simple_config([up.addr], extra_upstream="    keepalive: 0\n")
                .replace("workers: 1", "workers: 2") +
                f"log:\n  access: {logs}/access-{i}.log\n  error: {logs}/error-{i}.log\n")

    b = bulwark(cfg(0))
    before = log_fds(b.pid, str(logs))
    assert sorted(before.values()) == ["access-0.log", "error-0.log"], before
    stop = threading.Event()
    bad, served = [], []
    lock = threading.Lock()

    def client(k):
        n = 0
        while not stop.is_set():
            n += 1
            try:
                data, err = exact_exchange(b.port, f"/echo?c={k}&n={n}")
            except OSError as e:
                data, err = b"", repr(e)
            with lock:
                (bad if err else served).append((err, data[:300]))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    reloads = 20
    try:
        for i in range(1, reloads + 1):
            b.write_config(cfg(i))
            b.proc.send_signal(signal.SIGHUP)
            new_error = logs / f"error-{i}.log"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if new_error.exists() and "configuration reloaded" in new_error.read_text():
                    break
                time.sleep(0.01)
            else:
                raise AssertionError(f"reload {i} gave no verdict in {new_error}:\n{b.output()}")
            # let traffic run between reloads: a few requests on new descriptors each time
            deadline = time.monotonic() + 10
            with lock:
                target = len(served) + len(bad) + 5
            while len(served) + len(bad) < target and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert bad == [], f"{len(bad)} bad of {len(bad) + len(served)}: {bad[:3]}"
    assert len(served) >= 5 * reloads, f"only {len(served)} requests during {reloads} reloads"

    # The descriptor numbers never changed; they now hold the newest files only.
    after = log_fds(b.pid, str(logs))
    assert sorted(after) == sorted(before), (before, after)
    assert sorted(after.values()) == [f"access-{reloads}.log", f"error-{reloads}.log"], after

    # New lines land in the newest access log, and in no older one.
    for n in range(5):
        data, err = exact_exchange(b.port, f"/echo?final={n}")
        assert err is None, (err, data[:300])
    newest = logs / f"access-{reloads}.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if newest.exists() and newest.read_text().count("/echo?final=") == 5:
            break
        time.sleep(0.02)
    assert newest.read_text().count("/echo?final=") == 5, newest.read_text()[-2000:]
    for i in range(reloads):
        assert "/echo?final=" not in (logs / f"access-{i}.log").read_text()
    assert b.proc.poll() is None
