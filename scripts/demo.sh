#!/usr/bin/env bash
# `make run`: bulwark (examples/demo.yaml, 127.0.0.1:8080, round robin, access log on stderr) with
# two demo backends (examples/demo_backend.py on 127.0.0.1:9001 and :9002) that bulwark itself
# starts, restarts when they crash, and stops (programs: in demo.yaml).
# Runs until Ctrl-C (or SIGTERM, or bulwark exiting); then stops bulwark by PID, which stops
# the backends.
# usage: scripts/demo.sh        (from anywhere; ./bulwark must be built: `make`)
set -euo pipefail

# Started in the background by a non-interactive shell (`scripts/demo.sh &`), bash inherits
# SIGINT ignored and cannot trap it; restart once with the default disposition so that
# `kill -INT` stops the demo as Ctrl-C does. (awk inherits the same ignored set.)
sigign=$(awk '/^SigIgn:/ {print $2}' /proc/self/status 2>/dev/null || echo 0)
if [ -z "${BULWARK_DEMO_REEXEC:-}" ] && (((16#${sigign:-0} >> 1) & 1)) &&
  env --default-signal=INT true 2>/dev/null; then
  BULWARK_DEMO_REEXEC=1 exec env --default-signal=INT "$0" "$@"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"   # demo.yaml names examples/demo_backend.py relative to here
PY=/usr/bin/python3
BIN=./bulwark
CONF=examples/demo.yaml
PORT=8080
ADMIN=9901

say() { printf '[demo] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ -x "$BIN" ] || die "$BIN is not built: run 'make' (or 'make run') first"
[ -x "$PY" ] || die "$PY not found (apt-get install -y python3)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
for p in $PORT 9001 9002 $ADMIN; do
  if listening "$p"; then
    who=$(ss -ltnpH "sport = :$p" 2>/dev/null | grep -o 'users:(([^)]*' | head -n1 | sed 's/users:((//')
    die "port $p on 127.0.0.1 is already in use${who:+ (by $who)}: stop that process first, then retry"
  fi
done

BW_PID=

# alive PID: the process exists and is not a zombie waiting to be reaped
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }

cleanup() {
  trap '' INT TERM   # a second Ctrl-C must not leave bulwark behind: finish first
  local i
  [ -n "$BW_PID" ] || return 0
  if alive "$BW_PID"; then
    say "stopping bulwark (pid $BW_PID); it stops the backends"
    kill -TERM "$BW_PID" 2>/dev/null || true
    # bulwark drains in-flight requests (shutdown_timeout: 5s), then stops the backends
    # (stop_timeout: 3s)
    for ((i = 0; i < 100; i++)); do alive "$BW_PID" || break; sleep 0.1; done
  fi
  if alive "$BW_PID"; then
    say "bulwark (pid $BW_PID) did not stop in time: SIGKILL (its keepers kill the backends)"
    kill -KILL "$BW_PID" 2>/dev/null || true
  fi
  wait "$BW_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo >&2; exit 130' INT
trap 'exit 143' TERM

answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/")" != 000 ]; }

"$BIN" -c "$CONF" &
BW_PID=$!
for ((i = 0; i < 300; i++)); do
  answers && break
  alive "$BW_PID" || die "bulwark ($BIN -c $CONF) exited before it was ready (see its messages above)"
  sleep 0.1
done
answers || die "bulwark was not ready after 30 s"

U="http://127.0.0.1:$PORT"
A="http://127.0.0.1:$ADMIN"
hint() { printf '    %-42s # %s\n' "$1" "$2" >&2; }
{
  echo
  echo "  bulwark is listening on $U/  (pid $BW_PID; it runs the backends on 127.0.0.1:9001 and :9002)"
  echo
  echo "  Try, in another terminal:"
} >&2
hint "curl $U/" "twice: backend-1 and backend-2 take turns"
hint "curl -i $U/" "response headers: Via, X-Backend"
hint "curl $U/slow" "the backend sleeps 2 s"
hint "curl -i -d x=1 $U/crash" "a backend exits mid-request: 502, Proxy-Status:"
hint "" "connection_terminated (a POST with a body is"
hint "" "never replayed on the other backend); bulwark"
hint "" "marks its server down and restarts it (log)"
hint "curl $U/" "still 200: the other backend answers meanwhile"
hint "curl -H 'Authorization: Bearer demo' $A/status" "programs: pid, state, restarts, last exit"
hint "curl -X POST -H 'Authorization: Bearer demo' \\" ""
hint "  $A/programs/backend-1/restart" "restart one backend (202), no request fails"
printf '\n  Access and error log lines appear below. Ctrl-C stops bulwark and the backends.\n\n' >&2

status=0
wait "$BW_PID" || status=$?
say "bulwark exited with status $status"
BW_PID=
exit "$status"
