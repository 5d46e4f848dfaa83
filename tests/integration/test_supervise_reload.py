"""The supervisor across reloads and operators: a reload restarts changed programs
one at a time with zero failed requests, keeps unchanged ones (same pid), starts
added and stops removed ones; POST /programs/<name>/restart needs the admin token;
user/group are switched to (as root); and no process of a program's tree (a
grandchild, one in a session of its own) survives a SIGKILL of bulwark. Waits are
on conditions (/status fields, pid files, log lines), never fixed sleeps."""
import json
import os
import signal
import sys
import threading

import pytest

from origins import free_port, wait_for
from origins.faulty import fetch

TOKEN = "s3cret"

# A tiny HTTP server: answers every request with its port, pid and version (argv).
PROGRAM = r'''
import json, os, socket, sys
port, version = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d:
            break
        data += d
    if b"\r\n\r\n" in data:
        body = json.dumps({"port": port, "pid": os.getpid(), "version": version}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % len(body) + body)
    c.close()
'''


def admin_req(port, path, method="GET", token=TOKEN):
    headers = [("Authorization", f"Bearer {token}")] if token else []
    return fetch(port, path, method=method, headers=headers)


def programs(aport):
    r = admin_req(aport, "/status")
    assert r.status == 200, r.head
    return json.loads(r.data)["programs"]


def config(ports, progs, aport, token=TOKEN):
    srv = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    return (f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\n'
            f'admin: {{address: "127.0.0.1:{aport}", token: "{token}"}}\n'
            f"upstreams:\n  app:\n    servers: [{srv}]\n"
            "    connect_timeout: 1s\n    read_timeout: 5s\n    retries: 2\n"
            "routes:\n  - upstream: app\n"
            f"programs:\n{progs}")


def server_prog(name, prog, port, version, extra=""):
    args = ", ".join(json.dumps(a) for a in [sys.executable, prog, str(port), version])
    return (f"  {name}:\n    command: [{args}]\n    upstream: app\n"
            f'    server: "127.0.0.1:{port}"\n    ready_timeout: 20s\n    stop_timeout: 5s\n'
            + "".join(f"    {line}\n" for line in extra.splitlines() if line))


def sleeper(name, arg="1000"):
    return f'  {name}:\n    command: [/bin/sleep, "{arg}"]\n'


def gone(pid):
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def running(aport, name):
    st = programs(aport).get(name)
    return st if st and st["state"] == "RUNNING" and st["pid"] > 0 else None


def replaced(aport, name, old_pid):
    st = running(aport, name)
    return st if st and st["pid"] != old_pid else None


class Load(threading.Thread):
    """Requests one after another until stopped; keeps every status and version."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.results = []

    def run(self):
        while not self.stop.is_set():
            try:
                r = fetch(self.port, "/", timeout=10)
                version = json.loads(r.body)["version"] if r.status == 200 else None
                self.results.append((r.status, version, r.head))
            except Exception as e:  # a refused or reset connection is a failure too
                self.results.append((0, None, repr(e)))

    def versions(self):
        return [v for s, v, _ in self.results if s == 200]


def test_reload_restarts_changed_programs_one_at_a_time_with_zero_failed_requests(
        bulwark, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    p1, p2, aport = free_port(), free_port(), free_port()
    before = (server_prog("one", str(prog), p1, "v1") + server_prog("two", str(prog), p2, "v1")
              + sleeper("steady") + sleeper("old"))
    b = bulwark(config([p1, p2], before, aport))
    wait_for(lambda: all(running(aport, n) for n in ("one", "two", "steady", "old")),
             "every program running")
    pids = {n: s["pid"] for n, s in programs(aport).items()}

    load = Load(b.port)
    load.start()
    try:
        wait_for(lambda: len(load.results) >= 20, "requests before the reload")
        after = (server_prog("one", str(prog), p1, "v2") + server_prog("two", str(prog), p2, "v2")
                 + sleeper("steady") + sleeper("added"))
        assert b.reload(config([p1, p2], after, aport))

        def both_new():
            st = programs(aport)
            return (all(st[n]["state"] == "RUNNING" and st[n]["pid"] != pids[n]
                        for n in ("one", "two")) and
                    b.error_log().count("restarted and ready") >= 2)

        wait_for(both_new, "both servers restarted", 60)
        n = len(load.results)
        wait_for(lambda: len(load.results) >= n + 20, "requests after the reload")
    finally:
        load.stop.set()
        load.join(30)

    failed = [(s, h) for s, _, h in load.results if s != 200]
    assert not failed, (failed[:3], b.output())
    versions = load.versions()
    assert versions[0] == "v1" and versions[-1] == "v2", versions
    assert "v2" not in versions[:10]
    st = programs(aport)
    assert st["steady"]["pid"] == pids["steady"], "an unchanged program keeps running"
    assert st["steady"]["restarts"] == 0
    assert "old" not in st
    wait_for(lambda: gone(pids["old"]), "the removed program to stop")
    assert running(aport, "added")
    # one at a time: the second drains only after the first's replacement is ready
    log = b.error_log()
    first_ready = log.index("program one restarted and ready")
    second_drain = log.index("program two restarting: its server is marked down")
    assert first_ready < second_drain, log
    assert "program old stopped and removed" in log or "stopping program old" in log
    assert "program added added by the reload: starting it" in log


def test_a_new_address_starts_beside_the_old_one(bulwark, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    p1, p2, other, aport = free_port(), free_port(), free_port(), free_port()
    b = bulwark(config([p1, other], server_prog("web", str(prog), p1, "v1")
                       + server_prog("spare", str(prog), other, "spare"), aport))
    old_pid = wait_for(lambda: running(aport, "web"), "web running")["pid"]
    assert b.reload(config([p2, other], server_prog("web", str(prog), p2, "v2")
                           + server_prog("spare", str(prog), other, "spare"), aport))
    b.wait_log(r"program web: starting its new definition beside the running one")
    new = wait_for(lambda: replaced(aport, "web", old_pid), "the new web")
    wait_for(lambda: gone(old_pid), "the old web to stop once the new one is ready")
    log = b.error_log()
    assert log.index("program web restarted and ready") < log.index("stopping program web"), log
    seen = set()
    for _ in range(6):
        r = fetch(b.port, "/")
        assert r.status == 200, r.head
        seen.add(json.loads(r.body)["version"])
    assert "v2" in seen and "v1" not in seen, seen
    assert new["pid"] != old_pid


def test_admin_restart_needs_the_token(bulwark, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    p1, aport = free_port(), free_port()
    b = bulwark(config([p1], server_prog("web", str(prog), p1, "v1"), aport))
    pid = wait_for(lambda: running(aport, "web"), "web running")["pid"]

    assert admin_req(aport, "/programs/web/restart", "POST", token=None).status == 401
    assert admin_req(aport, "/programs/web/restart", "POST", token="wrong").status == 401
    assert admin_req(aport, "/programs/web/restart", "GET").status == 405
    assert admin_req(aport, "/programs/nope/restart", "POST").status == 404
    assert programs(aport)["web"]["pid"] == pid, "nothing restarted it yet"

    r = admin_req(aport, "/programs/web/restart", "POST")
    assert r.status == 202, r.head
    assert json.loads(r.body) == {"program": "web", "restart": "accepted"}
    st = wait_for(lambda: replaced(aport, "web", pid), "web restarted")
    assert st["restarts"] == 1, st
    assert gone(pid)
    b.wait_log(r"program web: restart asked \(admin\)")
    r = fetch(b.port, "/")
    assert r.status == 200 and json.loads(r.body)["pid"] == st["pid"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_user_and_group_are_switched_to(bulwark, tmp_path):
    out = tmp_path / "ids"
    aport, p = free_port(), free_port()
    progs = ("  ids:\n    command: [/bin/sh, -c, \"id -u; id -g; id -G; exec sleep 1000\"]\n"
             f"    user: nobody\n    group: \"65534\"\n    stdout: {out}\n")
    bulwark(config([p], progs, aport))
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, "the ids")
    uid, gid, groups = out.read_text().splitlines()[:3]
    assert uid == "65534" and gid == "65534", out.read_text()
    assert "0" not in groups.split(), "root's groups were dropped"


# A shell script with two sleeping grandchildren, one in a session of its own
# (setsid): each writes its pid to a file before the script waits forever.
TREE = r'''
sleep 1000 &
echo $! > "$1/child"
setsid sleep 1000 &
echo $! > "$1/session"
echo $$ > "$1/script"
wait
'''


def test_sigkill_of_bulwark_leaves_no_process_of_the_tree(bulwark, tmp_path):
    script = tmp_path / "tree.sh"
    script.write_text(TREE)
    aport, p = free_port(), free_port()
    progs = f'  tree:\n    command: [/bin/sh, "{script}", "{tmp_path}"]\n'
    b = bulwark(config([p], progs, aport))
    files = [tmp_path / n for n in ("child", "session", "script")]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), "the pid files")
    pids = [int(f.read_text()) for f in files]
    assert programs(aport)["tree"]["pid"] == pids[2]
    assert not any(gone(pid) for pid in pids)

    def session_of(pid):
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])

    # The pid file is written right after the shell's fork: setsid(1) may not
    # have run setsid() yet.
    wait_for(lambda: session_of(pids[1]) == pids[1],
             "the setsid grandchild to lead a session of its own")

    os.kill(b.pid, signal.SIGKILL)
    b.proc.wait(10)
    for pid in pids:
        wait_for(lambda: gone(pid), f"pid {pid} to be gone after the SIGKILL of bulwark", 10)
