"""At start and after each reload bulwark probes every upstream server once and logs
a warning per unreachable one, with the cause sentence; start-up does not wait for it
(the backend may come up later). probe_at_start: false turns it off. The tests set
probe_at_start explicitly: other suites may turn it off to count origin connections."""
import time

from conftest import simple_config
from origins import free_port
from origins.faulty import Blackhole, fetch

ON = "probe_at_start: true\n"


def test_unreachable_server_is_logged_at_start(bulwark, origin):
    up = origin()
    dead = f"127.0.0.1:{free_port()}"
    b = bulwark(simple_config([up.addr, dead], extra_top=ON))
    b.wait_log(rf'\[warn\] upstream "app" server {dead} is unreachable: connection_refused '
               r"\(Connection refused\): Nothing is listening")
    assert f"server {up.addr} is unreachable" not in b.error_log()


def test_start_does_not_wait_for_the_probe(bulwark):
    # a 6 s probe; start-up (until the port answers) must take well under that, with
    # room for a loaded machine or an ASan build
    hole = Blackhole()
    try:
        t0 = time.monotonic()
        b = bulwark(simple_config([hole.addr], extra_upstream="    connect_timeout: 6s\n",
                                  extra_top=ON))
        assert time.monotonic() - t0 < 4.0, "start-up waited for a 6 s probe"
        b.wait_log(rf'upstream "app" server {hole.addr} is unreachable: connection_timeout',
                   timeout=30)
    finally:
        hole.close()


def test_reload_probes_the_new_servers(bulwark, origin):
    up = origin()
    b = bulwark(simple_config([up.addr], extra_top=ON))
    dead = f"127.0.0.1:{free_port()}"
    assert b.reload(simple_config([up.addr, dead], extra_top=ON))
    b.wait_log(rf'upstream "app" server {dead} is unreachable: connection_refused')


def test_probe_at_start_false_opens_no_connection(bulwark, origin):
    up = origin()
    b = bulwark(simple_config([up.addr], extra_top="probe_at_start: false\n"))
    # A second instance, started after the first, with the probe on: once its probe
    # has reached its origin, the first one's would have reached ours too (no fixed
    # sleep: the time a probe takes is measured in this run).
    control = origin()
    bulwark(simple_config([control.addr], extra_top=ON))
    deadline = time.monotonic() + 20
    while control.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert control.connections >= 1, "the control instance's probe never connected"
    assert up.connections == 0
    assert fetch(b.port, "/echo").status == 200
    assert up.connections == 1


def test_servers_bound_to_programs_are_not_probed(bulwark, origin, tmp_path):
    # The program's server is not listening when the probe runs (bulwark starts it):
    # no warning for it; the other dead server still gets one, after it in the file.
    bound = f"127.0.0.1:{free_port()}"
    dead = f"127.0.0.1:{free_port()}"
    progs = ("programs:\n  sleeper:\n    command: [/bin/sleep, \"1000\"]\n"
             f"    upstream: app\n    server: \"{bound}\"\n")
    b = bulwark(simple_config([bound, dead], extra_top=ON + progs))
    b.wait_log(rf'upstream "app" server {dead} is unreachable')
    assert f"server {bound} is unreachable" not in b.error_log()


def test_check_says_which_servers_programs_start(tmp_path):
    import subprocess
    from conftest import BIN
    bound = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "b.yaml"
    cfg.write_text(simple_config([bound]).replace("{port}", str(free_port())) +
                   "programs:\n  web:\n    command: [/bin/sleep, \"1000\"]\n"
                   f"    upstream: app\n    server: \"{bound}\"\n")
    r = subprocess.run([BIN, "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'skip  upstream "app" server {bound}: started by program web' in r.stdout
