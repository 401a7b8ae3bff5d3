#!/usr/bin/env bash
# User-space instructions per request of the hello-world server (bench_uring.py --serve) under
# callgrind: exact and repeatable where CPU time on a shared 2-core machine moves by 10-20%
# between rounds, but user space only (the kernel's share is not counted) and with the server
# slowed ~50x, so loop passes batch more requests than at full speed. For comparing two builds
# or two engines under the same client, not for absolute figures.
#
#   bash bench/server_instructions.sh ENGINE [REQUESTS] [SITE]
#
# ENGINE: epoll or uring; REQUESTS (default 20000): measured after a 2000-request warm-up,
# `ab -k -c 100` on CPU 1, the server on CPU 0; SITE: a directory put first on PYTHONPATH (an
# earlier build installed with pip --target) to measure that build. Needs valgrind and ab.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=$1 requests=${2:-20000} site=${3:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PYTHONPATH=$site taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
  .venv/bin/python bench/bench_uring.py --serve "$engine" "$port" >"$out/server" 2>&1 &
server=$!
for _ in $(seq 200); do grep -q ready "$out/server" && break; sleep 0.5; done
grep -q ready "$out/server" || { cat "$out/server"; exit 1; }
taskset -c 1 ab -q -k -c 100 -n 2000 "http://127.0.0.1:$port/test" >/dev/null
callgrind_control -z "$server" >/dev/null 2>&1
taskset -c 1 ab -q -k -c 100 -n "$requests" "http://127.0.0.1:$port/test" >"$out/ab"
callgrind_control -d "$server" >/dev/null 2>&1
kill -TERM "$server"
wait "$server" || true
grep -q "Failed requests:        0" "$out/ab" || { cat "$out/ab"; exit 1; }
total=$(awk '/^summary:/ {print $2}' "$out/cg.1")
echo "$engine${site:+ ($site)}: $((total / requests)) instructions per request (user space, $requests requests)"
