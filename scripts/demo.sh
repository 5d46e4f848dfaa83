#!/usr/bin/env bash
# `make run`: bulwark (examples/demo.yaml, 127.0.0.1:8080, round robin, access log on stderr) with
# two demo backends (examples/demo_backend.py on 127.0.0.1:9001 and :9002) that bulwark itself
# starts, restarts when they crash, and stops (programs: in demo.yaml). When php-fpm is
# installed (/usr/sbin/php-fpm*), also a php-fpm that bulwark runs, with its pool config and
# unix socket in a temporary directory, behind the route /php/ (examples/php/index.php).
# Runs until Ctrl-C (or SIGTERM, or bulwark exiting); then stops bulwark by PID, which stops
# the backends and php-fpm, and removes the temporary directory.
# usage: scripts/demo.sh        (from anywhere; ./bulwark must be built: `make`)
# environment (for tests): BULWARK_BIN (default ./bulwark), BULWARK_DEMO_PORT (8080),
#   BULWARK_DEMO_ADMIN_PORT (9901), BULWARK_DEMO_BACKEND_PORTS ("9001 9002"),
#   BULWARK_DEMO_FPM (a php-fpm binary, or "none" for a demo without PHP)
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
BIN=${BULWARK_BIN:-./bulwark}
PORT=${BULWARK_DEMO_PORT:-8080}
ADMIN=${BULWARK_DEMO_ADMIN_PORT:-9901}
read -r B1 B2 <<<"${BULWARK_DEMO_BACKEND_PORTS:-9001 9002}"
FPM=${BULWARK_DEMO_FPM:-$(ls /usr/sbin/php-fpm* 2>/dev/null | sort -V | tail -n1 || true)}
[ "$FPM" = none ] && FPM=

say() { printf '[demo] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[ -x "$BIN" ] || die "$BIN is not built: run 'make' (or 'make run') first"
[ -x "$PY" ] || die "$PY not found (apt-get install -y python3)"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
for p in $PORT $B1 $B2 $ADMIN; do
  if listening "$p"; then
    who=$(ss -ltnpH "sport = :$p" 2>/dev/null | grep -o 'users:(([^)]*' | head -n1 | sed 's/users:((//')
    die "port $p on 127.0.0.1 is already in use${who:+ (by $who)}: stop that process first, then retry"
  fi
done

BW_PID=
RUN=   # the generated config, php-fpm's pool config and socket; removed at exit

# alive PID: the process exists and is not a zombie waiting to be reaped
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }

cleanup() {
  trap '' INT TERM   # a second Ctrl-C must not leave bulwark behind: finish first
  local i
  if [ -n "$BW_PID" ] && alive "$BW_PID"; then
    say "stopping bulwark (pid $BW_PID); it stops the backends"
    kill -TERM "$BW_PID" 2>/dev/null || true
    # bulwark drains in-flight requests (shutdown_timeout: 5s), then stops the backends
    # (stop_timeout: 3s)
    for ((i = 0; i < 100; i++)); do alive "$BW_PID" || break; sleep 0.1; done
  fi
  if [ -n "$BW_PID" ] && alive "$BW_PID"; then
    say "bulwark (pid $BW_PID) did not stop in time: SIGKILL (its keepers kill the backends)"
    kill -KILL "$BW_PID" 2>/dev/null || true
  fi
  [ -z "$BW_PID" ] || wait "$BW_PID" 2>/dev/null || true
  [ -z "$RUN" ] || rm -rf "$RUN"
}
trap cleanup EXIT
trap 'echo >&2; exit 130' INT
trap 'exit 143' TERM

answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/")" != 000 ]; }

# The config bulwark runs: examples/demo.yaml with the ports chosen above and, with php-fpm,
# its "#php " lines uncommented (see the top of demo.yaml).
RUN=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-demo.XXXXXX")
CONF=$RUN/demo.yaml
php=(-e '/^#php /d')
if [ -n "$FPM" ]; then
  [ -x "$FPM" ] || die "php-fpm $FPM is not an executable"
  as_root=
  [ "$(id -u)" -eq 0 ] && as_root=", -R" # php-fpm runs as root only when told so (-R)
  php=(-e 's/^#php //' -e "s|@RUN@|$RUN|g" -e "s|@ROOT@|$ROOT|g" -e "s|@FPM@|$FPM|g"
    -e "s|@AS_ROOT@|$as_root|g")
  # One static pool of 5 children on a unix socket. error_log = /proc/self/fd/2 is php-fpm's
  # stderr, a pipe to bulwark, which prints it (and keeps its last lines for /status).
  cat >"$RUN/php-fpm.conf" <<EOF
[global]
error_log = /proc/self/fd/2
log_level = notice
daemonize = no
systemd_interval = 0
[demo]
listen = $RUN/php-fpm.sock
pm = static
pm.max_children = 5
catch_workers_output = yes
decorate_workers_output = no
EOF
fi
sed -e "s/\b8080\b/$PORT/g" -e "s/\b9901\b/$ADMIN/g" -e "s/\b9001\b/$B1/g" \
  -e "s/\b9002\b/$B2/g" "${php[@]}" examples/demo.yaml >"$CONF"

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
  echo "  bulwark is listening on $U/  (pid $BW_PID; it runs the backends on 127.0.0.1:$B1 and :$B2)"
  [ -z "$FPM" ] || echo "  and $FPM on $RUN/php-fpm.sock, for $U/php/"
  echo
  echo "  Try, in another terminal:"
} >&2
hint "curl $U/" "twice: backend-1 and backend-2 take turns"
hint "curl -i $U/" "response headers: Via, X-Backend"
hint "curl $U/slow" "the backend sleeps 2 s"
if [ -n "$FPM" ]; then
  hint "curl $U/php/?q=1" "PHP over FastCGI: the request as PHP saw it"
  hint "curl -d name=Ada $U/php/" "a form POST to PHP"
fi
hint "curl -i -d x=1 $U/crash" "a backend exits mid-request: 502, Proxy-Status:"
hint "" "connection_terminated (a POST with a body is"
hint "" "never replayed on the other backend); bulwark"
hint "" "marks its server down and restarts it (log)"
hint "curl $U/" "still 200: the other backend answers meanwhile"
hint "curl -H 'Authorization: Bearer demo' $A/status" "programs: pid, state, restarts, last exit"
hint "curl -X POST -H 'Authorization: Bearer demo' \\" ""
hint "  $A/programs/backend-1/restart" "restart one backend (202), no request fails"
printf '\n  Access and error log lines appear below. Ctrl-C stops bulwark and the backends%s.\n\n' \
  "${FPM:+ (php-fpm too)}" >&2

status=0
wait "$BW_PID" || status=$?
say "bulwark exited with status $status"
BW_PID=
exit "$status"
