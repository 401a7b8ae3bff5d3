/* SPDX-License-Identifier: MIT */
/* --- poolalloc.h: the only public header of the poolalloc C core ------------------------------
 *
 * A slab allocator of pools. Memory comes from mmap in 2 MiB-aligned chunks, carved into slabs of
 * one size class each. A block's chunk is found by masking its address, so pa_free() needs no
 * pool argument and a pointer that is not ours is detected (EFAULT), never followed.
 *
 * Conventions:
 *  - Every fallible function returns 0 or a positive errno code; results go through out-pointers.
 *  - Error codes and their meaning (src/poolalloc/errors.py maps them to exceptions):
 *      ENOMEM     the OS refused memory (mmap failed)
 *      ENOSPC     the pool's max_bytes would be exceeded
 *      EINVAL     bad argument: size 0, alignment not a power of two or > PA_MAX_ALIGN, bad flag
 *      EOVERFLOW  size arithmetic overflows
 *      EFAULT     pointer not handed out by any live pool, or not the start of a block
 *      EALREADY   block already free (double free)
 *      ESHUTDOWN  pool closed
 *      EILSEQ     debug mode: canary or poison pattern overwritten
 *      ENODEV     NUMA node does not exist or has no memory
 *  - C never aborts on user error. All functions are thread-safe unless stated.
 * ------------------------------------------------------------------------------------------- */
#ifndef POOLALLOC_H
#define POOLALLOC_H

#include <stddef.h>
#include <stdint.h>

#define PA_API_VERSION 1u

#define PA_MIN_ALIGN 64u      /* every block is at least this aligned */
#define PA_PAGE_ALIGN 4096u   /* blocks of this size and more are page aligned */
#define PA_MAX_ALIGN 4096u    /* largest alignment a caller may request */
/* largest request (47 bits: a 64-bit Linux process's user address space); more is EOVERFLOW */
#define PA_MAX_REQUEST ((size_t)1 << 47)

#define PA_NUMA_ANY (-1)      /* no placement policy (the default) */
#define PA_NUMA_LOCAL (-2)    /* serve each thread from the node of the CPU it runs on */

#define PA_DEBUG_POISON 1u    /* fill freed blocks with a pattern, check it at next alloc */
#define PA_DEBUG_CANARY 2u    /* guard bytes after the requested size, checked at free */
#define PA_DEBUG_UNPOOLED 4u  /* one real allocation per alloc so memory profilers see each */

typedef struct pa_pool_s pa_pool_t;

typedef struct pa_config_s {
  size_t max_bytes;    /* 0: unbounded. Else bytes mapped from the OS never exceed it (ENOSPC) */
  size_t retain_bytes; /* empty-slab bytes kept for reuse before going back to the OS, per
                          thread holding a cache of the pool (at least one, at most one per
                          CPU it may run on): the pool keeps at most retain_bytes x that idle */
  int numa_node;       /* PA_NUMA_ANY, PA_NUMA_LOCAL or a node number */
  unsigned debug;      /* PA_DEBUG_* flags; also set from env POOLALLOC_DEBUG=1 at create */
  uint64_t decay_ms;   /* 0: no clock (retain_bytes alone). Else empty slabs, retained chunks
                          and idle threads' cached blocks unused for this long go back to the
                          OS, checked on slow paths, by pa_pool_trim and pa_pool_decay */
} pa_config_t;

/* What pa_pool_close_report could and could not give back. */
typedef struct pa_close_report_s {
  uint64_t caches_reclaimed;  /* other live threads' caches of this pool it emptied */
  uint64_t caches_busy;       /* caches whose thread stayed inside the allocator (or the kernel
                                 lacks membarrier): their blocks stay until that thread's next
                                 call into the pool or its exit */
  uint64_t reclaimed_bytes;   /* block bytes taken from those caches back to their slabs */
  uint64_t mapped_bytes;      /* still mapped after the close */
  uint64_t in_use_bytes;      /* of which handed to users (they come back at pa_free) */
} pa_close_report_t;

typedef struct pa_stats_s {
  uint64_t mapped_bytes;     /* bytes currently mapped from the OS for this pool */
  uint64_t mapped_peak;      /* high-water mark of mapped_bytes */
  uint64_t in_use_bytes;     /* block bytes currently handed out (class size, not request) */
  uint64_t in_use_blocks;    /* blocks currently handed out */
  uint64_t in_use_peak;      /* high-water mark of in_use_bytes: blocks handed to users, not
                                blocks parked in thread caches. Exact with one thread; with
                                several, each thread's swing since its last slow path may be
                                added at a moment when another's had already fallen */
  uint64_t allocs;           /* successful allocations, ever */
  uint64_t frees;            /* successful frees, ever; allocs - frees == in_use_blocks */
  uint64_t cache_hits;       /* allocations served from the calling thread's cache */
  uint64_t cache_misses;     /* allocations that went to the depot or carved a slab */
  uint64_t depot_exchanges;  /* batches moved between a thread cache and the depot */
  uint64_t trims;            /* trim passes (explicit, on close, or by retention) */
  uint64_t trimmed_bytes;    /* bytes given back to the OS, ever */
  uint64_t failed_allocs;    /* allocations refused (ENOMEM/ENOSPC) */
  uint64_t huge_allocs;      /* allocations above the largest class (dedicated mapping) */
  int32_t numa_node;         /* the configured node (or PA_NUMA_ANY / PA_NUMA_LOCAL) */
  int32_t numa_bound;        /* 1 if every chunk was bound with mbind, 0 if placement unbound */
  uint32_t closed;           /* 1 after pa_pool_close */
  uint32_t debug;            /* effective PA_DEBUG_* flags */
} pa_stats_t;

typedef struct pa_class_stats_s {
  uint64_t block_size;
  uint64_t slab_bytes;       /* size of one slab of this class */
  uint64_t slabs;            /* slabs currently carved for this class */
  uint64_t in_use_blocks;
  uint64_t free_blocks;      /* in slabs, the depot and thread caches */
  uint64_t allocs;
  uint64_t frees;
  uint64_t cache_hits;
  uint64_t cache_misses;
  uint64_t depot_exchanges;
} pa_class_stats_t;

/* ---- pools ---- */
void pa_config_init(pa_config_t *cfg);   /* defaults: unbounded, retention default, ANY, 0 */
int pa_pool_create(const pa_config_t *cfg, pa_pool_t **out);
/* Refuse further allocations (ESHUTDOWN), trim everything that is free. Blocks still out stay
 * valid; the pool's memory goes back to the OS when the last one is freed. Idempotent. */
int pa_pool_close(pa_pool_t *pool);
/* pa_pool_close that also empties the caches other live threads hold for this pool (those not
 * inside the allocator right now: no stop-the-world) and says what is left; `out` may be NULL. */
int pa_pool_close_report(pa_pool_t *pool, pa_close_report_t *out);
/* Give back what has been idle for the pool's decay_ms (empty slabs, retained chunks, caches of
 * threads that made no allocator call in that time). Without decay_ms, `max_age_ms` is used
 * (0: everything idle now). For a timer in an event loop; no background thread exists. */
int pa_pool_decay(pa_pool_t *pool, uint64_t max_age_ms, size_t *released_bytes);
/* Drop the caller's handle. The struct is freed once closed and no block refers to it. After
 * this the caller must not use `pool` again. */
void pa_pool_destroy(pa_pool_t *pool);
int pa_pool_trim(pa_pool_t *pool, size_t *released_bytes);
int pa_pool_stats(pa_pool_t *pool, pa_stats_t *out);
int pa_pool_class_stats(pa_pool_t *pool, unsigned cls, pa_class_stats_t *out);
/* Walk the pool's structures and check the counting invariants; debug flags also verify poison
 * and canaries. 0, EFAULT (structure broken) or EILSEQ (user wrote after free / past the end). */
int pa_pool_check(pa_pool_t *pool);

/* ---- blocks ---- */
/* size >= 1, align a power of two <= PA_MAX_ALIGN (smaller than 64 is raised to 64). */
int pa_alloc(pa_pool_t *pool, size_t size, size_t align, void **out);
int pa_free(void *p);                                 /* EFAULT foreign, EALREADY double free */
/* All or nothing: on error no block is handed out. */
int pa_alloc_batch(pa_pool_t *pool, size_t size, size_t align, size_t n, void **out);
/* Frees each; stops at the first bad pointer, *freed says how many went back. */
int pa_free_batch(void *const *ptrs, size_t n, size_t *freed);
int pa_block_size(const void *p, size_t *out);       /* usable bytes of the block at p */
int pa_block_pool(const void *p, pa_pool_t **out);   /* the pool that owns the block at p */

/* ---- size classes ---- */
unsigned pa_class_count(void);
int pa_class_info(unsigned cls, size_t *block_size, size_t *slab_bytes);
/* ERANGE when the request is above the largest class (served by a dedicated mapping). */
int pa_size_class(size_t size, size_t align, unsigned *cls);

/* ---- fault injection and the OS layer, for tests ---- */
#define PA_FAULT_MAP 1u      /* chunk mmap */
#define PA_FAULT_BIND 2u     /* mbind */
/* After `skip` successful calls of `what`, fail the next `count` with `err`. count 0 clears. */
int pa_fault_set(unsigned what, unsigned skip, unsigned count, int err);

/* ---- NUMA ----
 * The pool's numa_node: a node number binds every chunk to it (mbind, before first touch);
 * PA_NUMA_LOCAL serves each thread from the node of the CPU it runs on, with one set of chunks
 * per node, and a block freed on another node goes back to its home node's depot. If mbind
 * fails the pool still works and stats.numa_bound is 0. A node that does not exist: ENODEV. */
/* Tests: replace the topology with a fake one (cpu i is on node cpu_to_node[i]); mbind is then
 * recorded, not called. nodes 0 restores the real OS. Call while no pool is in use. */
int pa_numa_fake(unsigned nodes, const int *cpu_to_node, unsigned ncpus);
/* Tests, fake topology only: the calling thread now appears to run on `cpu`. */
int pa_numa_fake_set_cpu(int cpu);
/* The node of the page at p (get_mempolicy MPOL_F_NODE|MPOL_F_ADDR; fake: the recorded node). */
int pa_numa_page_node(const void *p, int *node);
/* Per-node figures of a pool: mapped_bytes/mapped_peak of the node's chunks, in_use_* = blocks
 * out of the node's slabs (handed out or parked in a thread cache). ENODEV: the pool has no
 * chunks set for that node (a fixed-node pool has only its node; a PA_NUMA_ANY pool only 0). */
int pa_pool_node_stats(pa_pool_t *pool, int node, pa_stats_t *out);
int pa_numa_node_count(unsigned *out);

/* ---- the function table handed to the poolalloc._lease extension ----
 * The core exists once, in poolalloc._native; other extensions call it through this table
 * (its address travels as an integer), never by linking the core a second time. */
typedef struct pa_api_s {
  unsigned version;                                   /* PA_API_VERSION */
  int (*alloc)(pa_pool_t *, size_t, size_t, void **);
  int (*free)(void *);
  int (*alloc_batch)(pa_pool_t *, size_t, size_t, size_t, void **);
  int (*free_batch)(void *const *, size_t, size_t *);
  int (*block_size)(const void *, size_t *);
  int (*block_pool)(const void *, pa_pool_t **);
  int (*pool_stats)(pa_pool_t *, pa_stats_t *);
} pa_api_t;
const pa_api_t *pa_api(void);

#endif /* POOLALLOC_H */
