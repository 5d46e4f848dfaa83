#!/usr/bin/env bash
# `make run`: two demo backends (examples/demo_backend.py on 127.0.0.1:9001 and :9002) behind
# bulwark (examples/demo.yaml, 127.0.0.1:8080, round robin, access log on stderr).
# Runs until Ctrl-C (or SIGTERM, or bulwark exiting); then stops, by PID, everything it started.
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
cd "$ROOT"
PY=/usr/bin/python3
BIN=./bulwark
CONF=examples/demo.yaml
PORT=8080
BACKENDS=("9001 backend-1" "9002 backend-2")

say() { printf '[demo] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ -x "$BIN" ] || die "$BIN is not built: run 'make' (or 'make run') first"
[ -x "$PY" ] || die "$PY not found (apt-get install -y python3)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
for p in $PORT 9001 9002; do
  if listening "$p"; then
    who=$(ss -ltnpH "sport = :$p" 2>/dev/null | grep -o 'users:(([^)]*' | head -n1 | sed 's/users:((//')
    die "port $p on 127.0.0.1 is already in use${who:+ (by $who)}: stop that process first, then retry"
  fi
done

PIDS=()      # everything this script started, stopped in reverse order (bulwark first)
declare -A WHAT=()
BW_PID=

# alive PID: the process exists and is not a zombie waiting to be reaped
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }

stop_pid() {  # stop_pid PID GRACE_TENTHS: SIGTERM, wait up to GRACE, then SIGKILL; reap it
  local pid=$1 grace=$2 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    say "${WHAT[$pid]} (pid $pid) did not stop in time: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap '' INT TERM   # a second Ctrl-C must not leave children behind: finish first
  local i
  [ ${#PIDS[@]} -gt 0 ] && say "stopping ${#PIDS[@]} process(es): ${PIDS[*]}"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    # bulwark drains in-flight requests (shutdown_timeout: 5s in demo.yaml)
    if [ "${PIDS[$i]}" = "$BW_PID" ]; then stop_pid "${PIDS[$i]}" 70; else stop_pid "${PIDS[$i]}" 20; fi
  done
  PIDS=()
}
trap cleanup EXIT
trap 'echo >&2; exit 130' INT
trap 'exit 143' TERM

wait_until() {  # wait_until SECONDS PID WHAT COMMAND...: poll COMMAND every 0.1 s while PID lives
  local tenths=$(($1 * 10)) pid=$2 what=$3 i
  shift 3
  for ((i = 0; i < tenths; i++)); do
    "$@" && return 0
    alive "$pid" || die "$what exited before it was ready (see its messages above)"
    sleep 0.1
  done
  die "$what was not ready after $((tenths / 10)) s"
}
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/")" != 000 ]; }

for b in "${BACKENDS[@]}"; do
  read -r port name <<<"$b"
  "$PY" examples/demo_backend.py "$port" "$name" &
  PIDS+=($!) WHAT[$!]="$name (127.0.0.1:$port)"
done
for ((i = 0; i < ${#BACKENDS[@]}; i++)); do
  read -r port name <<<"${BACKENDS[$i]}"
  wait_until 10 "${PIDS[$i]}" "$name" listening "$port"
done

"$BIN" -c "$CONF" &
BW_PID=$!
PIDS+=("$BW_PID") WHAT[$BW_PID]="bulwark"
wait_until 10 "$BW_PID" "bulwark ($BIN -c $CONF)" answers

U="http://127.0.0.1:$PORT"
hint() { printf '    %-42s # %s\n' "$1" "$2" >&2; }
{
  echo
  echo "  bulwark is listening on $U/  (pid $BW_PID; backends on 127.0.0.1:9001 and :9002)"
  echo
  echo "  Try, in another terminal:"
} >&2
hint "curl $U/" "twice: backend-1 and backend-2 take turns"
hint "curl -i $U/" "response headers: Via, X-Backend"
hint "curl $U/slow" "the backend sleeps 2 s"
hint "curl -i -d x=1 $U/crash" "a backend exits mid-request: 502, Proxy-Status:"
hint "" "connection_terminated (a POST with a body is"
hint "" "never replayed on the other backend)"
hint "curl $U/" "still 200: the dead backend's turn is retried"
hint "" "on the live one (see the error log lines)"
hint "curl -i $U/crash" "a GET is retried on the other backends: each"
hint "" "exits in turn; then 502 connection_refused"
hint "" "(the health checks log each backend going down;"
hint "" "with both down, 503 destination_unavailable at once)"
printf '\n  Access and error log lines appear below. Ctrl-C stops bulwark and the backends.\n\n' >&2

# Foreground: report backends that exit (e.g. /crash), stop when bulwark exits or on Ctrl-C.
WAITING=("${PIDS[@]}")
while :; do
  done_pid= status=0
  wait -n -p done_pid "${WAITING[@]}" || status=$?
  [ -n "$done_pid" ] || continue   # interrupted by a signal that did not stop the script
  if [ "$done_pid" = "$BW_PID" ]; then
    say "bulwark exited with status $status"
    exit "$status"
  fi
  say "${WHAT[$done_pid]} (pid $done_pid) exited with status $status; bulwark keeps running"
  rest=()
  for p in "${WAITING[@]}"; do [ "$p" = "$done_pid" ] || rest+=("$p"); done
  WAITING=("${rest[@]}")
done
