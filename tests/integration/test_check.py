"""`bulwark check` probes every upstream server (DNS, then a TCP connect within its
connect_timeout) and explains each failure with the cause sentence: exit 0 all good,
2 invalid config, 3 valid but some upstream unreachable; --no-probe skips probing.
A server name that does not resolve is a warning (not an error): check exits 3, and
at runtime requests to it fail with 502 dns_error."""
import re
import subprocess
import time

from conftest import BIN, simple_config
from origins import free_port
from origins.faulty import Blackhole, fetch

REFUSED_SENTENCE = "Nothing is listening on the upstream address (connection refused)"


def write(tmp_path, servers, extra_upstream="", name="bulwark.yaml"):
    path = tmp_path / name
    path.write_text(simple_config(servers, extra_upstream=extra_upstream)
                    .replace("{port}", str(free_port())))
    return str(path)


def run(*args, timeout=30):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_all_servers_answer_exits_0(tmp_path, origin):
    a, b = origin(), origin()
    path = write(tmp_path, [a.addr, b.addr])
    p = run("check", "-c", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith(f"{path}: configuration is valid (1 upstream(s), 1 route(s))\n")
    for o in (a, b):
        assert re.search(rf'^ok +upstream "app" server {re.escape(o.addr)}: connected in \d+ ms$',
                         p.stdout, re.M), p.stdout
    assert "every upstream server answered" in p.stdout
    assert p.stderr == ""


def test_invalid_config_exits_2_without_probing(tmp_path):
    path = tmp_path / "bulwark.yaml"
    path.write_text('listen: ["127.0.0.1:8080"]\nupstreams:\n  app:\n    servers: ["127.0.0.1"]\n'
                    "routes:\n  - upstream: app\n")
    p = run("check", "-c", str(path))
    assert p.returncode == 2
    assert re.search(rf"^{re.escape(str(path))}:4:15: bad address", p.stderr, re.M), p.stderr
    assert "FAIL" not in p.stdout and "ok " not in p.stdout


def test_nothing_listening_exits_3_with_the_cause_sentence(tmp_path, origin):
    up = origin()
    dead = f"127.0.0.1:{free_port()}"
    path = write(tmp_path, [up.addr, dead])
    p = run("check", "-c", path)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert re.search(rf'^ok +upstream "app" server {re.escape(up.addr)}:', p.stdout, re.M)
    m = re.search(rf'^FAIL +upstream "app" server {re.escape(dead)}: connection_refused '
                  r"\(Connection refused\)\n +(.+)\n +fix: (.+)$", p.stdout, re.M)
    assert m, p.stdout
    assert m.group(1).startswith(REFUSED_SENTENCE)
    assert "1 upstream server(s) unreachable" in p.stdout


def test_handshake_that_never_completes_fails_within_connect_timeout(tmp_path):
    hole = Blackhole()
    try:
        path = write(tmp_path, [hole.addr], extra_upstream="    connect_timeout: 300ms\n")
        t0 = time.monotonic()
        p = run("check", "-c", path)
        elapsed = time.monotonic() - t0
    finally:
        hole.close()
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert re.search(rf'^FAIL +upstream "app" server {re.escape(hole.addr)}: connection_timeout '
                     r"\(no answer within connect_timeout 300 ms\)", p.stdout, re.M), p.stdout
    assert 0.25 <= elapsed < 3.0, elapsed


def test_servers_are_probed_in_parallel(tmp_path):
    # One after the other, three 1 s probes take at least 3 s; in parallel about 1 s.
    # The bound sits between with 1.5 s of room for a loaded machine or an ASan build
    # (process start, config load).
    holes = [Blackhole() for _ in range(3)]
    try:
        path = write(tmp_path, [h.addr for h in holes],
                     extra_upstream="    connect_timeout: 1s\n")
        t0 = time.monotonic()
        p = run("check", "-c", path)
        elapsed = time.monotonic() - t0
    finally:
        for h in holes:
            h.close()
    assert p.returncode == 3
    assert p.stdout.count("connection_timeout") == 3, p.stdout
    assert elapsed < 2.5, f"three 1 s probes took {elapsed:.2f}s: not in parallel"


def test_no_probe_skips_probing(tmp_path):
    path = write(tmp_path, [f"127.0.0.1:{free_port()}"])
    p = run("check", "--no-probe", "-c", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout == f"{path}: configuration is valid (1 upstream(s), 1 route(s))\n"


def test_unresolvable_name_is_a_warning_and_exits_3(tmp_path, origin):
    up = origin()
    text = ('listen: ["127.0.0.1:8080"]\n'
            "upstreams:\n"
            "  app:\n"
            f'    servers: ["{up.addr}", "no-such-host.invalid:9000"]\n'
            "routes:\n"
            "  - upstream: app\n")
    path = tmp_path / "bulwark.yaml"
    path.write_text(text)
    col = text.splitlines()[3].index('"no-such-host') + 1
    p = run("check", "-c", str(path))
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert re.search(rf'^warning: {re.escape(str(path))}:4:{col}: host "no-such-host\.invalid" '
                     r"does not resolve: .+; requests to it will fail with dns_error$",
                     p.stderr, re.M), p.stderr
    assert "configuration is valid" in p.stdout
    assert re.search(r'^FAIL +upstream "app" server no-such-host\.invalid:9000: dns_error \(.+\)\n'
                     r" +The upstream host name does not resolve\.", p.stdout, re.M), p.stdout
    assert re.search(rf'^ok +upstream "app" server {re.escape(up.addr)}:', p.stdout, re.M)

    p = run("check", "--no-probe", "-c", str(path))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "does not resolve" in p.stderr


def test_unresolvable_listen_address_is_still_an_error(tmp_path):
    path = tmp_path / "bulwark.yaml"
    path.write_text('listen: ["no-such-host.invalid:8080"]\nupstreams:\n  app:\n'
                    '    servers: ["127.0.0.1:9000"]\nroutes:\n  - upstream: app\n')
    p = run("check", "--no-probe", "-c", str(path))
    assert p.returncode == 2
    assert re.search(rf'^{re.escape(str(path))}:1:10: bad address "no-such-host\.invalid:8080" '
                     r"for listen: cannot resolve host", p.stderr, re.M), p.stderr


def test_unresolvable_server_at_runtime_is_502_dns_error(bulwark, origin):
    up = origin()
    b = bulwark(simple_config(["no-such-host.invalid:9000"],
                              extra_upstream="    retries: 0\n"))
    assert "does not resolve" in b.output()
    resp = fetch(b.port, "/x")
    assert resp.status == 502, resp.head
    assert resp.get("proxy-status") == ('bulwark; error=dns_error; '
                                        'next-hop="app"')
    rid = resp.get("x-request-id")
    assert b"dns_error" in resp.data
    b.wait_log(rf"upstream=no-such-host\.invalid:9000 upstream_status=- .* "
               rf"error=dns_error rid={rid}$", what="access")
    b.wait_log(r"no-such-host\.invalid:9000 \(upstream \"app\"\).*cause=dns_error")


def test_unresolvable_server_is_skipped_for_a_good_one(bulwark, origin):
    up = origin()
    b = bulwark(simple_config(["no-such-host.invalid:9000", up.addr],
                              extra_upstream="    retries: 1\n"))
    for _ in range(4):
        resp = fetch(b.port, "/echo")
        assert resp.status == 200, resp.head
