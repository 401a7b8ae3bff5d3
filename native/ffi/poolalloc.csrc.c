/* SPDX-License-Identifier: MIT */
/* --- poolalloc.csrc.c: the set_source prelude of poolalloc._native --------------------------
 * Besides the public header, two small helpers for the Python binding: addresses cross as
 * uintptr_t (a cffi int converts without a cast object) and an allocation reports its usable
 * size in the same call. Not part of the C API. */
#include <stdint.h>

#include "poolalloc.h"

static int pa_py_alloc(pa_pool_t *pool, size_t size, size_t align, uintptr_t *addr,
                       size_t *usable) {
  void *p;
  int rc = pa_alloc(pool, size, align, &p);
  if (rc) return rc;
  *addr = (uintptr_t)p;
  return pa_block_size(p, usable);
}

static int pa_py_free(uintptr_t addr) { return pa_free((void *)addr); }
