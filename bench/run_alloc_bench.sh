#!/usr/bin/env bash
# The native allocator benchmark: builds bench/out/alloc_bench from the core sources
# (static, -O2) and runs it. Args: [rounds] [pairs per run per thread] [allocators, comma-
# separated: poolalloc,glibc,jemalloc,mimalloc,freelist; default all]. Needs the Debian
# packages libjemalloc2 and libmimalloc2.0 for those two columns (skipped when missing).
# PA_BENCH_CFLAGS adds compiler flags: "-DPA_LOCK_STATS" also prints how often the depot locks
# were taken and found taken, and counts slab carves, slab releases, adoptions, chunk maps,
# evictions and writes to the pool-wide counters; "-DPAI_SHARDS=1" builds the core with a
# single depot set. PA_BENCH_RETAIN=bytes sets the benchmark pool's retain_bytes (default
# 8 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
# shellcheck disable=SC2086
gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra ${PA_BENCH_CFLAGS:-} -Inative/include -Inative/core \
  bench/alloc_bench.c native/core/*.c -o bench/out/alloc_bench -ldl -pthread
# jemalloc needs static TLS that a dlopen only gets with a larger surplus
GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536 exec bench/out/alloc_bench "${1:-5}" "${2:-1000000}" ${3:+"$3"}
