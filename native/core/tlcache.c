/* SPDX-License-Identifier: MIT */
/* --- tlcache.c: per-thread, per-pool, per-class block caches -------------------------------
 *
 * Each thread keeps, for each pool it uses, a bounded LIFO array of free blocks per class
 * (Bonwick's magazines; mimalloc's thread-local free lists). The common pa_alloc/pa_free pops or
 * pushes one slot: no lock, no atomic read-modify-write, no shared cache line written. An empty
 * cache takes half a cache's worth from the depot in one locked exchange; a full one gives half
 * back. Caches are capped per class and in total in proportion to the pool's max_bytes, so
 * blocks parked in idle threads cannot starve a small pool.
 *
 * Lifetime: a cache is created on a thread's first use of a pool and holds a reference on the
 * pool. It is flushed back and freed when the thread exits (pthread key destructor), when its
 * thread closes the pool or next calls in after another thread closed it, and, in a forked
 * child, for every thread that does not exist there.
 *
 * Lock order / who may touch what:
 *   a cache's slots and counts: its owner thread only (or the forked child, single-threaded);
 *   the owner's slow paths (refill, flush, create, retire) hold its tls->lock, which fork's
 *   prepare handler takes for every thread, so a child never sees a half-done exchange;
 *   its statistics counters: written by the owner (relaxed atomics), read by pa_pool_stats
 *   under pool->lock; pool->tcaches list: pool->lock; global thread list: pai_g_lock.
 *   A flush takes one depot lock at a time (then pool->lock inside, via slab release).
 * ------------------------------------------------------------------------------------------- */
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"
#include "track.h"

char pai_no_pool;
__thread pai_tl_t pai_tl __attribute__((tls_model("initial-exec"))) = {.pool = PAI_NO_POOL};

static __thread pai_tls_t *my_tls;
/* Set once thread_exit ran: another key's destructor may still call in (glibc runs up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds), and a tls made then would never be unlinked, leaving
 * the global list pointing into this thread's static TLS after it is gone. Such late calls
 * take the uncached path. */
static __thread bool my_exited;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static pai_tls_t *g_threads;

static void thread_exit(void *arg);

/* Reclaiming another thread's cache needs the asymmetric fence (see below); without it the
 * reclaimer skips live threads' caches and reports the ones holding blocks. 0: not probed yet
 * (registration costs milliseconds with other threads running, so the first reclaim does it,
 * under g_lock); 1: registered; -1: unsupported, refused, or a fence failed once. */
static _Atomic int g_membarrier;

/* g_lock held. */
static bool membarrier_ready(void) {
  int state = atomic_load_explicit(&g_membarrier, memory_order_relaxed);
  if (state == 0) {
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    bool ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
              syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    state = ok ? 1 : -1;
    atomic_store_explicit(&g_membarrier, state, memory_order_relaxed);
  }
  return state > 0;
}

bool pai_reclaim_live_supported(void) {
  pthread_mutex_lock(&pai_g_lock);
  bool ok = membarrier_ready();
  pthread_mutex_unlock(&pai_g_lock);
  return ok;
}

static void key_init(void) { pthread_key_create(&tls_key, thread_exit); }

void pai_thread_init_once(void) { pthread_once(&tls_once, key_init); }

// ---- caps ----

static size_t cache_budget(const pa_pool_t *pool);

/* Slots per class: 1 MiB worth, at most PAI_CACHE_MAX; large classes (where 1 MiB is fewer
 * than PAI_BIG_CLASS_SLOTS blocks) get up to that many within half the thread's byte budget
 * (32 blocks of 64 KiB by default, so a batch of 16 amortises one depot lock); never more than
 * 1/64 of a bounded pool's capacity. Raising every class to half the budget instead made the
 * mixed-size workload hit the byte budget (and its halving flushes) twice as often. */
uint32_t pai_cache_cap(const pa_pool_t *pool, unsigned cls) {
  if (pool->debug) return 0;
  size_t bs = pai_class_size[cls];
  size_t cap = ((size_t)1 << 20) / bs;
  size_t big = (cache_budget(pool) / 2) / bs;
  if (cap < PAI_BIG_CLASS_SLOTS) cap = big < PAI_BIG_CLASS_SLOTS ? big : PAI_BIG_CLASS_SLOTS;
  if (cap > PAI_CACHE_MAX) cap = PAI_CACHE_MAX;
  if (cap < 2) cap = 2;
  if (pool->max_bytes) {
    size_t by_cap = pool->max_bytes / 64 / bs;
    if (by_cap < cap) cap = by_cap;
  }
  return cap < 2 ? 0 : (uint32_t)cap;
}

static size_t cache_budget(const pa_pool_t *pool) {
  return pool->max_bytes ? pool->max_bytes / 16 : PAI_DEFAULT_CACHE_BUDGET;
}

// ---- flushing ----

static void count_exchange(pai_tclass_t *t) {
  atomic_store_explicit(&t->exchanges,
                        atomic_load_explicit(&t->exchanges, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Give slots[keep..n) back to their slabs, one depot lock per run of the same depot. The count
 * drops block by block under the depot lock, so a fork (which takes every depot lock) never
 * sees a block both in a slab and in this cache. */
void pai_tcache_flush_class(pai_tcache_t *tc, unsigned cls, uint32_t keep) {
  pai_tclass_t *t = &tc->cls[cls];
  if (t->n <= keep) return;
  pai_depot_t *held = NULL;
  size_t bs = pai_class_size[cls];
  uint32_t moved = 0;
  while (t->n > keep) {
    void *p = t->slots[t->n - 1];
    pai_chunk_t *c;
    pai_slab_t *s;
    uint32_t idx;
    if (pai_locate(p, &c, &s, &idx) != 0 || s == NULL) { t->n--; continue; }
    if (s->depot != held) {
      if (held) pthread_mutex_unlock(&held->lock);
      held = s->depot;
      pai_depot_lock(held);
    }
    pai_depot_return(s, idx, true);
    t->n--;
    moved++;
  }
  if (held) {
    pthread_mutex_unlock(&held->lock);
    pai_depot_evict_pending(tc->pool);
  }
  /* handed-out bytes (base - parked) and their high-water (base - parked_lw) stay put; base
   * drops first, so a stats reader (parked_lw, then base) never sees the high-water grow */
  int64_t bytes = (int64_t)moved * (int64_t)bs;
  pai_add64(&tc->parked, -bytes);
  pai_add64_rel(&tc->base, -bytes);
  pai_add64_rel(&tc->parked_lw, -bytes);
  count_exchange(t);
}

static void flush_all(pai_tcache_t *tc) {
  for (unsigned c = 0; c < PAI_NCLASSES; c++) pai_tcache_flush_class(tc, c, 0);
}

// ---- creation and retirement ----

static void tls_unlink(pai_tls_t *tls) {
  pthread_mutex_lock(&pai_g_lock);
  if (tls->gprev) tls->gprev->gnext = tls->gnext;
  else g_threads = tls->gnext;
  if (tls->gnext) tls->gnext->gprev = tls->gprev;
  pthread_mutex_unlock(&pai_g_lock);
}

/* NULL: no cache for this thread (out of memory, no key slot, or the thread is exiting). */
static pai_tls_t *tls_get(void) {
  if (my_tls) return my_tls;
  if (my_exited) return NULL;
  pai_thread_init_once();
  pai_tls_t *tls = calloc(1, sizeof *tls);
  if (tls == NULL) return NULL;
  pthread_mutex_init(&tls->lock, NULL);
  tls->thread = pthread_self();
  tls->busy = &pai_tl.busy;
  tls->tl_pool = &pai_tl.pool;
  pthread_mutex_lock(&pai_g_lock);
  tls->gnext = g_threads;
  if (g_threads) g_threads->gprev = tls;
  g_threads = tls;
  pthread_mutex_unlock(&pai_g_lock);
  /* without the key's destructor nothing would unlink it before the thread's TLS goes */
  if (pthread_setspecific(tls_key, tls) != 0) {
    tls_unlink(tls);
    pthread_mutex_destroy(&tls->lock);
    free(tls);
    return NULL;
  }
  my_tls = tls;
  return tls;
}

/* tls->lock held. */
static pai_tcache_t *cache_new(pa_pool_t *pool, pai_tls_t *tls) {
  pai_tcache_t *tc = calloc(1, sizeof *tc);
  if (tc == NULL) return NULL;
  tc->pool = pool;
  tc->owner = tls;
  tc->budget = cache_budget(pool);
  tc->node = pai_current_node(pool);
  tc->shard = atomic_fetch_add(&pool->next_shard, 1) % PAI_SHARDS;
  atomic_fetch_add(&pool->shard_caches[tc->shard], 1);
  for (unsigned c = 0; c < PAI_NCLASSES; c++) {
    tc->cls[c].limit = pai_cache_cap(pool, c);
    tc->cls[c].size = pai_class_size[c];
  }
  atomic_fetch_add(&pool->refs, 1);
  pthread_mutex_lock(&pool->lock);
  tc->pnext = pool->tcaches;
  if (tc->pnext) tc->pnext->pprev = tc;
  pool->tcaches = tc;
  pool->ntcaches++;
  (void)pai_retain_update(pool);
  pthread_mutex_unlock(&pool->lock);
  tc->tnext = tls->caches;
  tls->caches = tc;
  return tc;
}

/* Fold a cache's counters into the depots so that the pool's totals survive it. */
static void retire_counters(pai_tcache_t *tc) {
  pa_pool_t *pool = tc->pool;
  for (unsigned c = 0; c < PAI_NCLASSES; c++) {
    pai_tclass_t *t = &tc->cls[c];
    pai_depot_t *d = pai_depot(pool, 0, c);
    atomic_fetch_add(&d->allocs, atomic_load(&t->hits) + atomic_load(&t->misses));
    atomic_fetch_add(&d->frees, atomic_load(&t->frees));
    atomic_fetch_add(&d->hits, atomic_load(&t->hits));
    atomic_fetch_add(&d->misses, atomic_load(&t->misses));
    atomic_fetch_add(&d->exchanges, atomic_load(&t->exchanges));
  }
}

/* tls->lock held: flush a cache and unlink it from its pool; the caller has unlinked it from
 * its thread and calls cache_release() once it holds no lock (the pool may be freed then). */
static void cache_retire(pai_tcache_t *tc) {
  pa_pool_t *pool = tc->pool;
  flush_all(tc);
  pai_tcache_sync_live(tc);
  pthread_mutex_lock(&pool->lock);
  if (tc->pprev) tc->pprev->pnext = tc->pnext;
  else pool->tcaches = tc->pnext;
  if (tc->pnext) tc->pnext->pprev = tc->pprev;
  pool->ntcaches--;
  bool fell = pai_retain_update(pool);
  bool last = atomic_fetch_sub(&pool->shard_caches[tc->shard], 1) == 1;
  retire_counters(tc);
  pthread_mutex_unlock(&pool->lock);
  if (last) pai_shard_drop_credits(pool, tc->shard);
  /* the flush above kept what fits the bound with this cache; over the bound without it, the
   * rest goes now (a close gives back everything anyway) */
  if (fell && !atomic_load_explicit(&pool->closed, memory_order_relaxed))
    pai_retain_fit(pool, tc->shard);
  if (pai_tl.cache == tc) {
    pai_tl_set(PAI_NO_POOL, NULL);
  }
}

/* No lock held: free retired caches (chained by tnext) and drop their pool references. */
static void cache_release(pai_tcache_t *list) {
  while (list) {
    pai_tcache_t *next = list->tnext;
    pa_pool_t *pool = list->pool;
    for (unsigned c = 0; c < PAI_NCLASSES; c++) free(list->cls[c].slots);
    free(list);
    pai_pool_unref(pool);
    list = next;
  }
}

/* tls->lock held: retire the caches that match (closed pools, or one pool); return them. */
static pai_tcache_t *retire_matching(pai_tls_t *tls, const pa_pool_t *only) {
  pai_tcache_t *retired = NULL, **link = &tls->caches;
  while (*link) {
    pai_tcache_t *tc = *link;
    bool match = only ? tc->pool == only
                      : atomic_load_explicit(&tc->pool->closed, memory_order_relaxed) != 0;
    if (!match) { link = &tc->tnext; continue; }
    *link = tc->tnext;
    cache_retire(tc);
    tc->tnext = retired;
    retired = tc;
  }
  return retired;
}

static pai_tcache_t *find_or_make(pai_tls_t *tls, pa_pool_t *pool) {
  pai_tcache_t *tc = tls->caches;
  while (tc && tc->pool != pool) tc = tc->tnext;
  if (tc == NULL) {
    if (atomic_load_explicit(&pool->closed, memory_order_relaxed)) return NULL;
    return cache_new(pool, tls);
  }
  if (pool->nnodes > 1) {
    unsigned node = pai_current_node(pool);
    if (node != tc->node) { flush_all(tc); tc->node = node; }
  }
  return tc;
}

/* Never for a debug pool: pa_alloc and pa_free rely on pai_tl.pool never naming one. */
pai_tcache_t *pai_tcache_slow(pa_pool_t *pool) {
  if (pool->debug) return NULL;
  pai_tls_t *tls = tls_get();
  if (tls == NULL) return NULL;
  pthread_mutex_lock(&tls->lock);
  pai_tcache_t *retired = retire_matching(tls, NULL);
  pai_tcache_t *tc = find_or_make(tls, pool);
  if (tc) {
    pai_tl_set(pool, tc);
  }
  pthread_mutex_unlock(&tls->lock);
  cache_release(retired);
  return tc;
}

void pai_tcache_detach_current(pa_pool_t *pool) {
  pai_tls_t *tls = my_tls;
  if (tls == NULL) return;
  pthread_mutex_lock(&tls->lock);
  pai_tcache_t *retired = retire_matching(tls, pool);
  pthread_mutex_unlock(&tls->lock);
  cache_release(retired);
}

/* Flush (keep the cache) every class of this thread's cache for the pool. */
void pai_tcache_flush_current(pa_pool_t *pool) {
  pai_tls_t *tls = my_tls;
  if (tls == NULL) return;
  pthread_mutex_lock(&tls->lock);
  for (pai_tcache_t *tc = tls->caches; tc; tc = tc->tnext)
    if (tc->pool == pool) flush_all(tc);
  pthread_mutex_unlock(&tls->lock);
}

static bool ensure_slots(pai_tclass_t *t) {
  if (t->slots) return true;
  if (t->limit == 0) return false;
  t->slots = malloc(t->limit * sizeof(void *));
  if (t->slots == NULL) return false;
  t->cap = t->limit;
  return true;
}

/* Every few depot exchanges, not every one: a sync adds to pool->live_synced, a line every
 * thread writes, and two threads trading 64 KiB batches (one exchange per 8 pairs) each missed
 * on it every time. pa_pool_stats adds every cache's swing since its last sync, so with one
 * thread in_use_peak stays exact; with several the windows between syncs are longer. */
#define PAI_SYNC_EVERY 8u
static void maybe_sync(pai_tcache_t *tc) {
  if (++tc->unsynced < PAI_SYNC_EVERY) return;
  tc->unsynced = 0;
  pai_tcache_sync_live(tc);
}

static int refill_locked(pai_tcache_t *tc, unsigned cls) {
  pai_tclass_t *t = &tc->cls[cls];
  if (!ensure_slots(t)) return ENOENT;
  maybe_sync(tc);
  if (t->n > 0) return 0; /* a reclaimer sent us here and then found us busy */
  unsigned node = pai_current_node(tc->pool);
  if (node != tc->node) {
    flush_all(tc);
    tc->node = node;
  }
  unsigned want = t->cap / 2 > 0 ? t->cap / 2 : 1;
  pai_depot_t *d = pai_depot_at(tc->pool, tc->node, tc->shard, cls);
  int err = pai_depot_refill(tc->pool, d, t->slots, want, &t->n);
  if (err) return err;
  /* the blocks already carry their free marker (see slab.c mark_all_free) */
  /* parked_lw rises before base, so a stats reader (base, then parked_lw) never sees the
   * high-water grow */
  int64_t bytes = (int64_t)t->n * pai_class_size[cls];
  pai_add64(&tc->parked, bytes);
  pai_add64_rel(&tc->parked_lw, bytes);
  pai_add64_rel(&tc->base, bytes);
  count_exchange(t);
  return 0;
}

/* Slow-path refill of one class: take a batch, mark each block as free. ENOENT: no caching. */
int pai_tcache_refill(pai_tcache_t *tc, unsigned cls) {
  pthread_mutex_lock(&tc->owner->lock);
  int err = refill_locked(tc, cls);
  pthread_mutex_unlock(&tc->owner->lock);
  return err;
}

static int make_room_locked(pai_tcache_t *tc, unsigned cls) {
  pai_tclass_t *t = &tc->cls[cls];
  if (!ensure_slots(t)) return ENOENT;
  maybe_sync(tc);
  if (t->n >= t->cap) pai_tcache_flush_class(tc, cls, t->cap / 2);
  if (pai_class_size[cls] > tc->budget) return ENOENT;
  /* over the byte budget: halve the other classes, largest blocks first, then this one, until
   * the block fits. Halving rather than emptying keeps the caches warm for a workload spread
   * over many classes; sparing the class being freed into keeps its LIFO hot while blocks
   * parked by an earlier phase (say 32 x 64 KiB) are the ones that go. */
  for (unsigned i = PAI_NCLASSES;
       i > 0 && (uint64_t)pai_ld64(&tc->parked) + pai_class_size[cls] > tc->budget; i--) {
    if (i - 1 != cls) pai_tcache_flush_class(tc, i - 1, tc->cls[i - 1].n / 2);
  }
  if ((uint64_t)pai_ld64(&tc->parked) + pai_class_size[cls] > tc->budget)
    pai_tcache_flush_class(tc, cls, t->n / 2);
  if ((uint64_t)pai_ld64(&tc->parked) + pai_class_size[cls] > tc->budget) flush_all(tc);
  return 0;
}

/* Slow-path room for one more slot: allocate slots or give half back. ENOENT: no caching. */
int pai_tcache_make_room(pai_tcache_t *tc, unsigned cls) {
  pthread_mutex_lock(&tc->owner->lock);
  int err = make_room_locked(tc, cls);
  pthread_mutex_unlock(&tc->owner->lock);
  return err;
}

// ---- in_use_peak ----

/* Fold this cache's handed-out bytes into pool->live_synced and offer the pool its high-water
 * since the last sync: (everyone else as of their last sync) + (our peak since ours). Exact
 * with one thread; with several it is an estimate, since the others' current values are their
 * last synced ones. Only the owner (or a forked child, for dead threads) calls it.
 *
 * pa_pool_stats reads live_synced, then each cache's live_at_sync, parked_lw and base with
 * acquire loads while the owner runs on. The owner publishes in an order (release stores) that
 * a reader can catch half-way only on the low side: the cache's own fields before the pool's
 * sum, parked_lw before live_at_sync, parked_lw up before base up and base down before
 * parked_lw down. An in_use_peak may miss a swing in flight; it never counts one twice. */
void pai_tcache_sync_live(pai_tcache_t *tc) {
  pa_pool_t *pool = tc->pool;
  int64_t base = pai_ld64(&tc->base), parked = pai_ld64(&tc->parked);
  int64_t live = base - parked, hw = base - pai_ld64(&tc->parked_lw);
  int64_t synced = pai_ld64(&tc->live_at_sync);
  atomic_store_explicit(&tc->parked_lw, parked, memory_order_release);
  atomic_store_explicit(&tc->live_at_sync, live, memory_order_release);
  PAI_EV(5);
  int64_t before = atomic_fetch_add_explicit(&pool->live_synced, live - synced,
                                             memory_order_acq_rel);
  pai_peak_candidate(pool, before - synced + hw);
}

// ---- Reclaiming other threads' caches ----
/*
 * A live thread that parked blocks and then stopped calling the allocator keeps them until its
 * next call. pa_pool_close_report and pa_pool_decay take them without stopping that thread:
 *
 *   owner (pa_alloc/pa_free)              reclaimer (under g_lock, then the owner's tls->lock)
 *   busy = 1  (relaxed store)             owner's pai_tl.pool = PAI_NO_POOL
 *   compiler barrier                      pai_slab_epoch += 1
 *   load pai_tl.pool: == pool -> cache    membarrier(PRIVATE_EXPEDITED)
 *     (pa_free: load pai_slab_epoch:      load owner's busy (acquire)
 *      == memo's -> cache)                0: flush the cache; 1: leave it, report it busy
 *   ... touch the cache ...
 *   busy = 0  (release store)
 *
 * membarrier makes every running thread of the process execute a full barrier (a sleeping one
 * had a context switch), so the pair behaves like Dekker's with a fence on both sides while
 * the owner pays only two thread-local stores and no extra load (pa_alloc loads pai_tl.pool
 * anyway to find its cache; pa_free loads the epoch its memo is checked against anyway, and a
 * memo is set, with the epoch loaded before the pool compare, only for a slab of pai_tl.pool):
 * either the owner sees PAI_NO_POOL (or the new epoch, and then, the epoch load being an
 * acquire, PAI_NO_POOL) and takes the slow path, which waits on tls->lock and looks the cache
 * up again, or the reclaimer sees busy and keeps out. A busy==0
 * it reads was written after the owner's last touch (release/acquire), so the flush happens
 * after it; the owner's next touch comes after tls->lock. Liburcu and Folly's asymmetric fences
 * use the same pairing.
 */

/* tls->lock held. A class is idle when its operation count has not moved for `age` (two
 * probes that far apart; age 0: now), and it has not been emptied since. */
static bool class_idle(pai_tclass_t *t, uint64_t now, uint64_t age) {
  /* now is read under g_lock, as every probe stamp is written, so it is never behind one; the
   * check keeps a clock surprise from wrapping the subtraction below into "idle for ages" */
  uint64_t ops = atomic_load_explicit(&t->hits, memory_order_relaxed) +
                 atomic_load_explicit(&t->misses, memory_order_relaxed) +
                 atomic_load_explicit(&t->frees, memory_order_relaxed);
  if (ops != t->probe_ops || t->probe_ns == 0) {
    t->probe_ops = ops;
    t->probe_ns = now;
    t->probe_flushed = 0;
    if (age != 0) return false;
  }
  return !t->probe_flushed && now >= t->probe_ns && now - t->probe_ns >= age;
}

/* g_lock and tls->lock held. Empty the classes marked in `which` (all for a close). 1: emptied
 * some, 0: nothing parked there, -1: left alone while it holds blocks (the owner is inside a
 * call, or live threads' caches cannot be reclaimed here). */
static int reclaim_one(pai_tls_t *tls, pai_tcache_t *tc, const bool *which, bool closed,
                       uint64_t *bytes) {
  if (tls != my_tls) {
    /* relaxed: the owner writes it, and only as a hint here (busy only when it holds some) */
    bool holds = atomic_load_explicit(&tc->parked, memory_order_relaxed) > 0;
    /* even where the cache cannot be taken: the owner's next call then goes through the slow
     * path, which is where a closed pool is refused (pa_alloc/pa_free's hit paths test no
     * `closed` flag) and where the owner empties its cache of a closed pool itself */
    atomic_store(tls->tl_pool, PAI_NO_POOL);
    /* and its pa_free memo, which stands for "a slab of pai_tl.pool": the owner's memo is its
     * own to write (it may be writing it now), so every memo goes, as when a slab is released */
    atomic_fetch_add(&pai_slab_epoch, 1);
    if (!membarrier_ready()) return holds ? -1 : 0;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
      /* no fence, no Dekker pairing (EPERM, ENOMEM, a seccomp filter): stop for good */
      atomic_store_explicit(&g_membarrier, -1, memory_order_relaxed);
      return holds ? -1 : 0;
    }
    if (atomic_load_explicit(tls->busy, memory_order_acquire)) return holds ? -1 : 0;
  }
  uint64_t parked = 0;
  bool was = pai_tl.decaying;
  pai_tl.decaying = !closed;
  for (unsigned c = 0; c < PAI_NCLASSES; c++) {
    if (!which[c]) continue;
    parked += (uint64_t)tc->cls[c].n * pai_class_size[c];
    pai_tcache_flush_class(tc, c, 0);
    tc->cls[c].probe_flushed = 1;
  }
  pai_tl.decaying = was;
  *bytes += parked;
  return parked ? 1 : 0;
}

/* Empty the caches that threads hold for `pool`: all of every one (close), or the classes
 * idle for `age` (decay). A close retries busy owners for a short while, then reports them. */
int pai_reclaim_caches(pa_pool_t *pool, bool idle_only, uint64_t age, pa_close_report_t *rep) {
  bool closed = atomic_load(&pool->closed) != 0;
  bool which[PAI_NCLASSES];
  for (int pass = 0; pass < 50; pass++) {
    uint64_t busy = 0;
    pthread_mutex_lock(&pai_g_lock);
    /* under g_lock: no other reclaimer stamps a later probe between this read and its use */
    uint64_t now = pai_now_ns();
    for (pai_tls_t *tls = g_threads; tls; tls = tls->gnext) {
      pthread_mutex_lock(&tls->lock);
      pai_tcache_t *tc = tls->caches;
      while (tc && tc->pool != pool) tc = tc->tnext;
      bool any = false;
      for (unsigned c = 0; tc && c < PAI_NCLASSES; c++) {
        which[c] = !idle_only || class_idle(&tc->cls[c], now, age);
        any = any || which[c];
      }
      if (any) {
        int r = reclaim_one(tls, tc, which, closed, &rep->reclaimed_bytes);
        if (r > 0) rep->caches_reclaimed++;
        if (r < 0) busy++;
      }
      pthread_mutex_unlock(&tls->lock);
    }
    pthread_mutex_unlock(&pai_g_lock);
    rep->caches_busy = busy;
    /* a decay pass comes again; a close waits a little for threads inside a call */
    if (busy == 0 || idle_only || atomic_load(&g_membarrier) < 0) break;
    struct timespec pause = {0, 200000};
    nanosleep(&pause, NULL);
  }
  return 0;
}

// ---- NUMA node of the calling thread ----

/* The thread moved (fake topology): its next call re-checks its caches' node. */
void pai_tcache_cpu_moved(void) {
  pai_tl_set(PAI_NO_POOL, NULL);
}

unsigned pai_current_node(pa_pool_t *pool) {
  if (pool->numa_node != PA_NUMA_LOCAL) return 0;
  pai_tls_t *tls = my_tls;
  unsigned cpu, node = 0;
  bool fake = pai_numa_is_fake();
  if (tls && !fake && (tls->node_ticks++ & 63u) != 0) {
    node = tls->node;
  } else {
    if (pai_os()->getcpu(&cpu, &node) != 0) node = 0;
    if (tls) tls->node = node;
  }
  return node < pool->nnodes ? node : 0;
}

// ---- thread exit and fork ----

/* Retire every cache of a thread (tls->lock held); returns them for cache_release(). */
static pai_tcache_t *retire_all(pai_tls_t *tls) {
  pai_tcache_t *retired = NULL;
  while (tls->caches) {
    pai_tcache_t *tc = tls->caches;
    tls->caches = tc->tnext;
    cache_retire(tc);
    tc->tnext = retired;
    retired = tc;
  }
  return retired;
}

static void thread_exit(void *arg) {
  pai_tls_t *tls = arg;
  my_exited = true;
  pthread_mutex_lock(&tls->lock);
  pai_tcache_t *retired = retire_all(tls);
  pthread_mutex_unlock(&tls->lock);
  cache_release(retired);
  pai_tl_set(PAI_NO_POOL, NULL);
  tls_unlink(tls);
  my_tls = NULL;
  pthread_mutex_destroy(&tls->lock);
  free(tls);
}

/* fork prepare (pai_g_lock held): every thread's cache stops between two slow operations. */
void pai_tcache_fork_lock(void) {
  for (pai_tls_t *t = g_threads; t; t = t->gnext) pthread_mutex_lock(&t->lock);
}

void pai_tcache_fork_parent(void) {
  for (pai_tls_t *t = g_threads; t; t = t->gnext) pthread_mutex_unlock(&t->lock);
}

/* In a forked child (one thread, locks re-initialised by the caller except ours here): hand
 * back the caches of the threads that do not exist in the child. */
void pai_tcache_fork_child(void) {
  /* the child is a new address space: register it again at its first reclaim */
  atomic_store_explicit(&g_membarrier, 0, memory_order_relaxed);
  pai_tls_t *tls = g_threads;
  g_threads = my_tls;
  while (tls) {
    pai_tls_t *next = tls->gnext;
    pthread_mutex_init(&tls->lock, NULL);
    if (tls != my_tls) {
      pai_tcache_t *retired = retire_all(tls);
      cache_release(retired);
      free(tls);
    }
    tls = next;
  }
  if (my_tls) { my_tls->gprev = NULL; my_tls->gnext = NULL; }
  /* a fork between a close's `closed` store and its sweep of the threads: the hit paths rely
   * on no thread's pai_tl.pool naming a closed pool */
  pa_pool_t *cur = atomic_load_explicit(&pai_tl.pool, memory_order_relaxed);
  if (cur != PAI_NO_POOL && atomic_load_explicit(&cur->closed, memory_order_relaxed))
    pai_tl_set(PAI_NO_POOL, NULL);
}
