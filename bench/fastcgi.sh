#!/usr/bin/env bash
# bulwark against nginx in front of the same PHP-FPM pool on a hello-world page.
# php-fpm8.2 (pm static, 64 children: an idle kept-alive connection of either proxy holds
# one; unix socket), nginx (worker_processes 1, fastcgi_pass with keepalive 16 and
# fastcgi_keep_conn on, access_log off) on 18191, bulwark
# (bench/fastcgi.yaml, workers 1) on 18193; wrk 1 thread, 32 connections, targets
# interleaved round by round; prints req/s and p99 per round and the medians.
#
# usage: bench/fastcgi.sh [-r ROUNDS (default 3)] [-d SECONDS per run (default 10)]
# Every process it starts is stopped by PID on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=3 DUR=10
while [ $# -gt 0 ]; do
  case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -d) DUR=$2; shift 2 ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
done
[ -x ./bulwark ] || { echo "fastcgi.sh: build ./bulwark first (make)" >&2; exit 2; }
for b in /usr/sbin/php-fpm8.2 nginx wrk; do
  command -v "$b" >/dev/null || { echo "fastcgi.sh: $b is not installed" >&2; exit 2; }
done
D=/tmp/bulwark-fcgi-bench
rm -rf "$D" && mkdir -p "$D/www" "$D/nginx"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
echo '<?php echo "Hello, world!\n";' >"$D/www/hello.php"
cat >"$D/fpm.conf" <<CONF
[global]
error_log = $D/fpm.log
daemonize = no
[bench]
listen = $D/php.sock
listen.mode = 0666
pm = static
pm.max_children = 64
pm.max_requests = 0
CONF
ROOTFLAG=(); [ "$(id -u)" = 0 ] && ROOTFLAG=(-R)
/usr/sbin/php-fpm8.2 -F -y "$D/fpm.conf" "${ROOTFLAG[@]}" & PIDS+=($!)
cat >"$D/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $D/nginx; fastcgi_temp_path $D/nginx; proxy_temp_path $D/nginx;
  uwsgi_temp_path $D/nginx; scgi_temp_path $D/nginx;
  upstream php { server unix:$D/php.sock; keepalive 16; }
  server {
    listen 127.0.0.1:18191;
    root $D/www;
    location ~ \.php\$ {
      fastcgi_pass php;
      fastcgi_keep_conn on;
      include /etc/nginx/fastcgi.conf;
    }
  }
}
CONF
nginx -c "$D/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
./bulwark -c bench/fastcgi.yaml 2>"$D/bulwark.log" & PIDS+=($!)
for port in 18191 18193; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/hello.php" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/hello.php" | grep -q Hello || { echo "port $port does not answer" >&2; exit 1; }
done
declare -A RPS P99
for r in $(seq "$ROUNDS"); do
  for t in nginx:18191 bulwark:18193; do
    name=${t%%:*} port=${t##*:}
    out=$(wrk -t1 -c32 -d"${DUR}s" --latency "http://127.0.0.1:$port/hello.php")
    rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    echo "round $r  $name  ${rps} req/s  p99 $p99${non2xx:+  non-2xx $non2xx}"
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
  done
done
med() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bw=$(echo "${RPS[bulwark]}" | med) ng=$(echo "${RPS[nginx]}" | med)
echo "median req/s: bulwark $bw, nginx $ng, bulwark/nginx $(awk -v a="$bw" -v b="$ng" 'BEGIN {printf "%.2f", a / b}')"
echo "p99 per round: bulwark ${P99[bulwark]}| nginx ${P99[nginx]}"
