/* SPDX-License-Identifier: MIT */
/* --- slab.c: size classes, slab carving, the per-class depot -------------------------------
 *
 * Size classes: multiples of 64 bytes up to 4 KiB (four per doubling from 256 B), then
 * multiples of 4 KiB (so that every block of 4 KiB or more is page aligned) up to 64 KiB, then
 * four per doubling up to 1 MiB. docs/design.md "Size classes" gives the waste bound per range.
 * A block's address is slab base + i * block_size and slab bases are 64 KiB aligned, so a class
 * serves alignment `a` exactly when a divides its block size.
 *
 * A depot (one per pool, node and class) owns that class's slabs: a partial list (some blocks
 * in the slab) and a full list. Thread caches take and give back whole batches (tlcache.c);
 * when caching is off (debug modes, tiny pools) blocks go straight through the depot.
 *
 * Retention: empty slabs beyond one spare per depot stay within pool->retain_limit (retain_bytes
 * per live thread cache), reserved through pool->idle_slab_bytes a few slabs ahead (the depot's
 * idle_credit); a depot short of budget asks for other classes' idle slabs to be evicted
 * (evict_idle), run once its lock is dropped; a cache that goes gives back what its thread's
 * share kept over the smaller bound (pai_retain_fit).
 *
 * Lock order / who may touch what (see internal.h for the whole order):
 *   depot->lock guards the depot's lists and counters and every field of its slabs;
 *   it is taken before pool->lock (to carve a new slab or give pages back). Two depot locks are
 *   never held together (adoption trylocks the other after dropping its own; eviction runs
 *   with none held and takes one at a time).
 *   The `out` bitmap is also read without the lock by pa_free's double-free check: a block a
 *   user legitimately holds has its bit set and nobody else may change that bit.
 * ------------------------------------------------------------------------------------------- */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "track.h"

const uint32_t pai_class_size[PAI_NCLASSES] = {
    64,     128,    192,    256,    320,    384,    448,    512,    640,    768,
    896,    1024,   1280,   1536,   1792,   2048,   2560,   3072,   3584,   4096,
    8192,   12288,  16384,  20480,  24576,  28672,  32768,  40960,  49152,  57344,
    65536,  81920,  98304,  114688, 131072, 163840, 196608, 229376, 262144, 327680,
    393216, 458752, 524288, 655360, 786432, 917504, 1048576};

uint8_t pai_small_lut[65];
_Atomic uint64_t pai_slab_epoch = 1;
uint8_t pai_large_lut[257];
uint16_t pai_small_tcls[65], pai_large_tcls[257];

/* Smallest class whose block holds `size` bytes. */
static unsigned class_scan(size_t size) {
  unsigned c = 0;
  while (c < PAI_NCLASSES && pai_class_size[c] < size) c++;
  return c;
}

__attribute__((constructor)) static void class_tables_init(void) {
  for (unsigned i = 0; i <= 64; i++) pai_small_lut[i] = (uint8_t)class_scan((size_t)i << 6);
  for (unsigned i = 0; i <= 256; i++) pai_large_lut[i] = (uint8_t)class_scan((size_t)i << 12);
  for (unsigned i = 0; i <= 64; i++) pai_small_tcls[i] = pai_tcls_offset(pai_small_lut[i]);
  for (unsigned i = 0; i <= 256; i++) pai_large_tcls[i] = pai_tcls_offset(pai_large_lut[i]);
}

size_t pai_slab_bytes(unsigned cls) {
  size_t bs = pai_class_size[cls];
  if (bs <= 8192) return PAI_PAGE_SIZE;
  size_t want = (8 * bs + PAI_PAGE_SIZE - 1) & ~(PAI_PAGE_SIZE - 1);
  return want > PAI_CHUNK_SIZE ? PAI_CHUNK_SIZE : want;
}

/* 0, EINVAL (bad alignment or size 0), ERANGE (above the largest class). */
int pai_class_for(size_t size, size_t align, unsigned *cls) {
  if (size == 0 || align == 0 || (align & (align - 1)) || align > PA_MAX_ALIGN) return EINVAL;
  if (size > PAI_MAX_CLASS_SIZE) return ERANGE;
  unsigned c = size <= 4096 ? pai_small_lut[(size + 63) >> 6] : pai_large_lut[(size + 4095) >> 12];
  while (c < PAI_NCLASSES && (pai_class_size[c] & (align - 1))) c++;
  if (c >= PAI_NCLASSES) return ERANGE;
  *cls = c;
  return 0;
}

// ---- one slab ----

/* Every free block carries its free marker (pai_free_marker) from the moment its slab is carved
 * until pa_alloc hands it out; pa_free writes it back. So a block moved between slab and caches
 * is never touched, and a stale pointer into a fresh slab is still caught as a double free. */
static void mark_all_free(pai_slab_t *s) {
  for (uint32_t i = 0; i < s->nblocks; i++) {
    void *p = (void *)(s->base + (uintptr_t)i * s->block_size);
    *(uint64_t *)p = pai_free_marker(p);
  }
}

int pai_slab_init(pai_slab_t *s, pai_chunk_t *c, unsigned first_page, unsigned cls,
                  pai_depot_t *d, unsigned debug) {
  size_t bytes = pai_slab_bytes(cls);
  memset(s, 0, sizeof *s);
  s->base = c->base + ((uintptr_t)first_page << PAI_PAGE_SHIFT);
  s->block_size = pai_class_size[cls];
  s->nblocks = (uint32_t)(bytes / s->block_size);
  s->nfree = s->nblocks;
  s->cls = (uint16_t)cls;
  s->tcls = pai_tcls_offset(cls);
  s->div_magic = UINT64_MAX / s->block_size + 1; /* ceil(2^64 / block_size): pai_slab_div */
  s->pool = c->pool;
  s->depot = d;
  s->chunk = c;
  s->first_page = (uint16_t)first_page;
  s->npages = (uint16_t)(bytes >> PAI_PAGE_SHIFT);
  if (debug & PA_DEBUG_CANARY) {
    s->req_sizes = calloc(s->nblocks, sizeof(uint32_t));
    if (s->req_sizes == NULL) return ENOMEM;
  }
  if (debug & PA_DEBUG_POISON) pai_poison_fill((void *)s->base, (size_t)s->nblocks * s->block_size);
  else mark_all_free(s);
  pa_track_poison((void *)s->base, bytes);
  for (unsigned i = 0; i < s->npages; i++)
    atomic_store_explicit(&c->page_slab[first_page + i], (uint8_t)first_page, memory_order_release);
  return 0;
}

void pai_slab_fini(pai_slab_t *s) {
  free(s->req_sizes);
  s->req_sizes = NULL;
  pa_track_unpoison((void *)s->base, (size_t)s->npages << PAI_PAGE_SHIFT);
}

/* Move up to n free blocks out of the slab into out[]. depot->lock held. */
unsigned pai_slab_take(pai_slab_t *s, void **out, unsigned n) {
  unsigned got = 0;
  for (unsigned w = 0; w < PAI_BITMAP_WORDS && got < n && s->nfree > got; w++) {
    uint64_t bits = atomic_load_explicit(&s->out[w], memory_order_relaxed);
    uint64_t valid = (w + 1) * 64 <= s->nblocks ? ~0ull
                     : (w * 64 >= s->nblocks ? 0 : ((1ull << (s->nblocks - w * 64)) - 1));
    uint64_t freeb = ~bits & valid;
    while (freeb && got < n) {
      unsigned b = (unsigned)__builtin_ctzll(freeb);
      freeb &= freeb - 1;
      bits |= 1ull << b;
      out[got++] = (void *)(s->base + (uintptr_t)(w * 64 + b) * s->block_size);
    }
    atomic_store_explicit(&s->out[w], bits, memory_order_relaxed);
  }
  s->nfree -= got;
  return got;
}

void pai_slab_put(pai_slab_t *s, uint32_t idx) {
  uint64_t bits = atomic_load_explicit(&s->out[idx >> 6], memory_order_relaxed);
  atomic_store_explicit(&s->out[idx >> 6], bits & ~(1ull << (idx & 63)), memory_order_relaxed);
  s->nfree++;
}

// ---- depot lists ----

static void list_unlink(pai_slab_t **head, pai_slab_t *s) {
  if (s->prev) s->prev->next = s->next;
  else *head = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

static void list_push(pai_slab_t **head, pai_slab_t *s, bool tail) {
  s->prev = NULL;
  s->next = NULL;
  if (*head == NULL) { *head = s; return; }
  if (!tail) { s->next = *head; (*head)->prev = s; *head = s; return; }
  pai_slab_t *t = *head;
  while (t->next) t = t->next;
  t->next = s;
  s->prev = t;
}

static void move_to_full(pai_depot_t *d, pai_slab_t *s) {
  list_unlink(&d->partial, s);
  s->on_partial = 0;
  list_push(&d->full, s, false);
}

static void move_to_partial(pai_depot_t *d, pai_slab_t *s) {
  list_unlink(&d->full, s);
  s->on_partial = 1;
  list_push(&d->partial, s, false);
}

// ---- carving new slabs (depot->lock held; takes pool->lock) ----

static size_t chunk_len_for(pa_pool_t *pool, size_t need) {
  if (pool->max_bytes == 0) return PAI_CHUNK_SIZE;
  if (pool->mapped >= pool->max_bytes) return 0;
  size_t room = (size_t)(pool->max_bytes - pool->mapped) & ~(PAI_PAGE_SIZE - 1);
  size_t len = room < PAI_CHUNK_SIZE ? room : PAI_CHUNK_SIZE;
  return len >= need ? len : 0;
}

void pai_note_mapped(pa_pool_t *pool, unsigned node, size_t len) {
  pool->mapped += len;
  if (pool->mapped > pool->mapped_peak) pool->mapped_peak = pool->mapped;
  pool->node_mapped[node] += len;
  if (pool->node_mapped[node] > pool->node_mapped_peak[node])
    pool->node_mapped_peak[node] = pool->node_mapped[node];
}

static bool chunk_is_empty(const pai_chunk_t *c) {
  uint32_t all = c->npages == 32 ? 0xFFFFFFFFu : ((1u << c->npages) - 1u);
  return c->free_pages == all;
}

/* pool->lock held: pages for one slab of `npages`, from a chunk of the node or a new one.
 * The pages the depot last released come first, if they are still free: when two threads
 * swing past the retention budget, each releases slabs and carves again, and pages released by
 * one and carved by the other made every block's first write a miss on a line the first thread
 * still held (the chunk is looked up in the pool's list, never through the stale pointer). */
static int find_pages(pa_pool_t *pool, pai_depot_t *d, unsigned npages, pai_chunk_t **out,
                      unsigned *first) {
  unsigned node = d->node;
  for (int pass = d->last_chunk ? 0 : 1; pass < 2; pass++) {
    for (pai_chunk_t *c = pool->chunks[node]; c; c = c->next) {
      if (pass == 0 && c != d->last_chunk) continue;
      bool was_empty = chunk_is_empty(c);
      int err = pass == 0 ? pai_chunk_take_pages_at(c, d->last_page, npages)
                          : pai_chunk_take_pages(c, npages, first);
      if (err == 0) {
        if (pass == 0) *first = d->last_page;
        if (was_empty) pai_retained_add(pool, -(uint64_t)c->len);
        *out = c;
        return 0;
      }
      if (pass == 0) break;
    }
  }
  size_t len = chunk_len_for(pool, (size_t)npages << PAI_PAGE_SHIFT);
  if (len == 0) return ENOSPC;
  pai_chunk_t *c;
  int err = pai_chunk_map(pool, node, len, &c);
  if (err) return err;
  PAI_EV(3);
  atomic_fetch_add(&pool->refs, 1);
  pai_note_mapped(pool, node, len);
  c->next = pool->chunks[node];
  if (c->next) c->next->prev = c;
  pool->chunks[node] = c;
  err = pai_chunk_take_pages(c, npages, first);
  *out = c;
  return err;
}

static int new_slab(pa_pool_t *pool, pai_depot_t *d, pai_slab_t **out) {
  unsigned npages = (unsigned)(pai_slab_bytes(d->cls) >> PAI_PAGE_SHIFT), first;
  pai_chunk_t *c;
  pthread_mutex_lock(&pool->lock);
  int err = find_pages(pool, d, npages, &c, &first);
  if (err == 0) {
    err = pai_slab_init(&c->slabs[first], c, first, d->cls, d, pool->debug);
    if (err) pai_chunk_give_pages(c, first, npages);
  }
  pthread_mutex_unlock(&pool->lock);
  if (err) return err;
  pai_slab_t *s = &c->slabs[first];
  PAI_EV(0);
  s->on_partial = 1;
  list_push(&d->partial, s, true);
  d->nslabs++;
  d->empty_slabs++;
  s->empty_since = pai_idle_stamp(pool);
  *out = s;
  return 0;
}

// ---- depot traffic ----

/* Depot locks are held for one batch (a few hundred ns), so a thread that finds one taken does
 * better spinning briefly than sleeping in the kernel: with two threads trading 64 KiB batches
 * the futex sleeps and wake-ups cost more CPU than the work itself. glibc's adaptive mutex
 * spins, then blocks. */
#ifdef PA_LOCK_STATS
_Atomic uint64_t pai_lock_taken, pai_lock_contended, pai_ev[6];
#endif

void pai_depot_lock_init(pthread_mutex_t *lock) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  pthread_mutex_init(lock, &attr);
  pthread_mutexattr_destroy(&attr);
}

/* The most a depot keeps reserved for idle slabs it does not have (slab.c keep_empty_slab):
 * four slabs, at most a quarter of the retention budget. */
static uint64_t credit_cap(const pa_pool_t *pool, const pai_slab_t *s) {
  uint64_t four = (uint64_t)s->npages << (PAI_PAGE_SHIFT + 2), quarter = pool->retain_bytes / 4;
  return four < quarter ? four : quarter;
}

/* depot->lock held: give the depot's unused reservation back to the pool. */
static uint64_t drop_credit(pa_pool_t *pool, pai_depot_t *d) {
  uint64_t c = d->idle_credit;
  if (c) {
    PAI_EV(5);
    atomic_fetch_sub(&pool->idle_slab_bytes, c);
  }
  d->idle_credit = 0;
  return c;
}

/* No depot lock held: a shard that no live thread cache uses any more gives back what its depots
 * had reserved for idle slabs they do not have. Left there, the reservations of exited threads'
 * shards (up to credit_cap per depot and class) counted against the retention budget until a
 * trim or decay, and the threads still running released and re-carved slabs meanwhile. */
void pai_shard_drop_credits(pa_pool_t *pool, unsigned shard) {
  for (unsigned node = 0; node < pool->nnodes; node++)
    for (unsigned cls = 0; cls < PAI_NCLASSES; cls++) {
      pai_depot_t *d = pai_depot_at(pool, node, shard, cls);
      pai_depot_lock(d);
      drop_credit(pool, d);
      pthread_mutex_unlock(&d->lock);
    }
}

/* depot->lock held: an empty slab is taken again (`keep`: its reservation stays with the depot,
 * up to credit_cap) or released or moved to another depot (the reservation goes back). */
static void slab_leaves_empty(pa_pool_t *pool, pai_depot_t *d, pai_slab_t *s, bool keep) {
  d->empty_slabs--;
  if (!s->idle) return;
  s->idle = 0;
  uint64_t bytes = (uint64_t)s->npages << PAI_PAGE_SHIFT;
  if (!keep) {
    PAI_EV(5);
    atomic_fetch_sub(&pool->idle_slab_bytes, bytes);
    return;
  }
  d->idle_credit += bytes;
  uint64_t cap = credit_cap(pool, s);
  if (d->idle_credit > cap) { /* down to half the cap: one update per few slabs either way */
    PAI_EV(5);
    atomic_fetch_sub(&pool->idle_slab_bytes, d->idle_credit - cap / 2);
    d->idle_credit = cap / 2;
  }
}

static void release_slab(pai_depot_t *d, pai_slab_t *s, bool force, uint64_t *released);

/* No depot lock held: release idle empty slabs of classes other than `cls` (any shard or
 * node) until `need` bytes of them went, so that the class being freed into keeps its slabs
 * next time. Without it the retention budget filled with slabs that an earlier phase left
 * empty (1000 live mixed-size blocks leave about 8 MiB), and the class in use released and
 * re-carved a slab every few exchanges for good: 30 carves per 1000 pairs of 64 KiB blocks at
 * one thread, each under the pool lock, and with two threads the pages one thread released
 * were often carved by the other, whose writes then missed on every line of them. It runs
 * after the depot lock that found the budget short is dropped, so depot locks never nest. */
#define PAI_ANY_SHARD PAI_SHARDS

/* `only`: PAI_ANY_SHARD, or a shard: then only that shard and shards no live cache uses are
 * visited (a retired cache's fit takes its own thread's slabs first, not a live thread's). */
static void evict_idle(pa_pool_t *pool, unsigned cls, uint64_t need, unsigned only) {
  uint64_t classes = atomic_load_explicit(&pool->idle_classes, memory_order_relaxed);
  uint64_t freed = 0;
  while (classes && freed < need) {
    unsigned c = (unsigned)__builtin_ctzll(classes);
    classes &= classes - 1;
    bool left = false;
    for (unsigned k = 0; k < pool->nnodes * PAI_SHARDS && freed < need; k++) {
      /* the class being freed into only where no live thread uses the shard: taking a live
       * thread's empty slabs of the same class would only move the churn to it */
      if ((c == cls || (only != PAI_ANY_SHARD && k % PAI_SHARDS != only)) &&
          atomic_load_explicit(&pool->shard_caches[k % PAI_SHARDS], memory_order_relaxed)) {
        left = true;
        continue;
      }
      pai_depot_t *o = &pool->depots[k * PAI_NCLASSES + c];
      pai_depot_lock(o);
      freed += drop_credit(pool, o);
      for (pai_slab_t *sl = o->partial, *next; sl; sl = next) {
        next = sl->next;
        if (!sl->idle) continue;
        if (freed >= need) { left = true; break; }
        uint64_t released = 0;
        freed += (uint64_t)sl->npages << PAI_PAGE_SHIFT;
        PAI_EV(4);
        release_slab(o, sl, false, &released);
      }
      pthread_mutex_unlock(&o->lock);
    }
    /* none found in the class: drop its bit (one kept meanwhile sets it again) */
    if (!left && freed < need)
      atomic_fetch_and_explicit(&pool->idle_classes, ~(1ull << c), memory_order_relaxed);
  }
}

/* No lock held: the eviction a keep_empty_slab under a depot lock asked for, if any. */
void pai_depot_evict_pending(pa_pool_t *pool) {
  if (PA_LIKELY(atomic_load_explicit(&pool->evict_want, memory_order_relaxed) == 0)) return;
  uint64_t want = atomic_exchange_explicit(&pool->evict_want, 0, memory_order_relaxed);
  if (want) evict_idle(pool, (unsigned)(want & 63u), want >> 6, PAI_ANY_SHARD);
}

/* No lock but the caller's tls->lock held: a thread cache of `shard` went, and the retention
 * bound fell with it. What is kept idle over the new bound goes back now: idle slabs and
 * reservations of that shard and of shards no live cache uses (the exited thread's, and those
 * of threads gone before; with more caches than shards, that shard's other threads' too), then
 * any class's, then retained chunks. Left to the next slab that empties over the bound, which releases only itself, the
 * excess would stay until a trim or decay: eight threads that exited could leave 64 MiB. */
void pai_retain_fit(pa_pool_t *pool, unsigned shard) {
  for (int pass = 0;; pass++) {
    /* the bound and `retained` are written under pool->lock: read them there */
    pthread_mutex_lock(&pool->lock);
    uint64_t limit = pai_retain_limit(pool), used = pai_idle_bytes(pool);
    if (used > limit && pass == 2) {
      uint64_t released = 0;
      pai_pool_unmap_retained(pool, limit, &released);
      if (released) pool->trims++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (used <= limit || pass == 2) return;
    evict_idle(pool, PAI_NCLASSES, used - limit, pass == 0 ? shard : PAI_ANY_SHARD);
  }
}

/* depot->lock held: may a slab that just became empty stay in its depot? The first empty slab
 * of a depot always stays (as a hot spare); more stay while the empty slabs kept so and the
 * retained chunks together fit in the pool's retention budget. When they do not and other
 * classes hold idle slabs, the slab goes back now and an eviction of those (evict_idle) is left
 * for when the lock is dropped. Without this a class whose working set swings by many slabs
 * (100 live 64 KiB blocks per thread) released and re-carved slabs on every swing, each time
 * under the depot lock and the pool lock. */
static bool keep_empty_slab(pa_pool_t *pool, pai_depot_t *d, pai_slab_t *s) {
  if (d->empty_slabs <= 1) return true;
  uint64_t bytes = (uint64_t)s->npages << PAI_PAGE_SHIFT;
  uint64_t bit = 1ull << d->cls;
  uint64_t classes = atomic_load_explicit(&pool->idle_classes, memory_order_relaxed);
  if (PA_LIKELY(d->idle_credit >= bytes)) {
    d->idle_credit -= bytes;
  } else {
    /* reserve this slab and, room permitting, credit for up to credit_cap more: a working
     * set that swings by many slabs then moves the pool-wide counter (a line every thread
     * writes) a few times per swing instead of twice per slab */
    uint64_t idle = atomic_load_explicit(&pool->idle_slab_bytes, memory_order_relaxed);
    /* retained: written under pool->lock; a relaxed read is off by at most one chunk */
    uint64_t retained = __atomic_load_n(&pool->retained, __ATOMIC_RELAXED);
    uint64_t used = idle + retained, need = bytes - d->idle_credit, limit = pai_retain_limit(pool);
    if (used + need > limit) {
      /* the class and the bytes short, packed in one word (a class fits in 6 bits) */
      uint64_t none = 0;
      if (classes)
        atomic_compare_exchange_strong_explicit(
            &pool->evict_want, &none, ((used + need - limit) << 6) | d->cls,
            memory_order_relaxed, memory_order_relaxed);
      return false;
    }
    uint64_t extra = limit - used - need, cap = credit_cap(pool, s);
    if (extra > cap) extra = cap;
    PAI_EV(5);
    atomic_fetch_add(&pool->idle_slab_bytes, need + extra);
    d->idle_credit = extra; /* what was there went into this slab */
  }
  s->idle = 1;
  if (!(classes & bit)) atomic_fetch_or_explicit(&pool->idle_classes, bit, memory_order_relaxed);
  return true;
}

/* No lock held: move one empty slab of another shard of this class into `d`, so that a thread
 * whose shard ran dry reuses what threads of exited threads' shards left empty before anything
 * is carved; carving while empty slabs idle elsewhere also spent the retention budget and made
 * slabs churn through the pool lock. Shards that no live thread cache uses are tried first, live
 * ones only after them: a live thread's empty slabs are its next refill, and taking them first
 * made two threads pass slabs (and every cache line of their blocks) back and forth. An empty
 * slab has no block out, so no one else follows its depot pointer. 1 if one moved. */

static int adopt_empty(pa_pool_t *pool, pai_depot_t *d) {
  for (unsigned i = 1; i < 2 * PAI_SHARDS; i++) { /* orphaned shards, then live ones */
    unsigned sh = (d->shard + i) % PAI_SHARDS;
    bool orphan = atomic_load_explicit(&pool->shard_caches[sh], memory_order_relaxed) == 0;
    if (orphan != (i < PAI_SHARDS) || sh == d->shard) continue;
    pai_depot_t *o = pai_depot_at(pool, d->node, sh, d->cls);
    if (pthread_mutex_trylock(&o->lock) != 0) continue; /* busy: carving is cheaper than waiting */
    pai_slab_t *s = o->empty_slabs ? o->partial : NULL;
    while (s && s->nfree != s->nblocks) s = s->next;
    if (s) {
      list_unlink(&o->partial, s);
      o->nslabs--;
      slab_leaves_empty(pool, o, s, false);
    }
    pthread_mutex_unlock(&o->lock);
    if (s == NULL) continue;
    pai_depot_lock(d);
    PAI_EV(2);
    s->depot = d;
    s->on_partial = 1;
    list_push(&d->partial, s, true);
    d->nslabs++;
    d->empty_slabs++;
    /* In transit the slab was in no depot: a close that swept both meanwhile missed it, and
     * nothing would release it later. A close sets the flag before it sweeps, so either its
     * sweep of d comes after this and finds the slab, or the flag is seen here. */
    if (atomic_load_explicit(&pool->closed, memory_order_relaxed)) {
      uint64_t released = 0;
      release_slab(d, s, true, &released);
      s = NULL;
    }
    pthread_mutex_unlock(&d->lock);
    return s != NULL;
  }
  return 0;
}

/* Take up to n blocks for a thread cache or a direct allocation. 0 when at least one came. */
int pai_depot_refill(pa_pool_t *pool, pai_depot_t *d, void **out, unsigned n, uint64_t *got) {
  int err = 0;
  unsigned have = 0;
  pai_depot_lock(d);
  if (d->partial == NULL && PAI_SHARDS > 1) {
    pthread_mutex_unlock(&d->lock);
    adopt_empty(pool, d);
    pai_depot_lock(d);
  }
  while (have < n) {
    pai_slab_t *s = d->partial;
    if (s == NULL && (err = new_slab(pool, d, &s)) != 0) break;
    if (s->nfree == s->nblocks) slab_leaves_empty(pool, d, s, true);
    have += pai_slab_take(s, out + have, n - have);
    if (s->nfree == 0) move_to_full(d, s);
  }
  d->out_blocks += have;
  if (d->out_blocks > d->out_peak) d->out_peak = d->out_blocks;
  *got = have; /* under the lock: a fork never sees blocks out of the depot and not in *got */
  pthread_mutex_unlock(&d->lock);
  return have ? 0 : err;
}

/* depot->lock held: give an empty slab's pages back to its chunk. */
static void release_slab(pai_depot_t *d, pai_slab_t *s, bool force, uint64_t *released) {
  pai_chunk_t *c = s->chunk;
  pa_pool_t *pool = c->pool;
  list_unlink(s->on_partial ? &d->partial : &d->full, s);
  d->nslabs--;
  slab_leaves_empty(pool, d, s, false);
  unsigned first = s->first_page, npages = s->npages;
  PAI_EV(1);
  d->last_chunk = c;
  d->last_page = first;
  pai_slab_fini(s);
  pthread_mutex_lock(&pool->lock);
  pai_chunk_give_pages(c, first, npages);
  /* After the pages left the page map: a pa_free that sees this epoch finds no slab there and
   * forms no memo, and a memo formed before (even by a stale free while the slab was being
   * released) is dropped. Bumped earlier, such a memo would outlive the pages' reuse by
   * another class on the same descriptor and push its blocks onto this class's list. */
  atomic_fetch_add(&pai_slab_epoch, 1);
  if (chunk_is_empty(c)) pai_pool_chunk_empty(pool, c, force, released);
  pthread_mutex_unlock(&pool->lock);
}

/* One block back into its slab. The depot lock is taken unless `locked`. The caller accounts
 * a direct free with pai_note_out. */
void pai_depot_return(pai_slab_t *s, uint32_t idx, bool locked) {
  pai_depot_t *d = s->depot;
  pa_pool_t *pool = s->pool; /* s may be released (and its chunk unmapped) below */
  if (!locked) pai_depot_lock(d);
  pai_slab_put(s, idx);
  d->out_blocks--;
  if (s->nfree == 1 && !s->on_partial) move_to_partial(d, s);
  if (s->nfree == s->nblocks) {
    d->empty_slabs++;
    /* emptied by a decay pass: its blocks were idle that long already */
    s->empty_since = pai_tl.decaying ? 0 : pai_idle_stamp(pool);
    bool closed = atomic_load_explicit(&pool->closed, memory_order_relaxed) != 0;
    uint64_t released = 0;
    if (closed || !keep_empty_slab(pool, d, s)) release_slab(d, s, closed, &released);
  }
  if (!locked) {
    pthread_mutex_unlock(&d->lock);
    pai_depot_evict_pending(pool);
  }
}

/* Release the empty slabs of a depot: all of them, or all but one. Takes depot->lock. */
void pai_depot_release_empty(pa_pool_t *pool, pai_depot_t *d, bool all, uint64_t *released) {
  pai_depot_lock(d);
  drop_credit(pool, d);
  pai_slab_t *s = d->partial;
  while (s && d->empty_slabs > (all ? 0u : 1u)) {
    pai_slab_t *next = s->next;
    if (s->nfree == s->nblocks) release_slab(d, s, all, released);
    s = next;
  }
  pthread_mutex_unlock(&d->lock);
}

/* Release the empty slabs of a depot (the spare too) that have been empty for `age` ns; a chunk
 * left without slabs is unmapped. Takes depot->lock. */
void pai_depot_release_idle(pa_pool_t *pool, pai_depot_t *d, uint64_t age, uint64_t now,
                            uint64_t *released) {
  pai_depot_lock(d);
  drop_credit(pool, d);
  pai_slab_t *s = d->partial;
  while (s && d->empty_slabs > 0) {
    pai_slab_t *next = s->next;
    if (s->nfree == s->nblocks && pai_idle_for(&s->empty_since, now, age))
      release_slab(d, s, true, released);
    s = next;
  }
  pthread_mutex_unlock(&d->lock);
}
