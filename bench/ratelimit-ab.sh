#!/usr/bin/env bash
# What a rate limit costs: bulwark with bench/bench.yaml (A) and bench/ratelimit.yaml (B,
# a local limit that never refuses), and with --redis also C (the same limit with
# store: "redis://127.0.0.1:18485", a redis-server started here), side by side behind one
# nginx origin; wrk (1 thread, keep-alive, small body) against each in turn for R rounds;
# prints each round and the medians.
# Ports (not the shared bench's): origin 18480, A 18483, B 18484, redis 18485, C 18486.
# Stops what it started by PID.
# usage: bench/ratelimit-ab.sh [-d SECONDS (5)] [-r ROUNDS (7)] [-c CONNS (64)] [--redis]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
D=5 R=7 C=64 REDIS=0
while [ $# -gt 0 ]; do
  case $1 in
    -d) D=$2; shift 2 ;; -r) R=$2; shift 2 ;; -c) C=$2; shift 2 ;; --redis) REDIS=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
T=$(mktemp -d); PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap stop EXIT
mkdir -p "$T/logs"
cat >"$T/origin.conf" <<NGX
worker_processes 1; daemon off; pid $T/nginx.pid; error_log $T/logs/error.log warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18480; location / { return 200 "hello world\n"; } } }
NGX
nginx -c "$T/origin.conf" -p "$T" & PIDS+=($!)
sed 's/18183/18483/; s/18180/18480/' bench/bench.yaml >"$T/a.yaml"
sed 's/18183/18484/; s/18180/18480/' bench/ratelimit.yaml >"$T/b.yaml"
./bulwark -c "$T/a.yaml" 2>"$T/a.log" & PIDS+=($!)
./bulwark -c "$T/b.yaml" 2>"$T/b.log" & PIDS+=($!)
PORTS="18480 18483 18484"
if [ "$REDIS" = 1 ]; then
  redis-server --port 18485 --bind 127.0.0.1 --save "" --appendonly no >"$T/redis.log" 2>&1 & PIDS+=($!)
  sed 's/18183/18486/; s/18180/18480/; s|nodelay: true }|nodelay: true, store: "redis://127.0.0.1:18485" }|' \
    bench/ratelimit.yaml >"$T/c.yaml"
  grep -q redis:// "$T/c.yaml" || { echo "could not make the redis config" >&2; exit 1; }
  ./bulwark -c "$T/c.yaml" 2>"$T/c.log" & PIDS+=($!)
  PORTS="$PORTS 18485 18486"
fi
for p in $PORTS; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
curl -sf -o /dev/null http://127.0.0.1:18484/ || { echo "B does not answer" >&2; exit 1; }
rps() { wrk -t1 -c"$C" -d"${D}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
A=() B=() CC=()
for r in $(seq "$R"); do
  a=$(rps 18483); b=$(rps 18484); A+=("$a"); B+=("$b")
  printf 'round %d: no limit %s req/s, rate limit %s req/s (%.3f)' "$r" "$a" "$b" "$(echo "$b / $a" | bc -l)"
  if [ "$REDIS" = 1 ]; then
    c=$(rps 18486); CC+=("$c")
    printf ', redis %s req/s (%.3f)' "$c" "$(echo "$c / $a" | bc -l)"
  fi
  echo
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ma=$(med "${A[@]}"); mb=$(med "${B[@]}")
printf 'median: no limit %s req/s, rate limit %s req/s, ratio %.3f\n' "$ma" "$mb" "$(echo "$mb / $ma" | bc -l)"
if [ "$REDIS" = 1 ]; then
  mc=$(med "${CC[@]}")
  printf 'median: redis %s req/s, ratio to no limit %.3f\n' "$mc" "$(echo "$mc / $ma" | bc -l)"
  curl -s http://127.0.0.1:18486/ -o /dev/null
  grep -c "unreachable" "$T/c.log" | awk '{print "C logged " $1 " store outages"}'
fi
refused=$(curl -s http://127.0.0.1:18484/ -o /dev/null -w '%{http_code}')
echo "B still answers $refused (never refused)"
