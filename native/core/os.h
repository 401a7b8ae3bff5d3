/* SPDX-License-Identifier: MIT */
/* --- os.h: the operating-system primitives the core uses, behind a swappable table ----------
 *
 * Every call returns 0 or a positive errno; out-parameters are never NULL (mimalloc prim.h).
 * Tests swap the table's behaviour through pa_fault_set() (fail mmap/mbind) and pa_numa_fake()
 * (a fake topology whose mbind is recorded, not called). rpmalloc's rpmalloc_interface_t idea.
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_OS_H
#define PA_OS_H

#include <stddef.h>

/* internal to the extension, as everything in internal.h: calls bind inside it, not through
 * the PLT, and nothing outside can call them */
#pragma GCC visibility push(hidden)

typedef struct pai_os_s {
  int (*map)(size_t len, void **out);                /* anonymous RW mapping, page aligned */
  int (*unmap)(void *p, size_t len);
  int (*bind)(void *p, size_t len, int node);        /* mbind(MPOL_BIND) before first touch */
  int (*page_node)(const void *p, int *node);        /* node of the page at p */
  int (*getcpu)(unsigned *cpu, unsigned *node);
  int (*node_count)(unsigned *out);
} pai_os_t;

/* The table in force (the real OS unless a test installed another). */
const pai_os_t *pai_os(void);

/* Map `len` bytes aligned to `align` (a power of two, >= page size). Counts as PA_FAULT_MAP. */
int pai_os_map_aligned(size_t len, size_t align, void **out);
int pai_os_unmap(void *p, size_t len);
int pai_os_bind(void *p, size_t len, int node); /* counts as PA_FAULT_BIND; fake: records */
int pai_os_random(void *buf, size_t n);

/* fake NUMA topology */
int pai_os_fake_active(void);
int pai_os_fake_cpu_node(int cpu, unsigned *node);

#pragma GCC visibility pop

#endif /* PA_OS_H */
