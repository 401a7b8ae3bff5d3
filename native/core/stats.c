/* SPDX-License-Identifier: MIT */
/* --- stats.c: statistics snapshots and the structural check ---------------------------------
 *
 * Counters live where they are written without sharing: thread caches count their own hits,
 * allocations and frees (relaxed atomics written by the owner only), depots count uncached
 * traffic and the totals of retired caches. A snapshot sums them; at a quiet moment
 * allocs - frees == in_use_blocks exactly, while threads run it is a close estimate.
 *
 * Lock order: a snapshot takes each depot lock alone, then pool->lock alone (never nested), so
 * it can run beside any allocation.
 * ------------------------------------------------------------------------------------------- */
#include <string.h>

#include "internal.h"
#include "track.h"

typedef struct class_sum_s {
  uint64_t slabs, out, allocs, frees, hits, misses, exchanges;
} class_sum_t;

static uint64_t ld(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

/* pool->lock held. */
static void sum_caches(pa_pool_t *pool, unsigned cls, class_sum_t *sum) {
  for (pai_tcache_t *tc = pool->tcaches; tc; tc = tc->pnext) {
    pai_tclass_t *t = &tc->cls[cls];
    sum->allocs += ld(&t->hits) + ld(&t->misses); /* every cached allocation is one of them */
    sum->frees += ld(&t->frees);
    sum->hits += ld(&t->hits);
    sum->misses += ld(&t->misses);
    sum->exchanges += ld(&t->exchanges);
  }
}

static void sum_depots(pa_pool_t *pool, unsigned cls, class_sum_t *sum) {
  for (unsigned n = 0; n < pool->nnodes * PAI_SHARDS; n++) {
    pai_depot_t *d = &pool->depots[n * PAI_NCLASSES + cls];
    pthread_mutex_lock(&d->lock);
    sum->slabs += d->nslabs;
    sum->out += d->out_blocks;
    pthread_mutex_unlock(&d->lock);
    sum->allocs += ld(&d->allocs);
    sum->frees += ld(&d->frees);
    sum->hits += ld(&d->hits);
    sum->misses += ld(&d->misses);
    sum->exchanges += ld(&d->exchanges);
  }
}

static void class_sum(pa_pool_t *pool, unsigned cls, class_sum_t *sum) {
  memset(sum, 0, sizeof *sum);
  sum_depots(pool, cls, sum);
  pthread_mutex_lock(&pool->lock);
  sum_caches(pool, cls, sum);
  pthread_mutex_unlock(&pool->lock);
}

static uint64_t in_use_of(const class_sum_t *s) {
  return s->allocs > s->frees ? s->allocs - s->frees : 0;
}

int pa_pool_class_stats(pa_pool_t *pool, unsigned cls, pa_class_stats_t *out) {
  class_sum_t s;
  if (pool == NULL || out == NULL || cls >= PAI_NCLASSES) return EINVAL;
  class_sum(pool, cls, &s);
  uint64_t per_slab = pai_slab_bytes(cls) / pai_class_size[cls], in_use = in_use_of(&s);
  uint64_t total = s.slabs * per_slab;
  *out = (pa_class_stats_t){.block_size = pai_class_size[cls],
                            .slab_bytes = pai_slab_bytes(cls),
                            .slabs = s.slabs,
                            .in_use_blocks = in_use,
                            .free_blocks = total > in_use ? total - in_use : 0,
                            .allocs = s.allocs,
                            .frees = s.frees,
                            .cache_hits = s.hits,
                            .cache_misses = s.misses,
                            .depot_exchanges = s.exchanges};
  return 0;
}

static void add_pool_fields(pa_pool_t *pool, pa_stats_t *out) {
  pthread_mutex_lock(&pool->lock);
  out->mapped_bytes = pool->mapped;
  out->mapped_peak = pool->mapped_peak;
  out->in_use_bytes += pool->huge_bytes + pool->unpooled_bytes;
  out->in_use_blocks += (pool->huge_allocs - pool->huge_frees) +
                        (pool->unpooled_allocs - pool->unpooled_frees);
  out->allocs += pool->huge_allocs + pool->unpooled_allocs;
  out->frees += pool->huge_frees + pool->unpooled_frees;
  out->trims = pool->trims;
  out->trimmed_bytes = pool->trimmed;
  out->failed_allocs = pool->failed + ld(&pool->failed_fast);
  out->huge_allocs = pool->huge_allocs;
  out->numa_bound = pool->numa_bound;
  pthread_mutex_unlock(&pool->lock);
}

int pa_pool_stats(pa_pool_t *pool, pa_stats_t *out) {
  if (pool == NULL || out == NULL) return EINVAL;
  memset(out, 0, sizeof *out);
  for (unsigned c = 0; c < PAI_NCLASSES; c++) {
    class_sum_t s;
    class_sum(pool, c, &s);
    uint64_t in_use = in_use_of(&s);
    out->in_use_blocks += in_use;
    out->in_use_bytes += in_use * pai_class_size[c];
    out->allocs += s.allocs;
    out->frees += s.frees;
    out->cache_hits += s.hits;
    out->cache_misses += s.misses;
    out->depot_exchanges += s.exchanges;
  }
  add_pool_fields(pool, out);
  /* every cache's swing since its last sync, on top of what all of them synced */
  pthread_mutex_lock(&pool->lock);
  /* in this order, against the owners' publishing order (pai_tcache_sync_live): a view
   * caught half-way can only come out low. base is read on both sides of parked_lw, since
   * a rise publishes parked_lw first and a fall base first. */
  int64_t candidate = atomic_load_explicit(&pool->live_synced, memory_order_acquire);
  for (pai_tcache_t *tc = pool->tcaches; tc; tc = tc->pnext) {
    int64_t at_sync = atomic_load_explicit(&tc->live_at_sync, memory_order_acquire);
    int64_t base = atomic_load_explicit(&tc->base, memory_order_acquire);
    int64_t low = atomic_load_explicit(&tc->parked_lw, memory_order_acquire);
    int64_t base2 = atomic_load_explicit(&tc->base, memory_order_acquire);
    candidate += (base2 < base ? base2 : base) - low - at_sync;
  }
  pthread_mutex_unlock(&pool->lock);
  pai_peak_candidate(pool, candidate);
  uint64_t peak = ld(&pool->use_peak);
  out->in_use_peak = peak > out->in_use_bytes ? peak : out->in_use_bytes;
  out->numa_node = pool->numa_node;
  out->closed = (uint32_t)atomic_load(&pool->closed);
  out->debug = pool->debug;
  return 0;
}

/* The pool's depot-set index for an OS node number, or -1. */
static int node_index(const pa_pool_t *pool, int node) {
  if (pool->numa_node == PA_NUMA_LOCAL) return node >= 0 && (unsigned)node < pool->nnodes ? node : -1;
  if (pool->numa_node >= 0) return node == pool->numa_node ? 0 : -1;
  return node == 0 ? 0 : -1;
}

int pa_pool_node_stats(pa_pool_t *pool, int node, pa_stats_t *out) {
  if (pool == NULL || out == NULL) return EINVAL;
  int idx = node_index(pool, node);
  if (idx < 0) return ENODEV;
  memset(out, 0, sizeof *out);
  for (unsigned sh = 0; sh < PAI_SHARDS; sh++) {
    for (unsigned c = 0; c < PAI_NCLASSES; c++) {
      pai_depot_t *d = pai_depot_at(pool, (unsigned)idx, sh, c);
      pthread_mutex_lock(&d->lock);
      out->in_use_blocks += d->out_blocks;
      out->in_use_bytes += d->out_blocks * pai_class_size[c];
      pthread_mutex_unlock(&d->lock);
    }
  }
  pthread_mutex_lock(&pool->lock);
  for (pai_chunk_t *c = pool->huge; c; c = c->next) {
    if (c->node != idx) continue;
    out->in_use_blocks++;
    out->in_use_bytes += c->len;
  }
  out->mapped_bytes = pool->node_mapped[idx];
  out->mapped_peak = pool->node_mapped_peak[idx];
  out->numa_bound = pool->numa_bound;
  pthread_mutex_unlock(&pool->lock);
  out->in_use_peak = out->in_use_bytes;
  out->numa_node = node;
  out->closed = (uint32_t)atomic_load(&pool->closed);
  out->debug = pool->debug;
  return 0;
}

// ---- the check ----

static unsigned out_count(const pai_slab_t *s) {
  unsigned n = 0;
  for (unsigned w = 0; w < PAI_BITMAP_WORDS; w++)
    n += (unsigned)__builtin_popcountll(atomic_load_explicit(&s->out[w], memory_order_relaxed));
  return n;
}

/* Debug patterns of one slab: poison of free blocks, canaries of held ones. */
static int check_patterns(const pa_pool_t *pool, const pai_slab_t *s) {
  for (uint32_t i = 0; i < s->nblocks; i++) {
    void *p = (void *)(s->base + (uintptr_t)i * s->block_size);
    bool out = pai_slab_is_out(s, i);
    int err = 0;
    if (!out && (pool->debug & PA_DEBUG_POISON)) {
      pa_track_unpoison(p, s->block_size);
      err = pai_poison_check(p, s->block_size);
      pa_track_poison(p, s->block_size);
    } else if (out && (pool->debug & PA_DEBUG_CANARY) && s->req_sizes) {
      err = pai_canary_check(p, s->req_sizes[i], s->block_size);
    }
    if (err) return err;
  }
  return 0;
}

static int check_slab(const pa_pool_t *pool, const pai_depot_t *d, const pai_slab_t *s,
                      bool partial) {
  if (s->depot != d || s->cls != d->cls || s->nfree > s->nblocks) return EFAULT;
  if (out_count(s) != s->nblocks - s->nfree) return EFAULT;
  if (partial != (s->nfree > 0) || partial != (s->on_partial != 0)) return EFAULT;
  for (unsigned i = 0; i < s->npages; i++)
    if (atomic_load(&s->chunk->page_slab[s->first_page + i]) != s->first_page) return EFAULT;
  return pool->debug ? check_patterns(pool, s) : 0;
}

static int check_depot(const pa_pool_t *pool, pai_depot_t *d) {
  int err = 0, pattern = 0;
  uint64_t slabs = 0, empty = 0, out = 0;
  pthread_mutex_lock(&d->lock);
  for (int list = 0; list < 2 && err != EFAULT; list++) {
    for (pai_slab_t *s = list ? d->full : d->partial; s && err != EFAULT; s = s->next) {
      int e = check_slab(pool, d, s, list == 0);
      if (e == EILSEQ) pattern = EILSEQ;
      else if (e) err = e;
      slabs++;
      empty += s->nfree == s->nblocks;
      out += s->nblocks - s->nfree;
    }
  }
  if (!err && (slabs != d->nslabs || empty != d->empty_slabs || out != d->out_blocks))
    err = EFAULT;
  pthread_mutex_unlock(&d->lock);
  return err ? err : pattern;
}

static int check_huge(pa_pool_t *pool) {
  int err = 0;
  pthread_mutex_lock(&pool->lock);
  for (pai_chunk_t *c = pool->huge; c && !err; c = c->next)
    if (pool->debug & PA_DEBUG_CANARY) err = pai_canary_check((void *)c->base, c->huge_req, c->len);
  pthread_mutex_unlock(&pool->lock);
  return err;
}

int pa_pool_check(pa_pool_t *pool) {
  if (pool == NULL) return EINVAL;
  int pattern = 0;
  for (unsigned i = 0; i < pai_ndepots(pool); i++) {
    int err = check_depot(pool, &pool->depots[i]);
    if (err == EFAULT) return EFAULT;
    if (err) pattern = err;
  }
  int err = check_huge(pool);
  if (!err) err = pai_unpooled_check(pool);
  return pattern ? pattern : err;
}
