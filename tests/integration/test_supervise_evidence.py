"""Supervisor evidence: a gateway error on a server whose program died names the
program and what ended it (error log, /errors, /status, Proxy-Status details);
a program whose server stops answering its health checks is restarted as a hang;
a group whose programs are all FATAL answers 503 at once; the last stderr lines
are kept in bounded memory and shown in /status and the death log.

Programs are small Python scripts bulwark starts. Waits are on conditions
(/status fields, log lines), never fixed sleeps."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import BIN
from origins import free_port, wait_for
from origins.faulty import fetch

# A tiny HTTP server on argv[1]: prints a few stderr lines at start, answers
# every request with its pid, and after `limit` answers (mode "segv") kills
# itself with SIGSEGV after a last line on stderr.
PROGRAM = r'''
import json, os, signal, socket, sys
port, mode, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print(f"starting on port {port}", file=sys.stderr, flush=True)
print("config loaded", file=sys.stderr, flush=True)
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
    if served >= limit and mode == "segv":
        print("about to crash: null pointer in handler", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
'''

# Writes to stderr as fast as it can: `lines` mode floods long lines, `raw`
# writes without any newline. Never listens.
FLOOD = r'''
import sys
mode = sys.argv[1]
chunk = ("x" * 65536) if mode == "raw" else (("y" * 5000 + "\n") * 13)
out = sys.stderr.buffer
while True:
    out.write(chunk.encode())
    out.flush()
'''


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def admin_get(port, path):
    r = fetch(port, path)
    assert r.status == 200, r.head
    return json.loads(r.data)


def program(aport, name):
    return admin_get(aport, "/status")["programs"][name]


def server_status(aport, server):
    for s in admin_get(aport, "/status")["upstreams"]["app"]["servers"]:
        if s["server"] == server:
            return s
    raise AssertionError(f"no server {server} in /status")


def config(servers, programs, admin_port, upstream_extra="", top_extra=""):
    srv = ", ".join(f'"{s}"' for s in servers)
    return (f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\nadmin: "127.0.0.1:{admin_port}"\n'
            f"{top_extra}"
            f"upstreams:\n  app:\n    servers: [{srv}]\n"
            "    connect_timeout: 1s\n    read_timeout: 5s\n    retries: 0\n"
            f"{upstream_extra}"
            "routes:\n  - upstream: app\n"
            f"programs:\n{programs}")


def prog_entry(name, argv, port=None, extra=""):
    args = ", ".join(json.dumps(a) for a in argv)
    text = f"  {name}:\n    command: [{args}]\n"
    if port:
        text += f'    upstream: app\n    server: "127.0.0.1:{port}"\n    ready_timeout: 10s\n'
    return text + "".join(f"    {line}\n" for line in extra.splitlines() if line)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def written(pid):
    """Bytes the process wrote (its pipe writes included)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


EXPOSE = "errors:\n  expose_details: true\n"


def test_segv_is_named_in_the_next_gateway_error(bulwark, tmp_path):
    prog = write(tmp_path, "prog.py", PROGRAM)
    pport, aport = free_port(), free_port()
    # a long back-off: the next request finds the program still dead
    entry = prog_entry("php", [sys.executable, prog, str(pport), "segv", "1"], pport,
                       "backoff: {initial: 30s, max: 30s}\nmax_restarts: 10")
    b = bulwark(config([f"127.0.0.1:{pport}"], entry, aport, top_extra=EXPOSE))
    wait_for(lambda: program(aport, "php")["state"] == "RUNNING", "the program to run")
    r = fetch(b.port, "/")
    assert r.status == 200, (r.status, r.head)  # its one answer, then SIGSEGV
    st = wait_for(lambda: (lambda s: s if s["state"] == "BACKOFF" else None)(
        program(aport, "php")), "the program to die")
    assert st["last_exit"]["signal"] == "SIGSEGV", st

    r = fetch(b.port, "/")
    assert r.status in (502, 503), (r.status, r.head)
    ps = r.get("proxy-status", "")
    assert "program php exited on SIGSEGV" in ps, ps
    assert "restart 1 of 10" in ps, ps
    rid = r.get("x-request-id")
    # the error log line of that request names it
    line = b.wait_log(rf"[^\n]*program php exited on SIGSEGV[^\n]*rid={rid}").group(0)
    assert "restart 1 of 10" in line, line
    # /errors keeps it with the request
    errs = admin_get(aport, "/errors")["errors"]
    entry = next(e for e in errs if e["rid"] == rid)
    # the one server was marked down when the program died: no server was tried
    assert entry["program"] == ("every server of group app is down: program php exited on "
                                "SIGSEGV %d s ago, restart 1 of 10 (now BACKOFF)"
                                % int(entry["program"].split(" s ago")[0].split()[-1])), entry
    # /status names it on the server and on the program
    assert server_status(aport, f"127.0.0.1:{pport}")["program"].startswith(
        "program php exited on SIGSEGV"), server_status(aport, f"127.0.0.1:{pport}")
    st = program(aport, "php")
    assert st["evidence"] and "SIGSEGV" in st["evidence"], st
    # its last words: in /status and in the death log line
    assert "about to crash: null pointer in handler" in st["last_stderr"], st
    assert st["last_stderr"][0] == f"starting on port {pport}", st
    b.wait_log(r"program php exited: killed by SIGSEGV.*restarting in \d+ ms.*"
               r"last_stderr=\"[^\"]*about to crash: null pointer in handler\"")


def test_details_stay_private_by_default(bulwark, tmp_path):
    prog = write(tmp_path, "prog.py", PROGRAM)
    pport, aport = free_port(), free_port()
    entry = prog_entry("php", [sys.executable, prog, str(pport), "segv", "1"], pport,
                       "backoff: {initial: 30s, max: 30s}")
    b = bulwark(config([f"127.0.0.1:{pport}"], entry, aport))
    wait_for(lambda: program(aport, "php")["state"] == "RUNNING", "the program to run")
    assert fetch(b.port, "/").status == 200
    wait_for(lambda: program(aport, "php")["state"] == "BACKOFF", "the program to die")
    r = fetch(b.port, "/")
    assert r.status in (502, 503), r.head
    assert "program" not in r.get("proxy-status", ""), r.headers
    assert b"SIGSEGV" not in r.data
    # the operator still sees it
    rid = r.get("x-request-id")
    b.wait_log(rf"program php exited on SIGSEGV[^\n]*rid={rid}")


def test_sigstopped_program_is_restarted_as_a_hang(bulwark, tmp_path):
    prog = write(tmp_path, "prog.py", PROGRAM)
    pport, aport = free_port(), free_port()
    entry = prog_entry("php", [sys.executable, prog, str(pport), "serve", "0"], pport,
                       "backoff: {initial: 100ms, max: 200ms}\nstop_timeout: 2s\n"
                       "max_restarts: 10")
    health = "    health: {path: /, interval: 200ms, timeout: 300ms, fails: 3, passes: 1}\n"
    b = bulwark(config([f"127.0.0.1:{pport}"], entry, aport, upstream_extra=health,
                       top_extra=EXPOSE))
    st = wait_for(lambda: (lambda s: s if s["state"] == "RUNNING" else None)(
        program(aport, "php")), "the program to run")
    pid = st["pid"]
    assert fetch(b.port, "/").status == 200
    os.kill(pid, signal.SIGSTOP)
    try:
        m = b.wait_log(rf"program php: server 127\.0\.0\.1:{pport} failed 3 health checks "
                       rf"while running \(pid {pid}\): restarting it \(hang\)")
        assert m
        st = wait_for(lambda: (lambda s: s if s["state"] == "RUNNING" and s["pid"] != pid
                               else None)(program(aport, "php")),
                      "the restarted program to run", 30)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert st["restarts"] == 1, st
    assert st["last_exit"]["hung"] is True, st
    assert "restarted after hanging" in st["evidence"], st
    b.wait_log(r"program php exited: killed by SIGTERM \(stopped by bulwark: its server hung\)")
    # it serves again, from the new process
    r = wait_for(lambda: (lambda x: x if x.status == 200 else None)(fetch(b.port, "/")),
                 "the restarted program to answer", 30)
    assert json.loads(r.body)["pid"] == st["pid"]


def test_all_programs_fatal_gives_an_immediate_503(bulwark, tmp_path):
    port, aport = free_port(), free_port()
    entry = prog_entry("php", ["/bin/sh", "-c", "echo dying >&2; exit 3"], port,
                       "backoff: {initial: 50ms, max: 100ms}\nmax_restarts: 2\n"
                       "restart_window: 1m")
    entry = entry.replace("    ready_timeout: 10s\n", "")
    b = bulwark(config([f"127.0.0.1:{port}"], entry, aport, top_extra=EXPOSE))
    wait_for(lambda: program(aport, "php")["state"] == "FATAL", "FATAL")
    t0 = time.monotonic()
    r = fetch(b.port, "/")
    elapsed = time.monotonic() - t0
    assert r.status == 503, (r.status, r.head)
    ps = r.get("proxy-status", "")
    assert "destination_unavailable" in ps, ps
    assert "every server of group app is down: program php is FATAL after 2 restarts in 60 s" \
        in ps, ps
    assert elapsed < 5, elapsed
    rid = r.get("x-request-id")
    line = b.wait_log(rf"no server of upstream \"app\" is up[^\n]*rid={rid}").group(0)
    assert "program php is FATAL after 2 restarts in 60 s" in line, line
    assert "without a connect attempt" in line, line
    # no attempt was made: no connect failure for this request
    assert not [l for l in b.error_log().splitlines()
                if f"rid={rid}" in l and "connect() to" in l]
    assert admin_get(aport, "/status")["programs"]["php"]["last_stderr"][-1] == "dying"
    errs = admin_get(aport, "/errors")["errors"]
    assert "is FATAL" in next(e for e in errs if e["rid"] == rid)["program"]
    # bulwark status: a programs table after the servers
    p = subprocess.run([BIN, "status", "--admin", f"127.0.0.1:{aport}"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("PROGRAM"))
    assert lines[head].split() == ["PROGRAM", "STATE", "PID", "RESTARTS", "UPTIME", "LAST",
                                   "EXIT", "LAST", "STDERR"], lines[head]
    row = lines[head + 1].split()
    assert row[:5] == ["php", "FATAL", "-", "2", "-"], lines[head + 1]
    assert "exit code 3" in lines[head + 1] and row[-1] == "dying", lines[head + 1]


def test_fatal_programs_are_not_tried_even_in_panic_mode(bulwark, tmp_path):
    # panic_mode tries servers the health checks hold down; a FATAL program's server is
    # not one that may come back by itself: 503 at once, no connect attempt.
    port, aport = free_port(), free_port()
    entry = prog_entry("php", ["/bin/sh", "-c", "exit 3"], port,
                       "backoff: {initial: 50ms, max: 100ms}\nmax_restarts: 1\n"
                       "restart_window: 1m")
    entry = entry.replace("    ready_timeout: 10s\n", "")
    b = bulwark(config([f"127.0.0.1:{port}"], entry, aport, upstream_extra="    panic_mode: true\n"))
    wait_for(lambda: program(aport, "php")["state"] == "FATAL", "FATAL")
    r = fetch(b.port, "/")
    assert r.status == 503, (r.status, r.head)
    assert "destination_unavailable" in r.get("proxy-status", "")
    rid = r.get("x-request-id")
    b.wait_log(rf"no server of upstream \"app\" is up[^\n]*rid={rid}")
    assert not [l for l in b.error_log().splitlines()
                if f"rid={rid}" in l and "connect() to" in l]


def test_flooding_program_keeps_a_bounded_tail(bulwark, tmp_path):
    flood = write(tmp_path, "flood.py", FLOOD)
    aport = free_port()
    other = free_port()
    entries = (prog_entry("lines", [sys.executable, flood, "lines"], extra="stderr: /dev/null")
               + prog_entry("raw", [sys.executable, flood, "raw"], extra="stderr: /dev/null"))
    b = bulwark(config([f"127.0.0.1:{other}"], entries, aport))
    wait_for(lambda: program(aport, "raw")["state"] == "RUNNING", "the floods to run")

    def flooded_lines():
        st = program(aport, "lines")
        return st if len(st["last_stderr"]) == 20 else None

    st = wait_for(flooded_lines, "20 lines kept")
    for line in st["last_stderr"]:
        assert len(line) <= 200 and line.endswith("... [line cut]"), line
    base = rss_kib(b.pid)
    # let over 100 MiB pass through each pipe (counted by the kernel)
    for name in ("raw", "lines"):
        pid = program(aport, name)["pid"]
        wait_for(lambda: written(pid) > 100 * 1024 * 1024, f"{name} to write 100 MiB", 60)
    assert rss_kib(b.pid) < base + 16 * 1024, (base, rss_kib(b.pid))
    st = program(aport, "raw")
    assert len(st["last_stderr"]) == 1, st
    assert len(st["last_stderr"][0]) <= 200, st
    assert st["last_stderr"][0].endswith("... [line cut]"), st
    st = program(aport, "lines")
    assert len(st["last_stderr"]) == 20 and st["state"] == "RUNNING", st
