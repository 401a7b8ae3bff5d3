/* SPDX-License-Identifier: MIT */
/* --- pool.c: pool lifecycle and the public allocation entry points --------------------------
 *
 * pa_alloc/pa_free are the hot path: one thread-cache slot pop or push (tlcache.c), a class
 * table lookup, and for pa_free a registry lookup (arena.c) plus two double-free checks: the
 * slab's `out` bit (clear = block sits in its slab) and the free marker word a cached block
 * carries (see pai_free_marker). Everything else here is the slow path: refills, huge blocks
 * (a dedicated mapping each), debug modes and pool lifetime.
 *
 * Lifetime: pool->refs counts the caller's handle, every thread cache, every mapped chunk and
 * every in-flight slow free. The struct is freed when it drops to zero, which needs the pool
 * closed (pa_pool_destroy closes it), every block back and every cache gone.
 *
 * Lock order / who may touch what: pai_g_lock -> tls->lock -> depot->lock -> pool->lock ->
 * registry lock;
 * the unpooled table lock is a leaf. fork: the prepare handler takes all of them in that order,
 * the child re-initialises them and hands back the caches of threads that did not survive.
 * ------------------------------------------------------------------------------------------- */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"
#include "track.h"

pthread_mutex_t pai_g_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t pai_free_key;
static pa_pool_t *g_pools;
static uint64_t g_next_id;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

static void global_init(void) {
  uint64_t key;
  if (pai_os_random(&key, sizeof key) != 0)
    key = (uint64_t)time(NULL) * 0x2545F4914F6CDD1Dull ^ (uint64_t)(uintptr_t)&key;
  pai_free_key = key | 1u;
  pai_thread_init_once();
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* A counter only its owner thread writes and others read: a relaxed load and store. On x86-64
 * one `add` to memory does the same (an aligned 8-byte store is atomic for the readers; no
 * lock prefix, since no other thread writes it), where the compiler emits three instructions
 * and a spare register for the atomic pair. */
static inline void bump(_Atomic uint64_t *c) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
  __asm__("addq $1, %0" : "+m"(*c));
#else
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
#endif
}

void pai_peak_candidate(pa_pool_t *pool, int64_t bytes) {
  if (bytes <= 0) return;
  uint64_t now = (uint64_t)bytes;
  uint64_t peak = atomic_load_explicit(&pool->use_peak, memory_order_relaxed);
  while (now > peak && !atomic_compare_exchange_weak(&pool->use_peak, &peak, now)) {
  }
}

/* Bytes handed to (delta > 0) or taken back from users outside the thread caches. The
 * caller's own cache syncs first, so that its earlier swing is not added to this one. */
void pai_note_out(pa_pool_t *pool, int64_t delta) {
  if (atomic_load_explicit(&pai_tl.pool, memory_order_relaxed) == pool && pai_tl.cache)
    pai_tcache_sync_live(pai_tl.cache);
  pai_peak_candidate(pool, atomic_fetch_add(&pool->live_synced, delta) + delta);
}

uint64_t pai_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* a few ms of resolution; cheap on every kernel */
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// ---- configuration ----

void pa_config_init(pa_config_t *cfg) {
  if (cfg == NULL) return;
  cfg->max_bytes = 0;
  cfg->retain_bytes = PAI_DEFAULT_RETAIN;
  cfg->numa_node = PA_NUMA_ANY;
  cfg->debug = 0;
  cfg->decay_ms = 0;
}

static unsigned env_debug(void) {
  const char *v = getenv("POOLALLOC_DEBUG");
  if (v == NULL || *v == '\0' || strcmp(v, "0") == 0) return 0;
  if (strcmp(v, "unpooled") == 0) return PA_DEBUG_UNPOOLED | PA_DEBUG_CANARY;
  long n = strtol(v, NULL, 10);
  if (n > 1) return (unsigned)n & (PA_DEBUG_POISON | PA_DEBUG_CANARY | PA_DEBUG_UNPOOLED);
  return PA_DEBUG_POISON | PA_DEBUG_CANARY;
}

static int check_node(int node, unsigned *nnodes) {
  unsigned count = 1;
  *nnodes = 1;
  if (node == PA_NUMA_ANY) return 0;
  if (node < PA_NUMA_LOCAL) return EINVAL;
  int err = pai_numa_nodes(&count);
  if (err) return err;
  if (node == PA_NUMA_LOCAL) { *nnodes = count; return 0; }
  return (unsigned)node < count ? 0 : ENODEV;
}

// ---- creation and lifetime ----

static int pool_alloc_struct(const pa_config_t *cfg, unsigned nnodes, pa_pool_t **out) {
  pa_pool_t *pool = NULL;
  /* aligned: the struct keeps its written fields on lines of their own (internal.h) */
  if (posix_memalign((void **)&pool, 64, sizeof *pool) != 0) return ENOMEM;
  memset(pool, 0, sizeof *pool);
  size_t nd = (size_t)nnodes * PAI_SHARDS * PAI_NCLASSES;
  void *mem = NULL;
  if (posix_memalign(&mem, 64, nd * sizeof(pai_depot_t)) != 0) { free(pool); return ENOMEM; }
  memset(mem, 0, nd * sizeof(pai_depot_t));
  pool->depots = mem;
  for (unsigned n = 0; n < nnodes; n++) {
    for (unsigned sh = 0; sh < PAI_SHARDS; sh++) {
      for (unsigned c = 0; c < PAI_NCLASSES; c++) {
        pai_depot_t *d = pai_depot_at(pool, n, sh, c);
        pai_depot_lock_init(&d->lock);
        d->cls = c;
        d->node = n;
        d->shard = sh;
      }
    }
  }
  pthread_mutex_init(&pool->lock, NULL);
  pool->max_bytes = cfg->max_bytes;
  pool->retain_bytes = cfg->retain_bytes;
  atomic_init(&pool->retain_limit, cfg->retain_bytes);
  pool->decay_ns = cfg->decay_ms > UINT64_MAX / 1000000u ? UINT64_MAX : cfg->decay_ms * 1000000u;
  pool->numa_node = cfg->numa_node;
  pool->nnodes = nnodes;
  atomic_store_explicit(&pool->park_off, nnodes > 1, memory_order_relaxed);
  pool->debug = cfg->debug | env_debug();
  pool->numa_bound = cfg->numa_node != PA_NUMA_ANY;
  atomic_init(&pool->refs, 1);
  *out = pool;
  return 0;
}

int pa_pool_create(const pa_config_t *cfg, pa_pool_t **out) {
  pa_config_t defaults;
  unsigned nnodes;
  if (out == NULL) return EINVAL;
  if (cfg == NULL) { pa_config_init(&defaults); cfg = &defaults; }
  if (cfg->debug & ~(PA_DEBUG_POISON | PA_DEBUG_CANARY | PA_DEBUG_UNPOOLED)) return EINVAL;
  int err = check_node(cfg->numa_node, &nnodes);
  if (err) return err;
  pthread_once(&g_once, global_init);
  pa_pool_t *pool;
  err = pool_alloc_struct(cfg, nnodes, &pool);
  if (err) return err;
  pthread_mutex_lock(&pai_g_lock);
  pool->id = ++g_next_id;
  pool->gnext = g_pools;
  if (g_pools) g_pools->gprev = pool;
  g_pools = pool;
  pthread_mutex_unlock(&pai_g_lock);
  *out = pool;
  return 0;
}

static void pool_free(pa_pool_t *pool) {
  pthread_mutex_lock(&pai_g_lock);
  if (pool->gprev) pool->gprev->gnext = pool->gnext;
  else g_pools = pool->gnext;
  if (pool->gnext) pool->gnext->gprev = pool->gprev;
  pthread_mutex_unlock(&pai_g_lock);
  for (unsigned i = 0; i < pai_ndepots(pool); i++)
    pthread_mutex_destroy(&pool->depots[i].lock);
  pthread_mutex_destroy(&pool->lock);
  free(pool->depots);
  free(pool);
}

void pai_pool_unref(pa_pool_t *pool) {
  if (atomic_fetch_sub(&pool->refs, 1) == 1) pool_free(pool);
}

/* CPUs this process may use, read once: the most threads that can use a pool at once. */
static uint64_t online_cpus(void) {
  static _Atomic uint64_t cached;
  uint64_t n = atomic_load_explicit(&cached, memory_order_relaxed);
  if (n == 0) {
    /* the CPUs this process may run on (a container pinned to 2 of a host's 64 has 2) */
    cpu_set_t set;
    long got = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                            : sysconf(_SC_NPROCESSORS_ONLN);
    n = got > 0 ? (uint64_t)got : 1;
    atomic_store_explicit(&cached, n, memory_order_relaxed);
  }
  return n;
}

/* pool->lock held: a thread cache came or went, and the retention bound with it: retain_bytes
 * per live cache, at least one and at most one per CPU (more threads than CPUs do not run at
 * once, and a pool that many idle threads touched once would otherwise keep 8 MiB for each).
 * True when the bound fell. */
bool pai_retain_update(pa_pool_t *pool) {
  uint64_t n = pool->ntcaches ? pool->ntcaches : 1, r = pool->retain_bytes, cpus = online_cpus();
  if (n > cpus) n = cpus;
  uint64_t limit = r > UINT64_MAX / n ? UINT64_MAX : r * n;
  uint64_t was = atomic_load_explicit(&pool->retain_limit, memory_order_relaxed);
  pai_retain_limit_store(pool, limit);
  return limit < was;
}

/* pool->lock held: a chunk has no slab left. Keep it within the retention budget, else unmap. */
void pai_pool_chunk_empty(pa_pool_t *pool, pai_chunk_t *c, bool force, uint64_t *released) {
  bool closed = atomic_load_explicit(&pool->closed, memory_order_relaxed) != 0;
  if (!force && !closed && pai_idle_bytes(pool) + c->len <= pai_retain_limit(pool)) {
    pai_retained_add(pool, c->len);
    c->empty_since = pai_idle_stamp(pool);
    return;
  }
  if (c->prev) c->prev->next = c->next;
  else pool->chunks[c->node] = c->next;
  if (c->next) c->next->prev = c->prev;
  pool->mapped -= c->len;
  pool->node_mapped[c->node] -= c->len;
  pool->trimmed += c->len;
  if (!force) pool->trims++;
  *released += c->len;
  pai_tl.unmapped += c->len;
  pai_chunk_unmap(c);
  atomic_fetch_sub(&pool->refs, 1); /* never the last: the caller holds a reference */
}

/* pool->lock held: unmap chunks that hold no slab (retained ones) while the pool keeps more
 * than `limit` idle (0: all of them). */
void pai_pool_unmap_retained(pa_pool_t *pool, uint64_t limit, uint64_t *released) {
  for (unsigned n = 0; n < pool->nnodes; n++) {
    pai_chunk_t *c = pool->chunks[n];
    while (c && (limit == 0 || pai_idle_bytes(pool) > limit)) {
      pai_chunk_t *next = c->next;
      uint32_t all = c->npages == 32 ? 0xFFFFFFFFu : ((1u << c->npages) - 1u);
      if (c->free_pages == all) {
        pai_retained_add(pool, -(uint64_t)c->len);
        pai_pool_chunk_empty(pool, c, true, released);
      }
      c = next;
    }
  }
}

/* Drop the caller's cached blocks, then every empty slab and chunk; returns the bytes given
 * back. Trim and close count it as a trim; an allocation that hit ENOSPC runs it (not counted)
 * so that its retry can map again. */
static uint64_t release_empty(pa_pool_t *pool, bool count_trim) {
  uint64_t before = pai_tl.unmapped;
  pai_tcache_flush_current(pool);
  uint64_t released = pai_tl.unmapped - before; /* slabs the flush emptied past the bound */
  for (unsigned i = 0; i < pai_ndepots(pool); i++)
    pai_depot_release_empty(pool, &pool->depots[i], true, &released);
  pthread_mutex_lock(&pool->lock);
  pai_pool_unmap_retained(pool, 0, &released);
  if (count_trim) pool->trims++;
  pthread_mutex_unlock(&pool->lock);
  return released;
}

int pa_pool_trim(pa_pool_t *pool, size_t *released_bytes) {
  if (pool == NULL) return EINVAL;
  uint64_t released = release_empty(pool, true);
  if (released_bytes) *released_bytes = (size_t)released;
  return 0;
}

int pa_pool_close_report(pa_pool_t *pool, pa_close_report_t *out) {
  pa_close_report_t rep = {0};
  if (pool == NULL) return EINVAL;
  atomic_store(&pool->closed, 1);
  atomic_store(&pool->park_off, 1);
  pai_tcache_detach_current(pool);
  pai_reclaim_caches(pool, false, 0, &rep);
  release_empty(pool, true);
  if (out) {
    pa_stats_t st;
    pa_pool_stats(pool, &st);
    rep.mapped_bytes = st.mapped_bytes;
    rep.in_use_bytes = st.in_use_bytes;
    *out = rep;
  }
  return 0;
}

int pa_pool_close(pa_pool_t *pool) { return pa_pool_close_report(pool, NULL); }

/* Empty slabs of a depot and retained chunks of the pool that have been idle for `age` ns. */
static uint64_t decay_pass(pa_pool_t *pool, uint64_t age, uint64_t now) {
  uint64_t released = 0;
  for (unsigned i = 0; i < pai_ndepots(pool); i++)
    pai_depot_release_idle(pool, &pool->depots[i], age, now, &released);
  pthread_mutex_lock(&pool->lock);
  for (unsigned n = 0; n < pool->nnodes; n++) {
    pai_chunk_t *c = pool->chunks[n];
    while (c) {
      pai_chunk_t *next = c->next;
      uint32_t all = c->npages == 32 ? 0xFFFFFFFFu : ((1u << c->npages) - 1u);
      if (c->free_pages == all && pai_idle_for(&c->empty_since, now, age)) {
        pai_retained_add(pool, -(uint64_t)c->len);
        pai_pool_chunk_empty(pool, c, true, &released);
      }
      c = next;
    }
  }
  if (released) pool->trims++;
  pthread_mutex_unlock(&pool->lock);
  return released;
}

int pa_pool_decay(pa_pool_t *pool, uint64_t max_age_ms, size_t *released_bytes) {
  if (pool == NULL) return EINVAL;
  uint64_t age = pool->decay_ns;
  if (age == 0) age = max_age_ms > UINT64_MAX / 1000000u ? UINT64_MAX : max_age_ms * 1000000u;
  pa_close_report_t rep = {0};
  uint64_t now = pai_now_ns();
  uint64_t last = atomic_load_explicit(&pool->decay_last, memory_order_relaxed);
  while (now > last && !atomic_compare_exchange_weak(&pool->decay_last, &last, now)) {
  }
  uint64_t before = pai_tl.unmapped;
  pai_reclaim_caches(pool, true, age, &rep);
  /* the idle caches' blocks may empty slabs past the retention bound, which unmap at once */
  uint64_t released = pai_tl.unmapped - before;
  released += decay_pass(pool, age, pai_now_ns());
  if (released_bytes) *released_bytes = (size_t)released;
  return 0;
}

/* A slow path's look at the clock: at most one decay pass per half decay time per pool. Runs
 * with no lock held and with the caller's cache untouched for the rest of its call. */
void pai_pool_maybe_decay(pa_pool_t *pool) {
  if (PA_LIKELY(pool->decay_ns == 0)) return;
  uint64_t now = pai_now_ns();
  uint64_t last = atomic_load_explicit(&pool->decay_last, memory_order_relaxed);
  /* another thread may have stamped a later time since our clock read: not due then */
  if (now <= last || now - last < pool->decay_ns / 2) return;
  if (!atomic_compare_exchange_strong(&pool->decay_last, &last, now)) return;
  pa_close_report_t rep = {0};
  pai_reclaim_caches(pool, true, pool->decay_ns, &rep);
  decay_pass(pool, pool->decay_ns, pai_now_ns());
}

void pa_pool_destroy(pa_pool_t *pool) {
  if (pool == NULL) return;
  pa_pool_close(pool);
  pthread_mutex_lock(&pool->lock);
  bool first = !pool->handle_dropped;
  pool->handle_dropped = 1;
  pthread_mutex_unlock(&pool->lock);
  if (first) pai_pool_unref(pool);
}

// ---- huge blocks: one mapping each ----

static int huge_alloc(pa_pool_t *pool, size_t size, size_t align, void **out) {
  if (align == 0 || (align & (align - 1)) || align > PA_MAX_ALIGN) return EINVAL;
  if (size > PAI_MAX_REQUEST) return EOVERFLOW;
  if (atomic_load_explicit(&pool->closed, memory_order_relaxed)) return ESHUTDOWN;
  size_t need = (pool->debug & PA_DEBUG_CANARY) ? size + PAI_CANARY_BYTES : size;
  size_t len = (need + PA_PAGE_ALIGN - 1) & ~(size_t)(PA_PAGE_ALIGN - 1);
  pai_chunk_t *c = NULL;
  int err = 0;
  unsigned node = pai_current_node(pool);
  pthread_mutex_lock(&pool->lock);
  if (pool->max_bytes && pool->mapped + len > pool->max_bytes) err = ENOSPC;
  else err = pai_huge_map(pool, node, need, &c);
  if (err == 0) {
    c->huge_req = size;
    atomic_store(&c->huge_live, 1);
    atomic_fetch_add(&pool->refs, 1);
    pai_note_mapped(pool, node, c->len);
    c->next = pool->huge;
    if (c->next) c->next->prev = c;
    pool->huge = c;
    pool->huge_allocs++;
    pool->huge_bytes += c->len;
    pai_note_out(pool, (int64_t)c->len);
  } else {
    pool->failed++;
  }
  pthread_mutex_unlock(&pool->lock);
  if (err) return err;
  if (pool->debug & PA_DEBUG_CANARY) memset((char *)c->base + size, PAI_CANARY_BYTE, c->len - size);
  *out = (void *)c->base;
  return 0;
}

static int huge_free(pai_chunk_t *c) {
  int expect = 1;
  if (!atomic_compare_exchange_strong(&c->huge_live, &expect, 0)) return EALREADY;
  pa_pool_t *pool = c->pool;
  int err = 0;
  if (pool->debug & PA_DEBUG_CANARY) err = pai_canary_check((void *)c->base, c->huge_req, c->len);
  atomic_fetch_add(&pool->refs, 1);
  pthread_mutex_lock(&pool->lock);
  if (c->prev) c->prev->next = c->next;
  else pool->huge = c->next;
  if (c->next) c->next->prev = c->prev;
  pool->mapped -= c->len;
  pool->node_mapped[c->node] -= c->len;
  pool->huge_frees++;
  pool->huge_bytes -= c->len;
  pai_note_out(pool, -(int64_t)c->len);
  pai_chunk_unmap(c);
  atomic_fetch_sub(&pool->refs, 1);
  pthread_mutex_unlock(&pool->lock);
  pai_pool_unref(pool);
  return err;
}

// ---- the slow paths of slab blocks ----

/* A block straight from the depot (no thread cache). */
static int direct_alloc(pa_pool_t *pool, unsigned cls, void **out) {
  uint64_t got;
  void *p;
  pai_depot_t *d = pai_depot(pool, pai_current_node(pool), cls);
  int err = pai_depot_refill(pool, d, &p, 1, &got);
  if (err) return err;
  pa_track_unpoison(p, pai_class_size[cls]);
  if (!(pool->debug & PA_DEBUG_POISON)) *(uint64_t *)p = 0;
  pai_note_out(pool, (int64_t)pai_class_size[cls]);
  atomic_fetch_add(&d->allocs, 1);
  atomic_fetch_add(&d->misses, 1);
  *out = p;
  return 0;
}

static void direct_free(pa_pool_t *pool, pai_slab_t *s, uint32_t idx, void *p) {
  atomic_fetch_add(&pool->refs, 1);
  if (atomic_load_explicit(&pool->closed, memory_order_relaxed)) pai_tcache_detach_current(pool);
  if (pool->debug & PA_DEBUG_POISON) pai_poison_fill(p, s->block_size);
  pa_track_poison(p, s->block_size);
  atomic_fetch_add(&s->depot->frees, 1);
  int64_t size = s->block_size; /* read first: once returned, the slab may be released and reused */
  pai_depot_return(s, idx, false);
  pai_note_out(pool, -size);
  pai_pool_unref(pool);
}

/* A block leaves the cache for a user: `parked` drops, and its low-water mark with it. */
static inline void parked_take(pai_tcache_t *tc, uint64_t bytes) {
  int64_t parked = pai_ld64(&tc->parked) - (int64_t)bytes;
  atomic_store_explicit(&tc->parked, parked, memory_order_relaxed);
  if (PA_UNLIKELY(parked < pai_own64(&tc->parked_lw)))
    atomic_store_explicit(&tc->parked_lw, parked, memory_order_relaxed);
}

static int cache_pop_after_refill(pai_tcache_t *tc, unsigned cls, void **out) {
  pai_tclass_t *t = &tc->cls[cls];
  void *p = t->slots[--t->n];
  parked_take(tc, pai_class_size[cls]);
  pa_track_unpoison(p, pai_class_size[cls]);
  *(uint64_t *)p = 0;
  bump(&t->misses);
  *out = p;
  return 0;
}

static int alloc_slow(pa_pool_t *pool, pai_tcache_t *tc, unsigned cls, void **out) {
  int err = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    err = tc ? pai_tcache_refill(tc, cls) : ENOENT;
    if (err == 0) {
      cache_pop_after_refill(tc, cls, out);
      pai_pool_maybe_decay(pool);
      return 0;
    }
    if (err == ENOENT) err = direct_alloc(pool, cls, out);
    if (err == 0) return 0;
    if (err != ENOSPC) break;
    release_empty(pool, false);
  }
  atomic_fetch_add(&pool->failed_fast, 1);
  return err;
}

// ---- debug modes ----

static int debug_alloc_slab(pa_pool_t *pool, size_t size, unsigned cls, void **out) {
  void *p;
  int err = direct_alloc(pool, cls, &p);
  if (err) return err;
  pai_chunk_t *c;
  pai_slab_t *s = NULL;
  uint32_t idx = 0;
  if (pai_locate(p, &c, &s, &idx) != 0 || s == NULL) return EFAULT; /* cannot happen */
  if ((pool->debug & PA_DEBUG_POISON) && pai_poison_check(p, s->block_size) != 0) {
    pai_poison_fill(p, s->block_size);
    pa_track_poison(p, s->block_size);
    atomic_fetch_add(&s->depot->frees, 1);
    pai_depot_return(s, idx, false);
    pai_note_out(pool, -(int64_t)s->block_size);
    return EILSEQ;
  }
  if (pool->debug & PA_DEBUG_CANARY) {
    s->req_sizes[idx] = (uint32_t)size;
    memset((char *)p + size, PAI_CANARY_BYTE, s->block_size - size);
  }
  *out = p;
  return 0;
}

static int debug_alloc(pa_pool_t *pool, size_t size, size_t align, void **out) {
  unsigned cls;
  if (size == 0 || align == 0 || (align & (align - 1)) || align > PA_MAX_ALIGN) return EINVAL;
  if (size > PAI_MAX_REQUEST) return EOVERFLOW;
  if (pool->debug & PA_DEBUG_UNPOOLED) return pai_unpooled_alloc(pool, size, align, out);
  size_t need = (pool->debug & PA_DEBUG_CANARY) ? size + PAI_CANARY_BYTES : size;
  int err = pai_class_for(need, align < PA_MIN_ALIGN ? PA_MIN_ALIGN : align, &cls);
  if (err == ERANGE) return huge_alloc(pool, size, align, out);
  if (err) return err;
  err = debug_alloc_slab(pool, size, cls, out);
  if (err == ENOSPC) {
    release_empty(pool, false);
    err = debug_alloc_slab(pool, size, cls, out);
  }
  if (err && err != EILSEQ) atomic_fetch_add(&pool->failed_fast, 1);
  return err;
}

static int debug_free(pa_pool_t *pool, pai_slab_t *s, uint32_t idx, void *p) {
  int err = 0;
  if (pool->debug & PA_DEBUG_CANARY) err = pai_canary_check(p, s->req_sizes[idx], s->block_size);
  direct_free(pool, s, idx, p);
  return err;
}

// ---- public block API ----

/* The class of a request the hit path serves (size 1 B..1 MiB, alignment a power of two up to
 * 64, which every class meets), else PAI_NCLASSES. A value, not an out-parameter: with no
 * address taken and every other exit a tail call, the hit path keeps no stack frame. */
static inline unsigned class_fast(size_t size, size_t align) {
  if (PA_UNLIKELY(size - 1 >= PAI_MAX_CLASS_SIZE || align - 1 >= PA_MIN_ALIGN ||
                  (align & (align - 1))))
    return PAI_NCLASSES;
  return size <= 4096 ? pai_small_lut[(size + 63) >> 6] : pai_large_lut[(size + 4095) >> 12];
}

/* The class of any request pai_class_for can place: the hit path's lookup first, the search for
 * larger alignments after it (pai_class_for handles every other case and its errors). */
static inline int class_of(size_t size, size_t align, unsigned *cls) {
  unsigned c = class_fast(size, align);
  if (PA_LIKELY(c < PAI_NCLASSES)) {
    *cls = c;
    return 0;
  }
  return pai_class_for(size, align, cls);
}

/* The calling thread is inside pa_alloc/pa_free: a reclaimer (tlcache.c) keeps off its cache.
 * The compiler barrier keeps the store before the load of pai_tl.pool (in pai_tcache); the
 * reclaimer's membarrier supplies the CPU-side fence. */
static inline void enter(void) {
  atomic_store_explicit(&pai_tl.busy, 1, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
}

static inline int leave(int rc) {
  atomic_store_explicit(&pai_tl.busy, 0, memory_order_release);
  return rc;
}

static int alloc_in(pa_pool_t *pool, size_t size, size_t align, void **out) {
  unsigned cls;
  if (PA_UNLIKELY(pool == NULL || out == NULL)) return EINVAL;
  if (PA_UNLIKELY(atomic_load_explicit(&pool->closed, memory_order_relaxed))) return ESHUTDOWN;
  if (PA_UNLIKELY(pool->debug)) return debug_alloc(pool, size, align, out);
  int err = class_of(size, align, &cls);
  if (PA_UNLIKELY(err)) return err == ERANGE ? huge_alloc(pool, size, align, out) : err;
  pai_tcache_t *tc = pai_tcache(pool);
  if (PA_LIKELY(tc != NULL)) {
    pai_tclass_t *t = &tc->cls[cls];
    if (PA_LIKELY(t->n > 0)) {
      void *p = t->slots[--t->n];
      parked_take(tc, pai_class_size[cls]);
      pa_track_unpoison(p, pai_class_size[cls]);
      *(uint64_t *)p = 0;
      bump(&t->hits);
      *out = p;
      return 0;
    }
  }
  return alloc_slow(pool, tc, cls, out);
}

/* Everything but a cache hit; out of line so that the hit path saves no registers. */
__attribute__((noinline)) static int alloc_rest(pa_pool_t *pool, size_t size, size_t align,
                                                void **out) {
  return leave(alloc_in(pool, size, align, out));
}

/* A debug pool never becomes pai_tl.pool (pai_tcache_slow refuses it), and neither does a
 * closed one (a close sets every thread's pai_tl.pool that has a cache of the pool to
 * PAI_NO_POOL, see tlcache.c reclaim_one), so the thread-local compare also rules both out. The
 * tests are those of class_fast, written out so that a failed one goes straight to alloc_rest,
 * and the tables give the class's place in the cache. Each test is an `if` of its own: in one
 * condition gcc computed the alignment test into a register and tested that again. */
int pa_alloc(pa_pool_t *pool, size_t size, size_t align, void **out) {
  enter();
  /* m = size - 1 picks the table and indexes it ((size + 63) >> 6 == (m >> 6) + 1), and is
   * out of both ranges for size 0 */
  size_t m = size - 1;
  unsigned off;
  if (PA_LIKELY(m < 4096)) off = pai_small_tcls[(m >> 6) + 1];
  else if (PA_LIKELY(m < PAI_MAX_CLASS_SIZE)) off = pai_large_tcls[(m >> 12) + 1];
  else goto rest;
  /* PA_MIN_ALIGN is what the bindings pass; any other: align - 1 shares no bit with align (a
   * power of two, or 0) nor has any at or above PA_MIN_ALIGN's (align <= 64, and not 0) */
  if (PA_UNLIKELY(align != PA_MIN_ALIGN) &&
      PA_UNLIKELY((align - 1) & (align | ~(size_t)(PA_MIN_ALIGN - 1))))
    goto rest;
  if (PA_UNLIKELY(out == NULL)) goto rest;
  /* pool is not tested for NULL: pai_tl.pool never is (PAI_NO_POOL where there is no cache) */
  if (PA_UNLIKELY(atomic_load_explicit(&pai_tl.pool, memory_order_relaxed) != pool)) goto rest;
  pai_tcache_t *tc = pai_tl.cache;
  pai_tclass_t *t = (pai_tclass_t *)((char *)tc + off); /* &tc->cls[class] */
  /* n - 1 and its sign: at most PAI_CACHE_MAX slots, so negative only for an empty class */
  uint64_t n = t->n - 1;
  /* not pai_tl.pool read again on a miss: a decay or close on another thread may have set it
   * to PAI_NO_POOL since the test above */
  if (PA_UNLIKELY((int64_t)n < 0)) goto rest;
  void *p = t->slots[n];
  t->n = n;
  parked_take(tc, t->size);
  pa_track_unpoison(p, t->size);
  *(uint64_t *)p = 0;
  bump(&t->hits);
  *out = p;
  return leave(0);
rest:
  return alloc_rest(pool, size, align, out);
}

static int free_slow(pa_pool_t *pool, pai_tcache_t *tc, pai_chunk_t *c, pai_slab_t *s,
                     uint32_t idx, void *p) {
  if (tc == NULL || atomic_load_explicit(&pool->closed, memory_order_relaxed) ||
      (pool->nnodes > 1 && (unsigned)c->node != tc->node) ||
      pai_tcache_make_room(tc, s->cls) != 0) {
    direct_free(pool, s, idx, p);
    return 0;
  }
  pai_tclass_t *t = &tc->cls[s->cls];
  *(uint64_t *)p = pai_free_marker(p);
  pa_track_poison(p, s->block_size);
  t->slots[t->n++] = p;
  pai_add64(&tc->parked, s->block_size);
  bump(&t->frees);
  pai_pool_maybe_decay(pool);
  return 0;
}

/* The page->slab memo of pa_free's hit path (pai_tl_t). Only a slab of pai_tl.pool, so that a
 * hit needs no pool compare; `epoch` was loaded before that compare (see tlcache.c, the
 * reclaim hand-off). Never a slab of a pool with several node depots (c->memo_ok clear):
 * their frees must go through free_slow (the block's node is checked there), and the hit path
 * has no other test that sends them there. */
static inline bool memo_set(uintptr_t a, const pai_chunk_t *c, pai_slab_t *s, uint64_t epoch) {
  if (PA_UNLIKELY(!c->memo_ok ||
                  s->pool != atomic_load_explicit(&pai_tl.pool, memory_order_relaxed)))
    return false;
  pai_tl.free_page = a >> PAI_PAGE_SHIFT;
  pai_tl.free_slab = s;
  pai_tl.free_t = (pai_tclass_t *)((char *)pai_tl.cache + s->tcls); /* &cache->cls[s->cls] */
  pai_tl.free_epoch = epoch;
  return true;
}

/* The slab of the page holding p, or NULL with *rc set (EFAULT, or the result of a huge or
 * unpooled free). A one-entry per-thread memo skips the registry walk for repeated pages. */
static inline pai_slab_t *free_slab_of(void *p, int *rc) {
  uintptr_t a = (uintptr_t)p;
  uint64_t epoch = atomic_load_explicit(&pai_slab_epoch, memory_order_acquire);
  if (PA_LIKELY((a >> PAI_PAGE_SHIFT) == pai_tl.free_page && epoch == pai_tl.free_epoch))
    return pai_tl.free_slab;
  pai_chunk_t *c = pai_chunk_lookup(p);
  if (PA_UNLIKELY(c == NULL || a - c->base >= c->len)) {
    *rc = pai_unpooled_any() ? pai_unpooled_free(p) : EFAULT;
    return NULL;
  }
  if (PA_UNLIKELY(c->kind != PAI_CHUNK_SLABS)) {
    *rc = a == c->base ? huge_free(c) : EFAULT;
    return NULL;
  }
  unsigned slot = atomic_load_explicit(&c->page_slab[(a - c->base) >> PAI_PAGE_SHIFT],
                                       memory_order_relaxed);
  if (PA_UNLIKELY(slot == PAI_NO_SLAB)) {
    *rc = EFAULT;
    return NULL;
  }
  memo_set(a, c, &c->slabs[slot], epoch);
  return &c->slabs[slot];
}

/* Park a checked block in the thread cache when its class has room and the cache's byte budget
 * allows; false sends the caller down the slow path. Both free paths share it so that the marker,
 * the poison and the parked count are written in one order only. */
static inline bool cache_push(pai_tcache_t *tc, pai_tclass_t *t, pai_slab_t *s, void *p,
                              uint64_t marker) {
  /* the count after the push: the slot is n - 1, no copy of n kept; compared with cap in 32
   * bits (n <= PAI_CACHE_MAX + 1), so cap needs no widening load of its own */
  uint64_t n = t->n + 1;
  void **slots = t->slots;
  int64_t parked = pai_ld64(&tc->parked) + (int64_t)t->size;
  if (PA_UNLIKELY((uint32_t)n > t->cap || (uint64_t)parked > tc->budget)) return false;
  /* the block's word first, with the cache's fields already loaded (the compiler cannot tell
   * them apart): written last, after the cache's stores, two threads freeing 4 KiB blocks (all
   * at one offset in their pages) took 1-1.5 ns more per pair */
  *(uint64_t *)p = marker;
  pa_track_poison(p, s->block_size);
  slots[n - 1] = p;
  t->n = n;
  atomic_store_explicit(&tc->parked, parked, memory_order_relaxed);
  bump(&t->frees);
  return true;
}

static int free_in(void *p) {
  uintptr_t a = (uintptr_t)p;
  int rc = 0;
  pai_slab_t *s = free_slab_of(p, &rc);
  if (PA_UNLIKELY(s == NULL)) return rc;
  bool exact;
  uint32_t idx = pai_slab_index(s, a, &exact);
  if (PA_UNLIKELY(!exact)) return EFAULT;
  /* ASan builds poison free blocks: only a block's start says "freed already", an address
   * inside one is not a block at all */
  if (PA_UNLIKELY(pa_track_is_poisoned(p))) return EALREADY;
  /* read only once p is known to start a block of a live slab of ours: an interior pointer may
   * be misaligned, or end the slab's last page */
  uint64_t word = *(const uint64_t *)p;
  if (PA_UNLIKELY(!pai_slab_is_out(s, idx))) return EALREADY;
  pa_pool_t *pool = s->pool;
  if (PA_UNLIKELY(pool->debug)) return debug_free(pool, s, idx, p);
  uint64_t marker = pai_free_marker(p);
  if (PA_UNLIKELY(word == marker)) return EALREADY;
  pai_tcache_t *tc = pai_tcache(pool);
  if (PA_LIKELY(tc != NULL && !atomic_load_explicit(&pool->park_off, memory_order_relaxed))) {
    pai_tclass_t *t = (pai_tclass_t *)((char *)tc + s->tcls); /* &tc->cls[s->cls] */
    if (PA_LIKELY(cache_push(tc, t, s, p, marker))) return 0;
  }
  return free_slow(pool, tc, s->chunk, s, idx, p);
}

__attribute__((noinline)) static int free_rest(void *p) { return leave(free_in(p)); }

/* The memo set for the slab of the page holding p, through the registry; false for anything
 * else (huge, unpooled, foreign, a slab of another pool than pai_tl.pool or of a pool with
 * several node depots). */
static inline bool memo_fill(uintptr_t a, uint64_t epoch) {
  pai_chunk_t *c = pai_chunk_lookup((const void *)a);
  if (PA_UNLIKELY(c == NULL || a - c->base >= c->len || c->kind != PAI_CHUNK_SLABS ||
                  !c->memo_ok))
    return false;
  unsigned slot = atomic_load_explicit(&c->page_slab[(a - c->base) >> PAI_PAGE_SHIFT],
                                       memory_order_relaxed);
  if (PA_UNLIKELY(slot == PAI_NO_SLAB)) return false;
  pai_slab_t *s = &c->slabs[slot];
  /* one register for s: without this gcc computed the slab's address twice (4 instructions
   * more on every 64 KiB free, which always comes here: every such block has a page of its own) */
  __asm__("" : "+r"(s));
  if (PA_UNLIKELY(s->pool != atomic_load_explicit(&pai_tl.pool, memory_order_relaxed)))
    return false;
  pai_tl.free_page = a >> PAI_PAGE_SHIFT;
  pai_tl.free_slab = s;
  pai_tl.free_t = (pai_tclass_t *)((char *)pai_tl.cache + s->tcls);
  pai_tl.free_epoch = epoch;
  return true;
}

/* The cache push; anything else (including every error) goes to free_rest, which starts over
 * and tells the errors apart, so each test here only has to fail whenever one there would. The
 * memo names only slabs of pai_tl.pool, which is never a closed or debug pool (see pa_alloc),
 * and never one of a pool with several nodes, so neither the pool nor `park_off` needs a test
 * here. */
int pa_free(void *p) {
  enter();
  uintptr_t a = (uintptr_t)p;
  uint64_t epoch = atomic_load_explicit(&pai_slab_epoch, memory_order_acquire);
  if (PA_UNLIKELY((a >> PAI_PAGE_SHIFT) != pai_tl.free_page || epoch != pai_tl.free_epoch)) {
    if (PA_UNLIKELY(!memo_fill(a, epoch))) return free_rest(p);
  }
  pai_slab_t *s = pai_tl.free_slab;
  pai_tclass_t *t = pai_tl.free_t;
  uint64_t lo, idx = pai_slab_div(a - s->base, s->div_magic, &lo);
  uint64_t marker = pai_free_marker(p);
  /* No idx < nblocks test: p lies in one of the slab's pages, so idx < PAI_MAX_BLOCKS, and the
   * bits past nblocks are never set, so a slab's tail fails the bitmap test (free_in then says
   * EFAULT). The mask keeps the read inside the bitmap all the same when a misuse races with
   * the slab's release and reads its fields half rewritten (a descriptor is never unmapped).
   * The block's first word is read only once p is known to start a block. */
  const _Atomic uint64_t *out = s->out; /* indexed through a pointer: gcc then folds the
                                          * array's offset into the load's address */
  uint64_t word = pai_out_word(out, idx);
  if (PA_LIKELY(lo < s->div_magic && !pa_track_is_poisoned(p) && ((word >> (idx & 63)) & 1) &&
                *(const uint64_t *)p != marker)) {
    if (PA_LIKELY(cache_push(pai_tl.cache, t, s, p, marker))) return leave(0);
  }
  return free_rest(p);
}

int pa_alloc_batch(pa_pool_t *pool, size_t size, size_t align, size_t n, void **out) {
  if (pool == NULL || (out == NULL && n > 0)) return EINVAL;
  if (n > 0 && size > SIZE_MAX / n) return EOVERFLOW;
  for (size_t i = 0; i < n; i++) {
    int err = pa_alloc(pool, size, align, &out[i]);
    if (err) {
      while (i > 0) pa_free(out[--i]);
      return err;
    }
  }
  return 0;
}

int pa_free_batch(void *const *ptrs, size_t n, size_t *freed) {
  size_t done = 0;
  int err = 0;
  if (ptrs == NULL && n > 0) err = EINVAL;
  while (err == 0 && done < n) {
    err = pa_free(ptrs[done]);
    if (err == 0 || err == EILSEQ) done++;
  }
  if (freed) *freed = done;
  return err;
}

/* 0 when p is the start of a block a user holds now. */
static int live_block(const void *p, pai_chunk_t **c, pai_slab_t **s, uint32_t *idx) {
  if (pai_locate(p, c, s, idx) != 0) return EFAULT;
  if (*s == NULL) return atomic_load(&(*c)->huge_live) ? 0 : EALREADY;
  if (!pai_slab_is_out(*s, *idx) || pa_track_is_poisoned(p)) return EALREADY;
  if (!(*c)->pool->debug && *(const uint64_t *)p == pai_free_marker(p)) return EALREADY;
  return 0;
}

int pa_block_size(const void *p, size_t *out) {
  pai_chunk_t *c;
  pai_slab_t *s;
  uint32_t idx;
  if (p == NULL || out == NULL) return EINVAL;
  int err = live_block(p, &c, &s, &idx);
  if (err == EFAULT && pai_unpooled_any()) return pai_unpooled_lookup(p, NULL, out);
  if (err) return err;
  bool canary = (c->pool->debug & PA_DEBUG_CANARY) != 0;
  if (s == NULL) *out = canary ? c->huge_req : c->len;
  else *out = canary ? s->req_sizes[idx] : s->block_size;
  return 0;
}

int pa_block_pool(const void *p, pa_pool_t **out) {
  pai_chunk_t *c;
  pai_slab_t *s;
  uint32_t idx;
  size_t size;
  if (p == NULL || out == NULL) return EINVAL;
  int err = live_block(p, &c, &s, &idx);
  if (err == EFAULT && pai_unpooled_any()) return pai_unpooled_lookup(p, out, &size);
  if (err) return err;
  *out = c->pool;
  return 0;
}

// ---- size classes ----

unsigned pa_class_count(void) { return PAI_NCLASSES; }

int pa_class_info(unsigned cls, size_t *block_size, size_t *slab_bytes) {
  if (cls >= PAI_NCLASSES) return EINVAL;
  if (block_size) *block_size = pai_class_size[cls];
  if (slab_bytes) *slab_bytes = pai_slab_bytes(cls);
  return 0;
}

int pa_size_class(size_t size, size_t align, unsigned *cls) {
  if (cls == NULL) return EINVAL;
  if (align && align < PA_MIN_ALIGN && !(align & (align - 1))) align = PA_MIN_ALIGN;
  return pai_class_for(size, align, cls);
}

// ---- fork ----

static void fork_prepare(void) {
  pthread_mutex_lock(&pai_g_lock);
  pai_tcache_fork_lock();
  for (pa_pool_t *pool = g_pools; pool; pool = pool->gnext) {
    for (unsigned i = 0; i < pai_ndepots(pool); i++)
      pthread_mutex_lock(&pool->depots[i].lock);
    pthread_mutex_lock(&pool->lock);
  }
  pai_registry_fork_lock();
  pai_unpooled_fork_lock();
}

static void fork_parent(void) {
  pai_unpooled_fork_unlock(0);
  pai_registry_fork_unlock(0);
  for (pa_pool_t *pool = g_pools; pool; pool = pool->gnext) {
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = pai_ndepots(pool); i > 0; i--)
      pthread_mutex_unlock(&pool->depots[i - 1].lock);
  }
  pai_tcache_fork_parent();
  pthread_mutex_unlock(&pai_g_lock);
}

static void fork_child(void) {
  pai_unpooled_fork_unlock(1);
  pai_registry_fork_unlock(1);
  for (pa_pool_t *pool = g_pools; pool; pool = pool->gnext) {
    pthread_mutex_init(&pool->lock, NULL);
    for (unsigned i = 0; i < pai_ndepots(pool); i++)
      pai_depot_lock_init(&pool->depots[i].lock);
    /* a fork between close's two stores must not leave a closed pool parking frees */
    atomic_store_explicit(&pool->park_off,
                          atomic_load_explicit(&pool->closed, memory_order_relaxed) ||
                              pool->nnodes > 1,
                          memory_order_relaxed);
  }
  pthread_mutex_init(&pai_g_lock, NULL);
  pai_tcache_fork_child();
}

// ---- the function table for other extensions ----

static const pa_api_t api_table = {PA_API_VERSION, pa_alloc,      pa_free,      pa_alloc_batch,
                                   pa_free_batch,  pa_block_size, pa_block_pool, pa_pool_stats};

const pa_api_t *pa_api(void) { return &api_table; }
