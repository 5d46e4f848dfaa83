#!/usr/bin/env bash
# bulwark against nginx and HAProxy with the shared scripts in ../shared/bench (see its README):
# proxy-bench.sh for each scenario (small, 64k, close) with bulwark (bench/bench.yaml) as the
# candidate, then idle-conns.sh with bench/idle.yaml. Prints each table as the scripts print it,
# then a summary: bulwark/nginx and bulwark/HAProxy for req/s and p99, and KiB per idle connection.
#
# usage: bench/run.sh [-s small,64k,close] [-n IDLE_CONNS (default 8000; 0 skips)] [--peers LIST]
#                     [-f CONFIG (default bench/bench.yaml; bench/protect.yaml: health checks,
#                     max_conns, ejection, budget on)] [any other proxy-bench.sh argument, e.g. -r 5]
# Logs (tables, bulwark's stderr per run) go to $BENCH_LOG_DIR, default a new /tmp/bulwark-bench.*
# directory that is kept and named at the end. Takes about 5 minutes with the defaults.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$ROOT/../shared/bench
cd "$ROOT"   # the candidate commands name ./bulwark and bench/*.yaml relative to the repo root

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
SCENARIOS=small,64k,close N=8000 PEERS=() PASS=() CONFIG=bench/bench.yaml
while [ $# -gt 0 ]; do
  case $1 in
    -s) SCENARIOS=${2:?-s needs a list}; shift 2 ;;
    -n) N=${2:?-n needs a number}; shift 2 ;;
    -f) CONFIG=${2:?-f needs a config file}; shift 2 ;;
    --peers) PEERS=(--peers "${2:?--peers needs a list}"); shift 2 ;;
    -h | --help) usage 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done

for f in proxy-bench.sh idle-conns.sh hold_conns.py; do
  [ -f "$SHARED/$f" ] || { echo "run.sh: $SHARED/$f not found (the shared bench scripts)" >&2; exit 2; }
done
[ -x ./bulwark ] || { echo "run.sh: ./bulwark is not built: run 'make' (or 'make bench')" >&2; exit 2; }
scripts/deps.sh bench   # nginx, haproxy, wrk: installs only what is missing

LOG=${BENCH_LOG_DIR:-$(mktemp -d /tmp/bulwark-bench.XXXXXX)}
mkdir -p "$LOG"
OUT=$LOG/tables.txt
: >"$OUT"
say() { printf '%s\n' "$*" | tee -a "$OUT"; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src 2>/dev/null || commit="$commit + uncommitted changes in src/"
say "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
say "bulwark: $(./bulwark version) ($commit)"
say "nginx:   $(nginx -v 2>&1 | sed 's/^nginx version: //')"
say "HAProxy: $(haproxy -v 2>/dev/null | head -n1 | sed 's/^HAProxy version //; s/ - https.*//')"
say "wrk:     $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
say "host:    $(uname -sr), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "args:    $(echo -s "$SCENARIOS" -n "$N" -f "$CONFIG" "${PEERS[@]}" "${PASS[@]}")"
say ""

failed=0
IFS=, read -r -a SC <<<"$SCENARIOS"
for s in "${SC[@]}"; do
  blog=$LOG/bulwark-$s.log
  say "== proxy-bench.sh -s $s"
  if ! "$SHARED/proxy-bench.sh" -s "$s" "${PEERS[@]}" "${PASS[@]}" \
      --candidate "./bulwark -c $CONFIG 2>>$(printf %q "$blog")" --name bulwark 2>&1 |
      tee -a "$OUT"; then
    failed=1
    say "proxy-bench.sh -s $s failed; bulwark's stderr (last lines of $blog):"
    tail -n 10 "$blog" 2>/dev/null | tee -a "$OUT" || true
  fi
  say ""
done

if [ "$N" -gt 0 ]; then
  blog=$LOG/bulwark-idle.log
  say "== idle-conns.sh -n $N"
  if ! "$SHARED/idle-conns.sh" -n "$N" "${PEERS[@]}" \
      --candidate "./bulwark -c bench/idle.yaml 2>>$(printf %q "$blog")" --name bulwark 2>&1 |
      tee -a "$OUT"; then
    failed=1
    say "idle-conns.sh failed; bulwark's stderr (last lines of $blog):"
    tail -n 10 "$blog" 2>/dev/null | tee -a "$OUT" || true
  fi
  say ""
fi

# Summary from the tables above. proxy-bench rows: | name | req/s | p50 | p99 of each round | ...
# (req/s and p50 are medians; the p99 median is taken here). idle rows: | name | before | after | KiB |
awk '
  function us(v) { return v ~ /us$/ ? v + 0 : v ~ /ms$/ ? v * 1e3 : v ~ /[0-9]s$/ ? v * 1e6 : -1 }
  function med(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) { a[i] = us(a[i]); if (a[i] < 0) return -1 }
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n ? a[int((n + 1) / 2)] : -1
  }
  function r(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "-" }
  function lat(v) { return v < 0 ? "na" : v >= 1000 ? sprintf("%.2fms", v / 1000) : sprintf("%dus", v) }
  /^== proxy-bench.sh -s / { sc = $NF; order[++ns] = sc; next }
  /^== idle-conns.sh/ { sc = "idle"; next }
  sc != "" && sc != "idle" && /^\| / && $2 != "target" {
    split($0, f, "|"); name = f[2]; gsub(/ /, "", name)
    rps[sc, name] = f[3] + 0; p99[sc, name] = med(f[5]); errs[sc, name] = f[8] + 0
  }
  sc == "idle" && /^\| / && $2 != "proxy" {
    split($0, f, "|"); name = f[2]; gsub(/ /, "", name); kib[name] = f[5] + 0; hasidle = 1
  }
  END {
    print "== summary: bulwark / peer (req/s: higher is better; p99 and KiB: lower is better)"
    printf "| %-8s | %9s | %9s | %9s | %12s | %13s | %9s | %9s | %9s | %12s | %13s |\n", "scenario",
      "bulwark", "nginx", "HAProxy", "req/s x ngx", "req/s x HAP", "p99 bw", "p99 ngx", "p99 HAP",
      "p99 x ngx", "p99 x HAP"
    for (i = 1; i <= ns; i++) {
      s = order[i]
      printf "| %-8s | %9.0f | %9.0f | %9.0f | %12s | %13s | %9s | %9s | %9s | %12s | %13s |\n", s,
        rps[s, "bulwark"], rps[s, "nginx"], rps[s, "haproxy"],
        r(rps[s, "bulwark"], rps[s, "nginx"]), r(rps[s, "bulwark"], rps[s, "haproxy"]),
        lat(p99[s, "bulwark"]), lat(p99[s, "nginx"]), lat(p99[s, "haproxy"]),
        r(p99[s, "bulwark"], p99[s, "nginx"]), r(p99[s, "bulwark"], p99[s, "haproxy"])
      for (k in errs) { split(k, kk, SUBSEP); if (kk[1] == s && errs[k] > 0)
        printf "  %s: %s had errors (non-2xx or socket errors) in %d round(s)\n", s, kk[2], errs[k] }
    }
    if (hasidle)
      printf "| idle KiB/conn | bulwark %s | nginx %s | HAProxy %s | x nginx %s | x HAProxy %s |\n",
        kib["bulwark"], kib["nginx"], kib["haproxy"], r(kib["bulwark"], kib["nginx"]),
        r(kib["bulwark"], kib["haproxy"])
  }' "$OUT" | tee "$LOG/summary.txt"

nerr=$(cat "$LOG"/bulwark-*.log 2>/dev/null | grep -c -v '\[info\]' || true)
echo
echo "bulwark stderr: $nerr line(s) other than [info] in $LOG/bulwark-*.log"
if [ "$nerr" -gt 0 ]; then
  cat "$LOG"/bulwark-*.log | grep -v '\[info\]' | sed 's/rid=[0-9a-f]*//; s/^[0-9TZ:-]* //' |
    sort | uniq -c | sort -rn | head -n 5 || true
fi
echo "logs and tables: $LOG"
exit "$failed"
