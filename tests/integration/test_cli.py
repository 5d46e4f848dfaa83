"""The command line: `bulwark check` validates a config and reports every error as
FILE:LINE:COLUMN: message, all at once (exit 2); `bulwark version`; bad usage exits 2.
(Probing the upstream servers, exit 3, is test_check.py's: here --no-probe.)"""
import re
import subprocess

from conftest import BIN

GOOD = """\
workers: 1
listen: ["127.0.0.1:18080"]
shutdown_timeout: 5s
client:
  header_timeout: 10s
upstreams:
  app:
    servers:
      - "127.0.0.1:9000"
      - { address: "127.0.0.1:9001", weight: 3 }
    balance: hash
    hash_key: header:X-User
    connect_timeout: 250ms
    read_timeout: 30s
    retries: 1
    keepalive: { max_idle: 8, idle_timeout: 30s }
  static:
    servers: ["127.0.0.1:9100"]
routes:
  - match: { host: example.com, path: /static/ }
    upstream: static
  - upstream: app
"""


def run(*args, cwd=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def pos(text, needle, nth=0):
    """1-based (line, column) where the nth occurrence of needle starts in text."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    return line, i - (text.rfind("\n", 0, i) + 1) + 1


def check(tmp_path, text, name="bulwark.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path), run("check", "--no-probe", "-c", str(path))


def error_lines(p, path):
    """The FILE:LINE:COLUMN: lines of stderr as (line, column, message)."""
    out = []
    for line in p.stderr.splitlines():
        m = re.fullmatch(rf"{re.escape(path)}:(\d+):(\d+): (.+)", line)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def assert_one_error(tmp_path, text, needle, message_rx):
    path, p = check(tmp_path, text)
    assert p.returncode == 2, (p.stdout, p.stderr)
    errs = error_lines(p, path)
    assert len(errs) == 1, p.stderr
    assert errs[0][:2] == pos(text, needle), p.stderr
    assert re.search(message_rx, errs[0][2]), errs[0][2]
    assert f"bulwark: 1 error(s) in {path}" in p.stderr
    assert "configuration is valid" not in p.stdout


def test_check_accepts_a_good_config(tmp_path):
    path, p = check(tmp_path, GOOD)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{path}: configuration is valid (2 upstream(s), 2 route(s))\n"
    assert p.stderr == ""


def test_check_reads_bulwark_yaml_in_the_current_directory_by_default(tmp_path):
    (tmp_path / "bulwark.yaml").write_text(GOOD)
    p = run("check", "--no-probe", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "bulwark.yaml: configuration is valid" in p.stdout


def test_unknown_key(tmp_path):
    text = GOOD.replace("    retries: 1\n", "    retries: 1\n    retires: 2\n")
    assert_one_error(tmp_path, text, "retires",
                     r'^unknown key "retires" in upstream "app" \(did you mean "retries"\?\)$')


def test_unknown_top_level_key(tmp_path):
    text = GOOD + "upstream_defaults: {}\n"
    assert_one_error(tmp_path, text, "upstream_defaults",
                     r'^unknown key "upstream_defaults" in top level')


def test_bad_duration(tmp_path):
    text = GOOD.replace("connect_timeout: 250ms", "connect_timeout: 250 ms")
    assert_one_error(tmp_path, text, "250 ms",
                     r'^bad duration "250 ms" for connect_timeout: expected a number followed by '
                     r"ms, s, m or h")


def test_duration_without_a_unit(tmp_path):
    text = GOOD.replace("read_timeout: 30s", "read_timeout: 30")
    assert_one_error(tmp_path, text, "30\n", r'^bad duration "30" for read_timeout')


def test_zero_timeout_is_refused(tmp_path):
    """Bug 15: a timeout of 0 was accepted and expired at once."""
    text = GOOD.replace("header_timeout: 10s", "header_timeout: 0")
    assert_one_error(tmp_path, text, "0\n",
                     r"^header_timeout must be at least 1ms: 0 would expire at once$")


def test_every_zero_timeout_is_reported_at_once(tmp_path):
    text = (GOOD.replace("shutdown_timeout: 5s", "shutdown_timeout: 0s")
            .replace("connect_timeout: 250ms", "connect_timeout: 0ms")
            .replace("idle_timeout: 30s", "idle_timeout: 0"))
    path, p = check(tmp_path, text)
    assert p.returncode == 2, (p.stdout, p.stderr)
    errs = error_lines(p, path)
    assert [(e[0], e[2].split(" ")[0]) for e in errs] == [
        (pos(text, "0s")[0], "shutdown_timeout"),
        (pos(text, "0ms")[0], "connect_timeout"),
        (pos(text, "idle_timeout: 0")[0], "idle_timeout")], p.stderr
    assert all("must be at least 1ms" in e[2] for e in errs)


def test_bad_address_without_port(tmp_path):
    text = GOOD.replace('"127.0.0.1:9100"', '"127.0.0.1"')
    assert_one_error(tmp_path, text, '"127.0.0.1"]',
                     r'^bad address "127\.0\.0\.1" for servers of upstream "static": missing port')


def test_bad_ipv4_address(tmp_path):
    text = GOOD.replace('"127.0.0.1:9000"', '"127.0.0.300:9000"')
    assert_one_error(tmp_path, text, '"127.0.0.300:9000"',
                     r'^bad address "127\.0\.0\.300:9000" for servers of upstream "app": '
                     r'"127\.0\.0\.300" is not a valid IPv4 address')


def test_port_out_of_range(tmp_path):
    text = GOOD.replace('"127.0.0.1:9001"', '"127.0.0.1:70000"')
    assert_one_error(tmp_path, text, '"127.0.0.1:70000"',
                     r'^bad address "127\.0\.0\.1:70000" for servers of upstream "app": '
                     r"port 70000 out of range 1-65535")


def test_listen_port_out_of_range(tmp_path):
    text = GOOD.replace('"127.0.0.1:18080"', '"127.0.0.1:0"')
    assert_one_error(tmp_path, text, '"127.0.0.1:0"',
                     r'^bad address "127\.0\.0\.1:0" for listen: port 0 out of range 1-65535')


def test_unknown_upstream_in_a_route(tmp_path):
    text = GOOD.replace("    upstream: static\n", "    upstream: statics\n")
    assert_one_error(tmp_path, text, "statics",
                     r'^route 1 refers to unknown upstream "statics" \(defined: app, static\)$')


def test_yaml_syntax_error(tmp_path):
    text = GOOD.replace('servers: ["127.0.0.1:9100"]', 'servers: ["127.0.0.1:9100"')
    path, p = check(tmp_path, text)
    assert p.returncode == 2
    errs = error_lines(p, path)
    assert len(errs) == 1, p.stderr
    # libyaml notices at the next line; the message points back at the open sequence
    line, col = pos(text, '["127.0.0.1:9100"')
    assert errs[0][0] == line + 1
    assert errs[0][2].startswith("YAML syntax error: did not find expected ',' or ']' "
                                 f"(while parsing a flow sequence at line {line}, column {col})")


def test_several_errors_are_reported_at_once_in_file_order(tmp_path):
    text = (GOOD.replace('"127.0.0.1:18080"', '"127.0.0.1:99999"')
                .replace("header_timeout: 10s", "header_timeout: soon")
                .replace('"127.0.0.1:9001"', '"127.0.0.1"')
                .replace("retries: 1", "retries: 11")
                .replace("    upstream: static\n", "    upstream: nowhere\n")
            + "lisen: []\n")
    path, p = check(tmp_path, text)
    assert p.returncode == 2
    errs = error_lines(p, path)
    expected = [
        (pos(text, '"127.0.0.1:99999"'), r"port 99999 out of range"),
        (pos(text, "soon"), r'bad duration "soon" for header_timeout'),
        (pos(text, '"127.0.0.1"'), r'bad address "127\.0\.0\.1" .*missing port'),
        (pos(text, "11"), r"retries 11 out of range 0-10"),
        (pos(text, "nowhere"), r'unknown upstream "nowhere"'),
        (pos(text, "lisen"), r'unknown key "lisen" in top level \(did you mean "listen"\?\)'),
    ]
    assert len(errs) == len(expected), p.stderr
    for (got_line, got_col, msg), ((line, col), rx) in zip(errs, expected):
        assert (got_line, got_col) == (line, col), (msg, p.stderr)
        assert re.search(rx, msg), msg
    assert p.stderr.splitlines()[-1] == f"bulwark: {len(expected)} error(s) in {path}"


def test_missing_required_keys(tmp_path):
    path, p = check(tmp_path, "workers: 1\n")
    assert p.returncode == 2
    msgs = [m for _, _, m in error_lines(p, path)]
    for key in ("listen", "upstreams", "routes"):
        assert f'missing required key "{key}" in top level' in msgs, p.stderr


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    p = run("check", "--no-probe", "-c", path)
    assert p.returncode == 2
    assert f"{path}: cannot open: No such file or directory" in p.stderr


def test_running_with_a_bad_config_exits_2_with_the_errors(tmp_path):
    text = GOOD.replace("retries: 1", "retries: lots")
    path = tmp_path / "bulwark.yaml"
    path.write_text(text)
    p = run("-c", str(path))
    assert p.returncode == 2
    line, col = pos(text, "lots")
    assert re.search(rf"^{re.escape(str(path))}:{line}:{col}: bad number \"lots\" for retries",
                     p.stderr, re.M), p.stderr


def test_version(tmp_path):
    p = run("version")
    assert p.returncode == 0
    assert re.fullmatch(r"bulwark \d+\.\d+\.\d+\S*\n", p.stdout), p.stdout


def test_unknown_command_is_bad_usage(tmp_path):
    p = run("frobnicate")
    assert p.returncode == 2
    assert "usage:" in p.stderr and "bulwark check" in p.stderr
    assert p.stdout == ""


def test_bad_usage_exits_2(tmp_path):
    for args in (["-c"], ["check", "-c"], ["check", "--bogus"], ["version", "extra"],
                 ["-x"], ["check", "check"]):
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "usage:" in p.stderr, (args, p.stderr)


def test_help_exits_0(tmp_path):
    p = run("--help")
    assert p.returncode == 0
    assert "usage:" in (p.stdout + p.stderr)
