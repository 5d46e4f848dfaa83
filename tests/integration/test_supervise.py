"""The supervisor (programs.<name>): bulwark starts small Python programs written
into tmp_path, restarts them with back-off when they exit, keeps what ended them
for /status, gives up (FATAL) after max_restarts, and leaves no process of any
program tree behind after SIGTERM. Waits are on conditions (/status fields, ports,
log lines), never fixed sleeps."""
import json
import os
import sys
import time

from origins import free_port, wait_for
from origins.faulty import fetch

# A tiny HTTP server: answers every request with its port and pid, and after
# `limit` answers exits 1 ("exit") or kills itself with SIGSEGV ("segv").
# `tree` forks a grandchild that ignores SIGTERM and writes both pids to a file.
PROGRAM = r'''
import json, os, signal, socket, sys, time
port, mode, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if mode == "tree":
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(60)
    with open(sys.argv[4], "w") as f:
        f.write(f"{os.getpid()} {child}\n")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
served = 0
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d:
            break
        data += d
    if b"\r\n\r\n" not in data:
        c.close()
        continue
    body = json.dumps({"port": port, "pid": os.getpid()}).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
              % len(body) + body)
    c.close()
    served += 1
    if served >= limit:
        if mode == "exit":
            sys.exit(1)
        if mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
'''


def write_program(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    return str(path)



def admin_status(port):
    r = fetch(port, "/status")
    assert r.status == 200, r.head
    return json.loads(r.data)


def program(aport, name):
    return admin_status(aport)["programs"][name]


def config(servers, programs, admin_port):
    srv = ", ".join(f'"{s}"' for s in servers)
    return (f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\nadmin: "127.0.0.1:{admin_port}"\n'
            f"upstreams:\n  app:\n    servers: [{srv}]\n"
            "    connect_timeout: 1s\n    read_timeout: 5s\n    retries: 2\n"
            "routes:\n  - upstream: app\n"
            f"programs:\n{programs}")


def prog_entry(name, prog, port, mode, limit, extra="", bind=True, argv_extra=()):
    args = ", ".join(json.dumps(a) for a in
                     [sys.executable, prog, str(port), mode, str(limit), *argv_extra])
    text = f"  {name}:\n    command: [{args}]\n"
    if bind:
        text += f'    upstream: app\n    server: "127.0.0.1:{port}"\n    ready_timeout: 10s\n'
    return text + "".join(f"    {line}\n" for line in extra.splitlines() if line)


def gone(pid):
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_exit_1_is_restarted_with_backoff_while_the_other_server_serves(
        bulwark, origin, tmp_path):
    prog = write_program(tmp_path)
    other = origin()
    pport, aport = free_port(), free_port()
    entry = prog_entry("flaky", prog, pport, "exit", 2,
                       "backoff: {initial: 200ms, max: 400ms}\nmax_restarts: 100")
    b = bulwark(config([f"127.0.0.1:{pport}", f"127.0.0.1:{other.port}"], entry, aport))
    first = program(aport, "flaky")
    assert first["state"] in ("RUNNING", "STARTING") and first["pid"] > 0, first
    served_by_program = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = fetch(b.port, "/")
        assert r.status == 200, (r.status, r.head, b.output())
        body = json.loads(r.body)
        if body["port"] == pport:
            served_by_program.add(body["pid"])
        st = program(aport, "flaky")
        if st["restarts"] >= 2 and len(served_by_program) >= 2:
            break
    st = program(aport, "flaky")
    assert st["restarts"] >= 2, (st, b.output())
    assert st["last_exit"]["code"] == 1 and st["last_exit"]["signal"] is None, st
    assert st["last_exit"]["text"] == "exit code 1", st
    assert len(served_by_program) >= 2, "a restarted program answered again"
    b.wait_log(r"program flaky exited: exit code 1; its server is down; restarting in \d+ ms")
    # the back-off: 200 ms nominal at first, within +-50%
    first_delay = int(b.wait_log(r"restarting in (\d+) ms").group(1))
    assert 100 <= first_delay <= 300, first_delay


def test_segv_shows_the_signal_in_status(bulwark, origin, tmp_path):
    prog = write_program(tmp_path)
    other = origin()
    pport, aport = free_port(), free_port()
    entry = prog_entry("crashy", prog, pport, "segv", 1, "restart: never")
    b = bulwark(config([f"127.0.0.1:{pport}", f"127.0.0.1:{other.port}"], entry, aport))
    pid = program(aport, "crashy")["pid"]

    def crashed():
        r = fetch(b.port, "/")
        assert r.status == 200, (r.status, r.head)
        st = program(aport, "crashy")
        return st if st["state"] == "EXITED" else None

    st = wait_for(crashed, "the program to die of SIGSEGV")
    assert st["last_exit"]["signal"] == "SIGSEGV", st
    assert st["last_exit"]["code"] is None, st
    assert st["last_exit"]["text"].startswith("killed by SIGSEGV"), st
    assert st["pid"] == 0 and st["restarts"] == 0, st
    assert gone(pid)
    b.wait_log(r"program crashy exited: killed by SIGSEGV.*not restarted \(restart: never\)")
    # its server is marked down: every request now goes to the other one
    for _ in range(5):
        r = fetch(b.port, "/")
        assert r.status == 200 and json.loads(r.body)["port"] == other.port


def test_fatal_after_max_restarts(bulwark, origin, tmp_path):
    other = origin()
    aport = free_port()
    entry = ("  dies:\n    command: [/bin/sh, -c, \"exit 3\"]\n"
             "    backoff: {initial: 50ms, max: 100ms}\n"
             "    max_restarts: 2\n    restart_window: 1m\n")
    b = bulwark(config([f"127.0.0.1:{other.port}"], entry, aport))
    st = wait_for(lambda: (lambda s: s if s["state"] == "FATAL" else None)(
        program(aport, "dies")), "FATAL")
    assert st["restarts"] == 2 and st["pid"] == 0, st
    assert st["last_exit"]["code"] == 3, st
    b.wait_log(r"\[error\] program dies FATAL: exit code 3, and it was restarted 2 times")
    # nothing restarts it any more
    assert program(aport, "dies")["restarts"] == 2


def test_sigterm_leaves_no_process_of_the_tree(bulwark, tmp_path):
    prog = write_program(tmp_path)
    pport, aport = free_port(), free_port()
    pids_file = str(tmp_path / "pids")
    entry = prog_entry("tree", prog, pport, "tree", 1000000,
                       "stop_timeout: 1s", argv_extra=[pids_file])
    b = bulwark(config([f"127.0.0.1:{pport}"], entry, aport))
    wait_for(lambda: os.path.exists(pids_file) and open(pids_file).read().endswith("\n"),
             "the pids file")
    leader, grandchild = map(int, open(pids_file).read().split())
    st = program(aport, "tree")
    assert st["pid"] == leader and st["state"] == "RUNNING", st
    r = fetch(b.port, "/")
    assert r.status == 200 and json.loads(r.body)["pid"] == leader
    assert not gone(leader) and not gone(grandchild)
    assert b.stop() == 0
    assert gone(leader), "the program survived bulwark"
    wait_for(lambda: gone(grandchild), "the grandchild (ignores SIGTERM) to be gone", 10)
    log = b.error_log()
    assert "stopping program tree: SIGTERM to process group" in log, log
