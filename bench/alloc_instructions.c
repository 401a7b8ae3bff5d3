/* SPDX-License-Identifier: MIT */
/* --- alloc_instructions.c: a driver for counting instructions per alloc+free pair -----------
 *
 * Runs the benchmark's workloads on one thread with nothing around them, for
 * `valgrind --tool=callgrind` (bench/alloc_instructions.sh runs it at two lengths and reports
 * the difference per pair, so that setup and teardown drop out). Args: size in bytes (0: mixed
 * sizes 16 B..16 KiB, 1000 live blocks, one replaced at random per pair; else LIFO batches of
 * 100 blocks of that size), rounds of 1000 pairs. Calls go through one non-inlined wrapper each,
 * as in bench/alloc_bench.c.
 * ------------------------------------------------------------------------------------------- */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "poolalloc.h"

static pa_pool_t *pool;

__attribute__((noinline)) static void *alloc_fn(size_t n) {
  void *p;
  return pa_alloc(pool, n, 64, &p) == 0 ? p : NULL;
}

__attribute__((noinline)) static void free_fn(void *p) { pa_free(p); }

int main(int argc, char **argv) {
  size_t size = argc > 1 ? (size_t)atol(argv[1]) : 64;
  long rounds = argc > 2 ? atol(argv[2]) : 1000;
  if (pa_pool_create(NULL, &pool) != 0) return 1;
  static void *live[1000];
  uint64_t x = 0x9E3779B97F4A7C15ull;
  if (size == 0)
    for (int i = 0; i < 1000; i++) live[i] = alloc_fn(16 + (size_t)(i * 16) % 16368);
  for (long r = 0; r < rounds; r++) {
    if (size == 0) {
      for (int i = 0; i < 1000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned k = (unsigned)(x % 1000);
        free_fn(live[k]);
        live[k] = alloc_fn(16 + (size_t)(x >> 32) % 16369);
      }
    } else {
      for (int b = 0; b < 10; b++) {
        for (int i = 0; i < 100; i++) live[i] = alloc_fn(size);
        for (int i = 99; i >= 0; i--) free_fn(live[i]);
      }
    }
  }
  if (size == 0)
    for (int i = 0; i < 1000; i++) free_fn(live[i]);
  pa_pool_destroy(pool);
  return 0;
}
