#!/usr/bin/env bash
# Install the Debian packages bulwark's build, tests and demo need, only those missing.
# Usage: scripts/deps.sh [build|test|bench|fuzz]...   (default: build test)
set -euo pipefail

want=()
add() { want+=("$@"); }
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(build test)
for g in "${groups[@]}"; do
  case "$g" in
    build) add gcc make libc6-dev libyaml-dev libhiredis-dev pkg-config ;;
    test)  add libcmocka-dev python3 python3-pytest curl php-fpm redis-server libhiredis-dev slowhttptest ;;
    asan)  add clang libclang-rt-14-dev ;;
    fuzz)  add clang libclang-rt-14-dev ;;
    valgrind) add valgrind ;;
    bench) add nginx haproxy wrk ;;
    *) echo "deps.sh: unknown group '$g' (build, test, asan, fuzz, valgrind, bench)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
