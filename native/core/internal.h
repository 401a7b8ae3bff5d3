/* SPDX-License-Identifier: MIT */
/* --- internal.h: types and pai_* functions shared by the files of the C core ------------------
 *
 * Memory layout (mimalloc segments/pages, Bonwick slabs):
 *   chunk  2 MiB-aligned mapping (shorter when the pool's capacity is nearly spent), owned by one
 *          pool and one NUMA node, registered in a radix map so that any address -> chunk is a
 *          lookup that never dereferences memory we do not own.
 *   page   64 KiB unit of a chunk; a slab is a run of pages.
 *   slab   blocks of one size class; a bitmap says which blocks are "out" (handed to a user or
 *          parked in a thread cache).
 *   depot  per pool, per node, per class: the slabs and the lock that guards them. Thread caches
 *          trade whole batches with it (Bonwick's magazine depot).
 *
 * Lock order (a thread may hold several only in this order; nothing here is taken under the
 * GIL's protection because cffi releases it):
 *   g_lock (pool list, thread list) -> tls->lock -> depot->lock -> pool->lock -> registry lock
 *   The unpooled-block table lock and the OS-fake lock are leaves.
 * Who may touch what:
 *   thread cache (pai_tcache_t) : its owner thread only (slow paths under tls->lock, so that
 *                                 fork sees every cache between two slow operations); other
 *                                 threads read its counters
 *                                 (relaxed atomics) under pool->lock; a forked child flushes the
 *                                 caches of threads that do not exist in it.
 *   slab fields, depot lists    : depot->lock; the `out` bitmap may be read without it (relaxed)
 *   chunk page map, pool chunk lists, mapped counters, tcache list : pool->lock
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_INTERNAL_H
#define PA_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "poolalloc.h"

/* Everything declared below lives in the one shared object the core is linked into (the cffi
 * extension; other extensions call it through pa_api_t): hidden, so that in a -fPIC build the
 * hit paths read pai_slab_epoch, pai_free_key and the tables straight off %rip, not through a
 * GOT entry (a load more each), and calls between the core's files need no PLT. */
#pragma GCC visibility push(hidden)

#define PA_LIKELY(x) __builtin_expect(!!(x), 1)
#define PA_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define PAI_CHUNK_SHIFT 21
#define PAI_CHUNK_SIZE ((size_t)1 << PAI_CHUNK_SHIFT)
#define PAI_PAGE_SHIFT 16
#define PAI_PAGE_SIZE ((size_t)1 << PAI_PAGE_SHIFT)
#define PAI_CHUNK_PAGES 32
#define PAI_MAX_BLOCKS 1024
#define PAI_BITMAP_WORDS (PAI_MAX_BLOCKS / 64)
#define PAI_NCLASSES 47
#define PAI_MAX_CLASS_SIZE ((size_t)1 << 20)
#define PAI_MAX_NODES 64
#define PAI_NO_SLAB 0xFFu
#define PAI_CACHE_MAX 256
#ifndef PAI_SHARDS
#define PAI_SHARDS 4               /* depot sets per node; thread caches are spread over them */
#endif
#define PAI_BIG_CLASS_SLOTS 32u
#define PAI_CANARY_BYTES 16u
#define PAI_POISON_BYTE 0xDBu
#define PAI_CANARY_BYTE 0xCAu
#define PAI_DEFAULT_RETAIN ((size_t)8 << 20)
#define PAI_DEFAULT_CACHE_BUDGET ((size_t)4 << 20)
#define PAI_MAX_REQUEST PA_MAX_REQUEST

typedef struct pai_depot_s pai_depot_t;
typedef struct pai_chunk_s pai_chunk_t;

/* A slab. Invariant under depot->lock: nfree + popcount(out) == nblocks. A clear bit is a block
 * that sits in the slab; a set bit is a block handed out or parked in some thread cache. */
typedef struct __attribute__((aligned(64))) pai_slab_s {
  uintptr_t base;
  uint64_t div_magic;          /* ceil(2^64 / block_size): see pai_slab_div */
  uint32_t block_size, nblocks, nfree;
  uint16_t cls;
  uint16_t tcls;               /* byte offset of cls[cls] in a pai_tcache_t (pa_free) */
  pa_pool_t *pool;             /* == chunk->pool, one dependent load less in pa_free */
  struct pai_slab_s *prev, *next; /* depot list: partial (nfree > 0) or full */
  pai_depot_t *depot;
  pai_chunk_t *chunk;
  uint32_t *req_sizes;         /* debug CANARY: requested size per block, else NULL */
  uint16_t first_page, npages;
  uint8_t on_partial;
  uint8_t idle;                /* empty and counted in pool->idle_slab_bytes (depot->lock) */
  uint64_t empty_since;        /* monotonic ns when it last became empty (depot->lock) */
  _Atomic uint64_t out[PAI_BITMAP_WORDS];
} pai_slab_t;

enum { PAI_CHUNK_SLABS = 1, PAI_CHUNK_HUGE = 2 };

/* A chunk descriptor. Descriptors are never freed, only recycled, so a stale lookup reads a
 * valid (if reused) descriptor and is then refused by its checks. */
struct pai_chunk_s {
  uintptr_t base;
  size_t len;                  /* mapped bytes from base */
  pa_pool_t *pool;
  int node;                    /* node index inside the pool (0 unless PA_NUMA_LOCAL) */
  int bound_node;              /* node it was bound to, -1 if none */
  unsigned kind;
  /* 1 when pa_free's hit path may take its slabs' frees (memo and registry lookup): the pool
   * has one node depot set. Read there instead of pool->nnodes, which a misuse racing with the
   * pool's destruction would read from freed memory: descriptors are never freed. */
  unsigned memo_ok;
  uint32_t npages, free_pages; /* free_pages: bit i set = page i in no slab (pool->lock) */
  _Atomic uint8_t page_slab[PAI_CHUNK_PAGES];
  pai_chunk_t *prev, *next;    /* pool's chunk list of its node, or the descriptor free list */
  size_t huge_req;
  uint64_t empty_since;        /* monotonic ns when it was last retained empty (pool->lock) */
  _Atomic int huge_live;
  pai_slab_t slabs[PAI_CHUNK_PAGES]; /* line-aligned: see pai_slab_t */
};

/* Cache-line aligned: the depots of one class but different shards are taken by different
 * threads at once. */
struct __attribute__((aligned(64))) pai_depot_s {
  pthread_mutex_t lock;
  pai_slab_t *partial, *full;
  unsigned cls, node, shard;
  /* where the depot's last released slab was: carved there again first (slab.c find_pages) */
  const pai_chunk_t *last_chunk;
  unsigned last_page;
  /* bytes of pool->idle_slab_bytes reserved for this depot's idle slabs and not used by one
   * (slab.c keep_empty_slab): most slabs that go idle and come back move only this */
  uint64_t idle_credit;
  uint64_t nslabs, empty_slabs, out_blocks, out_peak;
  /* counters of uncached traffic and of retired thread caches */
  _Atomic uint64_t allocs, frees, hits, misses, exchanges;
};

typedef struct pai_tclass_s {
  uint64_t n;               /* slots in use (64 bits: the hit paths index with it as it is) */
  uint32_t cap, limit;      /* cap: slots allocated (0 until first use); limit: cap to use */
  uint64_t size;            /* the class's block size (read by the hit paths, beside n; 64
                             * bits, so that it adds to `parked` straight from memory) */
  void **slots;
  _Atomic uint64_t frees, hits, misses, exchanges; /* allocations = hits + misses */
  /* a reclaimer's idleness probe (under the owner's tls->lock): operation count at its last
   * look, since when it has been unchanged, and whether the class was emptied since */
  uint64_t probe_ops, probe_ns;
  uint8_t probe_flushed;
} pai_tclass_t;

struct pai_tls_s;

typedef struct pai_tcache_s {
  pa_pool_t *pool;
  struct pai_tls_s *owner;
  struct pai_tcache_s *tnext;          /* owner's list */
  struct pai_tcache_s *pprev, *pnext;  /* pool's list (pool->lock) */
  unsigned node, shard;
  size_t budget;
  /* Bytes parked here (all classes), bytes this cache has taken out of the slabs net of what
   * it gave back plus what its thread handed out net of what it took back (so that bytes
   * handed out = base - parked, negative with cross-thread frees), the lowest `parked` since
   * the last sync (so the high-water of handed-out bytes is base - parked_lw), and the handed-
   * out bytes folded into pool->live_synced at that sync. Written by the owner (relaxed; the
   * fast path only moves `parked` and `parked_lw`) or by a reclaimer while the owner is out;
   * read by statistics. */
  _Atomic int64_t parked, base, parked_lw, live_at_sync;
  pai_tclass_t cls[PAI_NCLASSES];
  uint32_t unsynced;                   /* depot exchanges since the last sync (owner only) */
} pai_tcache_t;
_Static_assert(sizeof(pai_tcache_t) <= UINT16_MAX, "pai_slab_t.tcls holds an offset in it");
static inline uint16_t pai_tcls_offset(unsigned cls) {
  return (uint16_t)(offsetof(pai_tcache_t, cls) + cls * sizeof(pai_tclass_t));
}

typedef struct pai_tls_s {
  pthread_mutex_t lock;                /* owner's slow paths; fork takes every one */
  pai_tcache_t *caches;
  struct pai_tls_s *gprev, *gnext;     /* global thread list (g_lock) */
  int fake_cpu;
  unsigned node_ticks, node;
  pthread_t thread;
  _Atomic uint32_t *busy;              /* &pai_tl.busy of this thread */
  _Atomic(pa_pool_t *) *tl_pool;       /* &pai_tl.pool of this thread */
} pai_tls_t;

/* Cache-line layout: the first line holds what every pa_alloc/pa_free reads and almost nothing
 * writes; each group of fields that threads write at run time (references, the in_use_peak
 * sums, the decay clock, the idle-slab budget, the lock and what it guards) has a line of its
 * own. With `refs` and `live_synced` beside `closed` and `debug`, every depot exchange of one
 * thread (a sync writes live_synced) cost the other thread a cache miss on its next call: two
 * threads trading 64 KiB blocks each spent 45-105 ns of CPU per pair against 30 with a pool
 * each. */
#define PAI_LINE __attribute__((aligned(64)))
struct pa_pool_s {
  /* read-mostly */
  size_t max_bytes, retain_bytes;
  uint64_t decay_ns;           /* 0: no clock; else idle memory older than this goes back */
  pai_depot_t *depots;         /* [nnodes][PAI_SHARDS][PAI_NCLASSES] */
  int numa_node;               /* as configured */
  unsigned nnodes;             /* depot sets: node count for LOCAL, else 1 */
  unsigned debug;
  _Atomic int closed;
  /* nonzero when a free must not park blocks in the thread cache: the pool is closed, or it has
   * several node depots (the block's node is then checked on the slow path). Read by free_in;
   * pa_free's hit path needs no test of it (see there). */
  _Atomic uint32_t park_off;
  uint64_t id;
  /* written when caches, chunks and slow frees come and go */
  PAI_LINE _Atomic uint64_t refs; /* handle + thread caches + mapped chunks + in-flight frees */
  _Atomic uint64_t failed_fast;
  _Atomic unsigned next_shard; /* round-robin shard of the next thread cache */
  _Atomic uint32_t shard_caches[PAI_SHARDS]; /* live thread caches per shard (any node) */
  /* Bytes handed to users as of the last sync of every thread cache (tlcache.c sync_live) plus
   * the uncached traffic, and the high-water estimate of bytes handed to users (in_use_peak). */
  PAI_LINE _Atomic int64_t live_synced;
  _Atomic uint64_t use_peak;
  PAI_LINE _Atomic uint64_t decay_last; /* monotonic ns of the last decay pass (claimed by CAS) */
  /* bytes of empty slabs kept in their depots beyond the first per depot; with `retained` it
   * stays within retain_limit (slab.c keep_empty_slab) */
  PAI_LINE _Atomic uint64_t idle_slab_bytes;
  uint64_t retained;           /* bytes of empty chunks kept mapped (pool->lock) */
  /* retain_bytes times the live thread caches (at least one): what the pool may keep idle.
   * Per thread, as jemalloc's per-arena dirty pages and mimalloc's per-thread pages scale with
   * the threads: with one pool-wide 8 MiB, two threads whose 64 KiB working sets each swing
   * by 4-5 MiB released and re-carved slabs on every swing. Written under pool->lock when a
   * cache comes or goes (pai_retain_update); read relaxed beside idle_slab_bytes. */
  _Atomic uint64_t retain_limit;
  /* bit c: some depot of class c may hold an idle slab (set when one is kept, cleared by an
   * eviction sweep that finds none; a hint, see slab.c evict_idle). Read after every flush and
   * written rarely: off the idle_slab_bytes line, which depots write. */
  PAI_LINE _Atomic uint64_t idle_classes;
  /* an eviction asked for under a depot lock: (bytes << 6) | class, 0 if none (slab.c) */
  _Atomic uint64_t evict_want;
  PAI_LINE pthread_mutex_t lock;
  int handle_dropped, numa_bound;
  pai_chunk_t *chunks[PAI_MAX_NODES];
  pai_chunk_t *huge;
  pai_tcache_t *tcaches;
  uint64_t ntcaches;
  uint64_t mapped, mapped_peak, node_mapped[PAI_MAX_NODES], node_mapped_peak[PAI_MAX_NODES];
  uint64_t trims, trimmed, failed, huge_allocs, huge_frees, huge_bytes, unpooled_blocks;
  uint64_t unpooled_bytes, unpooled_allocs, unpooled_frees;
  struct pa_pool_s *gprev, *gnext;
};

/* ---- globals (pool.c) ---- */
extern uint64_t pai_free_key;   /* random per process: encodes the free marker */

/* ---- size classes (slab.c) ---- */
extern const uint32_t pai_class_size[PAI_NCLASSES];
extern uint8_t pai_small_lut[65];   /* (size + 63) >> 6 -> class, size <= 4096 */
extern uint8_t pai_large_lut[257];  /* (size + 4095) >> 12 -> class, size <= 1 MiB */
/* the same two tables giving the class's byte offset in a pai_tcache_t (pa_alloc's hit path) */
extern uint16_t pai_small_tcls[65], pai_large_tcls[257];
static inline uint16_t pai_tcls_offset(unsigned cls);
size_t pai_slab_bytes(unsigned cls);
int pai_class_for(size_t size, size_t align, unsigned *cls);
int pai_slab_init(pai_slab_t *s, pai_chunk_t *c, unsigned first_page, unsigned cls,
                  pai_depot_t *d, unsigned debug);
void pai_slab_fini(pai_slab_t *s);
unsigned pai_slab_take(pai_slab_t *s, void **out, unsigned n);
void pai_slab_put(pai_slab_t *s, uint32_t idx);

/* One 64x64->128 multiply by c = ceil(2^64 / block_size) gives both the block index of an offset
 * (the high half) and whether the offset is a multiple of the block size (the low half below c):
 * Lemire, Kaser and Kurz, "Faster remainder by direct computation" (2019), exact for offsets
 * and divisors below 2^32 (a slab spans at most 2 MiB). *lo < c is the exactness test. */
static inline uint64_t pai_slab_div(uint64_t off, uint64_t c, uint64_t *lo) {
#if defined(__x86_64__)
  /* one `mul`: the same through unsigned __int128 made gcc save and restore a register that
   * pa_free's hit path then never used */
  uint64_t hi;
  __asm__("mulq %3" : "=a"(*lo), "=d"(hi) : "a"(off), "rm"(c) : "cc");
  return hi;
#elif defined(__SIZEOF_INT128__)
  unsigned __int128 prod = (unsigned __int128)off * c;
  *lo = (uint64_t)prod;
  return (uint64_t)(prod >> 64);
#else
  *lo = off * c;
  return (off * (c >> 32) + ((off * (c & 0xFFFFFFFFu)) >> 32)) >> 32;
#endif
}

static inline uint32_t pai_slab_index(const pai_slab_t *s, uintptr_t p, bool *exact) {
  uint64_t lo;
  uint32_t idx = (uint32_t)pai_slab_div(p - s->base, s->div_magic, &lo);
  *exact = lo < s->div_magic && idx < s->nblocks;
  return idx;
}

/* The bitmap word of block idx, read without the depot lock (pa_free's hit path: idx masked
 * into the bitmap; a named function so that tests/valgrind.supp can name this read). */
static inline uint64_t pai_out_word(const _Atomic uint64_t *out, uint64_t idx) {
  return atomic_load_explicit(out + ((idx >> 6) & (PAI_BITMAP_WORDS - 1)), memory_order_relaxed);
}

static inline bool pai_slab_is_out(const pai_slab_t *s, uint64_t idx) {
  uint64_t w = atomic_load_explicit(&s->out[idx >> 6], memory_order_relaxed);
  return (w >> (idx & 63)) & 1u;
}

/* ---- arenas and the chunk registry (arena.c) ---- */
int pai_chunk_map(pa_pool_t *pool, unsigned node, size_t len, pai_chunk_t **out);
int pai_huge_map(pa_pool_t *pool, unsigned node, size_t size, pai_chunk_t **out);
void pai_chunk_unmap(pai_chunk_t *c);
int pai_chunk_take_pages(pai_chunk_t *c, unsigned npages, unsigned *first);
int pai_chunk_take_pages_at(pai_chunk_t *c, unsigned first, unsigned npages);
void pai_chunk_give_pages(pai_chunk_t *c, unsigned first, unsigned npages);
void pai_registry_fork_lock(void);
void pai_registry_fork_unlock(int child);

/* The chunk registry: a two-level radix map over 48-bit addresses (21 + 14 + 13 bits). */
#define PAI_REG_LEAF_BITS 14
#define PAI_REG_TOP_BITS 13
#define PAI_REG_LEAF_SIZE ((size_t)1 << PAI_REG_LEAF_BITS)
typedef _Atomic(pai_chunk_t *) pai_leaf_t[PAI_REG_LEAF_SIZE];
extern _Atomic(pai_leaf_t *) pai_reg_top[(size_t)1 << PAI_REG_TOP_BITS];

/* The chunk registered for the 2 MiB region holding p, or NULL. Never reads p itself. */
static inline pai_chunk_t *pai_chunk_lookup(const void *p) {
  uintptr_t key = (uintptr_t)p >> PAI_CHUNK_SHIFT;
  uintptr_t top = key >> PAI_REG_LEAF_BITS;
  if (PA_UNLIKELY(top >= ((uintptr_t)1 << PAI_REG_TOP_BITS))) return NULL;
  pai_leaf_t *leaf = atomic_load_explicit(&pai_reg_top[top], memory_order_acquire);
  if (PA_UNLIKELY(leaf == NULL)) return NULL;
  return atomic_load_explicit(&(*leaf)[key & (PAI_REG_LEAF_SIZE - 1)], memory_order_acquire);
}

/* Where a block lives. 0 or EFAULT (not the start of a live pooled block's slot). */
static inline int pai_locate(const void *p, pai_chunk_t **chunk, pai_slab_t **slab,
                             uint32_t *idx) {
  pai_chunk_t *c = pai_chunk_lookup(p);
  uintptr_t a = (uintptr_t)p;
  if (PA_UNLIKELY(c == NULL || a < c->base || a - c->base >= c->len)) return EFAULT;
  *chunk = c;
  if (c->kind != PAI_CHUNK_SLABS) { *slab = NULL; return a == c->base ? 0 : EFAULT; }
  unsigned slot = atomic_load_explicit(&c->page_slab[(a - c->base) >> PAI_PAGE_SHIFT],
                                       memory_order_relaxed);
  if (PA_UNLIKELY(slot == PAI_NO_SLAB)) return EFAULT;
  bool exact;
  *slab = &c->slabs[slot];
  *idx = pai_slab_index(*slab, a, &exact);
  return exact ? 0 : EFAULT;
}

/* ---- depots (slab.c) ---- */
#ifdef PA_LOCK_STATS
/* bench/alloc_bench.c built with -DPA_LOCK_STATS: depot lock acquisitions, and those that found
 * the lock taken (a trylock failed first) */
extern _Atomic uint64_t pai_lock_taken, pai_lock_contended;
/* slab carves, slab releases, adoptions, chunk maps, slabs evicted for another class, writes
 * to the pool-wide idle-slab and live-bytes counters */
extern _Atomic uint64_t pai_ev[6];
#define PAI_EV(i) atomic_fetch_add_explicit(&pai_ev[i], 1, memory_order_relaxed)
static inline void pai_depot_lock(pai_depot_t *d) {
  atomic_fetch_add_explicit(&pai_lock_taken, 1, memory_order_relaxed);
  if (pthread_mutex_trylock(&d->lock) == 0) return;
  atomic_fetch_add_explicit(&pai_lock_contended, 1, memory_order_relaxed);
  pthread_mutex_lock(&d->lock);
}
#else
#define PAI_EV(i) ((void)0)
static inline void pai_depot_lock(pai_depot_t *d) { pthread_mutex_lock(&d->lock); }
#endif
void pai_depot_lock_init(pthread_mutex_t *lock);
int pai_depot_refill(pa_pool_t *pool, pai_depot_t *d, void **out, unsigned n, uint64_t *got);
void pai_depot_return(pai_slab_t *s, uint32_t idx, bool locked);
void pai_depot_evict_pending(pa_pool_t *pool);
void pai_shard_drop_credits(pa_pool_t *pool, unsigned shard);
void pai_depot_release_empty(pa_pool_t *pool, pai_depot_t *d, bool all, uint64_t *released);
void pai_depot_release_idle(pa_pool_t *pool, pai_depot_t *d, uint64_t age, uint64_t now,
                            uint64_t *released);

/* ---- pools (pool.c) ---- */
/* Depots come in PAI_SHARDS sets per node: each thread cache refills from its own shard, so
 * threads do not trade through one lock; a block goes back to its slab's depot. */
static inline pai_depot_t *pai_depot_at(pa_pool_t *pool, unsigned node, unsigned shard,
                                        unsigned cls) {
  return &pool->depots[(node * PAI_SHARDS + shard) * PAI_NCLASSES + cls];
}
static inline pai_depot_t *pai_depot(pa_pool_t *pool, unsigned node, unsigned cls) {
  return pai_depot_at(pool, node, 0, cls);
}
static inline unsigned pai_ndepots(const pa_pool_t *pool) {
  return pool->nnodes * PAI_SHARDS * PAI_NCLASSES;
}
extern pthread_mutex_t pai_g_lock;
void pai_pool_chunk_empty(pa_pool_t *pool, pai_chunk_t *c, bool force, uint64_t *released);
void pai_pool_unref(pa_pool_t *pool);
void pai_note_mapped(pa_pool_t *pool, unsigned node, size_t len);
void pai_note_out(pa_pool_t *pool, int64_t delta);
bool pai_retain_update(pa_pool_t *pool);
void pai_retain_fit(pa_pool_t *pool, unsigned shard);
void pai_pool_unmap_retained(pa_pool_t *pool, uint64_t limit, uint64_t *released);
static inline uint64_t pai_retain_limit(pa_pool_t *pool) {
  return atomic_load_explicit(&pool->retain_limit, memory_order_relaxed);
}
/* the one writer of retain_limit (pool->lock held), named for the helgrind suppression */
static inline void pai_retain_limit_store(pa_pool_t *pool, uint64_t limit) {
  atomic_store_explicit(&pool->retain_limit, limit, memory_order_relaxed);
}
/* pool->lock held: what the pool keeps idle against retain_limit (empty slabs kept beyond the
 * spares, their reservations, retained chunks) */
static inline uint64_t pai_idle_bytes(pa_pool_t *pool) {
  return pool->retained + atomic_load_explicit(&pool->idle_slab_bytes, memory_order_relaxed);
}

/* ---- thread caches (tlcache.c) ---- */
pai_tcache_t *pai_tcache_slow(pa_pool_t *pool);
void pai_tcache_flush_class(pai_tcache_t *tc, unsigned cls, uint32_t keep);
void pai_tcache_detach_current(pa_pool_t *pool);
void pai_tcache_flush_current(pa_pool_t *pool);
int pai_tcache_refill(pai_tcache_t *tc, unsigned cls);
int pai_tcache_make_room(pai_tcache_t *tc, unsigned cls);
unsigned pai_current_node(pa_pool_t *pool);
void pai_thread_init_once(void);
/* Whether close and decay can empty caches of live threads (membarrier works here). */
bool pai_reclaim_live_supported(void);
void pai_tcache_fork_child(void);
void pai_tcache_fork_lock(void);
void pai_tcache_fork_parent(void);
void pai_tcache_cpu_moved(void);
void pai_tcache_sync_live(pai_tcache_t *tc);
void pai_peak_candidate(pa_pool_t *pool, int64_t bytes);
int pai_reclaim_caches(pa_pool_t *pool, bool idle_only, uint64_t age, pa_close_report_t *rep);
uint64_t pai_now_ns(void);
/* empty_since of a slab or chunk of a pool without decay: no clock read where memory goes idle
 * (often under a depot lock); an explicit decay with an age stamps it, so its age counts from
 * the first pa_pool_decay that finds it idle. */
#define PAI_UNSTAMPED UINT64_MAX
/* pool->lock held. keep_empty_slab reads pool->retained without it (atomically), so every
 * write is atomic too. */
static inline void pai_retained_add(pa_pool_t *pool, uint64_t delta) {
  __atomic_store_n(&pool->retained, pool->retained + delta, __ATOMIC_RELAXED);
}
static inline uint64_t pai_idle_stamp(const pa_pool_t *pool) {
  return pool->decay_ns ? pai_now_ns() : PAI_UNSTAMPED;
}
/* Whether memory idle since *since is `age` old at `now` (lock that guards *since held). */
static inline bool pai_idle_for(uint64_t *since, uint64_t now, uint64_t age) {
  if (age == 0) return true;
  if (*since == PAI_UNSTAMPED) {
    *since = now;
    return false;
  }
  return *since <= now && now - *since >= age;
}
void pai_pool_maybe_decay(pa_pool_t *pool);
uint32_t pai_cache_cap(const pa_pool_t *pool, unsigned cls);

typedef struct pai_tl_s {
  /* The pool whose cache `cache` is. A reclaimer (tlcache.c) may set it to PAI_NO_POOL under the
   * thread's tls->lock, which sends the thread's next call through the slow path; a close does
   * so for every thread holding a cache of the pool, so that it never names a closed pool (nor
   * a debug one): pa_alloc and pa_free's hit paths test no pool flag. */
  _Atomic(pa_pool_t *) pool;
  pai_tcache_t *cache;
  /* pa_free's memo: (address >> 16) of the last page it resolved, to this slab of pai_tl.pool,
   * whose class is *free_t in pai_tl.cache; valid while pai_slab_epoch == free_epoch. Set only
   * for a slab of pai_tl.pool, so that a hit needs no pool compare; the owner clears
   * free_epoch whenever it changes pool or cache (pai_tl_set), a reclaimer that sets another
   * thread's pool to PAI_NO_POOL bumps pai_slab_epoch (tlcache.c reclaim_one). */
  uintptr_t free_page;
  pai_slab_t *free_slab;
  struct pai_tclass_s *free_t;
  uint64_t free_epoch;
  /* 1 while this thread is inside pa_alloc/pa_free (written by the thread, read by a
   * reclaimer after membarrier; see tlcache.c) */
  _Atomic uint32_t busy;
  bool decaying;               /* this thread is emptying idle caches: slabs emptied are stale */
  /* bytes this thread unmapped, ever: a trim's own flush frees blocks whose slabs may go past
   * the retention bound and unmap on paths that count no `released` (pool.c release_empty) */
  uint64_t unmapped;
} pai_tl_t;
/* Bumped whenever a slab is released or a chunk unmapped, so that the per-thread page->slab
 * memo of pa_free never outlives the slab it names. */
extern _Atomic uint64_t pai_slab_epoch;
extern __thread pai_tl_t pai_tl __attribute__((tls_model("initial-exec")));
/* pai_tl.pool of a thread with no cache to use (its initial value, and what a retire or a
 * reclaimer sets): never NULL, so that pa_alloc's compare with the caller's pool also refuses
 * a NULL pool, one test less on its hit path. No pool has this address. */
extern char pai_no_pool;
#define PAI_NO_POOL ((pa_pool_t *)(void *)&pai_no_pool)

/* The calling thread's cache changes or goes (owner only): pa_free's memo stands for "a slab
 * of pai_tl.pool, with its class in pai_tl.cache", so it goes too. */
static inline void pai_tl_set(pa_pool_t *pool, pai_tcache_t *tc) {
  pai_tl.cache = tc;
  atomic_store_explicit(&pai_tl.pool, pool, memory_order_relaxed);
  pai_tl.free_epoch = 0;
}

static inline pai_tcache_t *pai_tcache(pa_pool_t *pool) {
  if (PA_LIKELY(atomic_load_explicit(&pai_tl.pool, memory_order_relaxed) == pool))
    return pai_tl.cache;
  return pai_tcache_slow(pool);
}

static inline int64_t pai_ld64(_Atomic int64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}
/* A read by the only thread that writes *a while no other thread can (a thread cache's fields
 * read by their owner): no race, so a plain load, which the compiler may fold into the
 * instruction that uses it (an atomic load it keeps as a load of its own). */
static inline int64_t pai_own64(_Atomic int64_t *a) {
#if defined(__SANITIZE_THREAD__)
  return atomic_load_explicit(a, memory_order_relaxed);
#else
  return *(const int64_t *)a;
#endif
}
static inline void pai_add64(_Atomic int64_t *a, int64_t d) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + d, memory_order_relaxed);
}
/* The same, published for pa_pool_stats' acquire loads (in_use_peak; see pai_tcache_sync_live). */
static inline void pai_add64_rel(_Atomic int64_t *a, int64_t d) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + d, memory_order_release);
}

/* ---- NUMA (arena.c / os_linux.c) ---- */
int pai_numa_nodes(unsigned *out);
int pai_numa_cpu_node(unsigned *node);
bool pai_numa_is_fake(void);

/* ---- debug (pool.c) ---- */
bool pai_unpooled_any(void);
int pai_unpooled_free(void *p);
int pai_unpooled_alloc(pa_pool_t *pool, size_t size, size_t align, void **out);
int pai_unpooled_lookup(const void *p, pa_pool_t **pool, size_t *size);
void pai_unpooled_fork_lock(void);
int pai_unpooled_check(pa_pool_t *pool);
void pai_unpooled_fork_unlock(int child);
int pai_poison_check(const void *p, size_t n);
void pai_poison_fill(void *p, size_t n);
int pai_canary_check(const void *p, size_t req, size_t size);

/* The marker word a freed block carries: its own address under a per-process random key, so
 * that a user's data matches it by chance with probability 2^-64. */
static inline uint64_t pai_free_marker(const void *p) {
  return (uint64_t)(uintptr_t)p ^ pai_free_key;
}

#pragma GCC visibility pop

#endif /* PA_INTERNAL_H */
