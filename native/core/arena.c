/* SPDX-License-Identifier: MIT */
/* --- arena.c: chunks from the OS, the chunk registry, page runs, NUMA binding ---------------
 *
 * A chunk is a 2 MiB-aligned mapping owned by one pool. The registry is a two-level radix map
 * from (address >> 21) to the chunk descriptor (mimalloc's segment map), so pa_free() of any
 * address is two loads and a range check: a pointer that is not ours is refused without reading
 * the memory it points to. Descriptors are recycled, never freed, so a racing stale lookup
 * still reads a descriptor.
 *
 * NUMA: a chunk of a pool with a node is bound with mbind before anything touches it; if the
 * bind fails the chunk is used unbound and the pool reports numa_bound = 0 (mimalloc arena.c
 * "warn, not fail").
 *
 * Lock order / who may touch what:
 *   reg_lock (leaf): creating registry leaves, registering/unregistering, the descriptor free
 *   list. Lookups take no lock (acquire loads). Page runs of a chunk: pool->lock.
 * ------------------------------------------------------------------------------------------- */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "os.h"
#include "track.h"

_Atomic(pai_leaf_t *) pai_reg_top[(size_t)1 << PAI_REG_TOP_BITS];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pai_chunk_t *desc_free;

// ---- registry ----

/* Caller holds reg_lock. */
static int registry_set(uintptr_t base, pai_chunk_t *c) {
  uintptr_t key = base >> PAI_CHUNK_SHIFT, top = key >> PAI_REG_LEAF_BITS;
  if (top >= ((uintptr_t)1 << PAI_REG_TOP_BITS)) return ENOMEM;
  pai_leaf_t *leaf = atomic_load_explicit(&pai_reg_top[top], memory_order_relaxed);
  if (leaf == NULL) {
    leaf = calloc(1, sizeof(pai_leaf_t));
    if (leaf == NULL) return ENOMEM;
    atomic_store_explicit(&pai_reg_top[top], leaf, memory_order_release);
  }
  atomic_store_explicit(&(*leaf)[key & (PAI_REG_LEAF_SIZE - 1)], c, memory_order_release);
  return 0;
}

void pai_registry_fork_lock(void) { pthread_mutex_lock(&reg_lock); }

void pai_registry_fork_unlock(int child) {
  if (child) pthread_mutex_init(&reg_lock, NULL);
  else pthread_mutex_unlock(&reg_lock);
}

// ---- descriptors ----

static pai_chunk_t *desc_get(void) {
  pthread_mutex_lock(&reg_lock);
  pai_chunk_t *c = desc_free;
  if (c) desc_free = c->next;
  pthread_mutex_unlock(&reg_lock);
  /* aligned: each slab descriptor has cache lines of its own (internal.h pai_slab_t) */
  if (c == NULL) c = aligned_alloc(64, sizeof *c);
  if (c == NULL) return NULL;
  memset(c, 0, sizeof *c);
  for (unsigned i = 0; i < PAI_CHUNK_PAGES; i++) atomic_init(&c->page_slab[i], PAI_NO_SLAB);
  c->bound_node = -1;
  return c;
}

/* Caller holds reg_lock. */
static void desc_put_locked(pai_chunk_t *c) {
  c->pool = NULL;
  c->len = 0;
  c->next = desc_free;
  desc_free = c;
}

// ---- mapping ----

static void chunk_bind(pa_pool_t *pool, pai_chunk_t *c, int node) {
  if (node < 0) return;
  if (pai_os_bind((void *)c->base, c->len, node) == 0) c->bound_node = node;
  else pool->numa_bound = 0;
}

static int chunk_register(pai_chunk_t *c) {
  pthread_mutex_lock(&reg_lock);
  int err = registry_set(c->base, c);
  pthread_mutex_unlock(&reg_lock);
  return err;
}

static int os_node_of(pa_pool_t *pool, unsigned node) {
  if (pool->numa_node >= 0) return pool->numa_node;
  if (pool->numa_node == PA_NUMA_LOCAL) return (int)node;
  return -1;
}

/* Map a chunk of `len` bytes (a multiple of the page unit, <= 2 MiB) for `node`. Called with
 * pool->lock held; the caller accounts mapped bytes. */
int pai_chunk_map(pa_pool_t *pool, unsigned node, size_t len, pai_chunk_t **out) {
  pai_chunk_t *c = desc_get();
  if (c == NULL) return ENOMEM;
  void *p;
  int err = pai_os_map_aligned(len, PAI_CHUNK_SIZE, &p);
  if (err == 0) {
    c->base = (uintptr_t)p;
    c->len = len;
    c->pool = pool;
    c->node = (int)node;
    c->kind = PAI_CHUNK_SLABS;
    c->memo_ok = pool->nnodes == 1;
    c->npages = len <= PAI_CHUNK_SIZE ? (uint32_t)(len >> PAI_PAGE_SHIFT) : 0;
    c->free_pages = c->npages == 32 ? 0xFFFFFFFFu : ((1u << c->npages) - 1u);
    chunk_bind(pool, c, os_node_of(pool, node));
    err = chunk_register(c);
    if (err) pai_os_unmap(p, len);
  }
  if (err) {
    pthread_mutex_lock(&reg_lock);
    desc_put_locked(c);
    pthread_mutex_unlock(&reg_lock);
    return err;
  }
  *out = c;
  return 0;
}

/* A dedicated mapping for one block above the largest class. */
int pai_huge_map(pa_pool_t *pool, unsigned node, size_t size, pai_chunk_t **out) {
  size_t len = (size + PA_PAGE_ALIGN - 1) & ~(size_t)(PA_PAGE_ALIGN - 1);
  if (len < size) return EOVERFLOW;
  int err = pai_chunk_map(pool, node, len, out);
  if (err) return err;
  (*out)->kind = PAI_CHUNK_HUGE;
  (*out)->npages = 0;
  (*out)->free_pages = 0;
  (*out)->huge_req = size;
  return 0;
}

void pai_chunk_unmap(pai_chunk_t *c) {
  atomic_fetch_add(&pai_slab_epoch, 1);
  pthread_mutex_lock(&reg_lock);
  registry_set(c->base, NULL);
  pa_track_unpoison((void *)c->base, c->len);
  pai_os_unmap((void *)c->base, c->len);
  desc_put_locked(c);
  pthread_mutex_unlock(&reg_lock);
}

// ---- page runs (pool->lock) ----

int pai_chunk_take_pages(pai_chunk_t *c, unsigned npages, unsigned *first) {
  if (npages == 0 || npages > c->npages) return ENOSPC;
  uint32_t run = npages == 32 ? 0xFFFFFFFFu : ((1u << npages) - 1u);
  for (unsigned i = 0; i + npages <= c->npages; i++) {
    if (((c->free_pages >> i) & run) == run) {
      c->free_pages &= ~(run << i);
      *first = i;
      return 0;
    }
  }
  return ENOSPC;
}

/* The run of `npages` at `first`, if every page of it is free. 0 or ENOSPC. */
int pai_chunk_take_pages_at(pai_chunk_t *c, unsigned first, unsigned npages) {
  if (npages == 0 || first + npages > c->npages) return ENOSPC;
  uint32_t run = npages == 32 ? 0xFFFFFFFFu : ((1u << npages) - 1u);
  if (((c->free_pages >> first) & run) != run) return ENOSPC;
  c->free_pages &= ~(run << first);
  return 0;
}

void pai_chunk_give_pages(pai_chunk_t *c, unsigned first, unsigned npages) {
  uint32_t run = npages == 32 ? 0xFFFFFFFFu : ((1u << npages) - 1u);
  for (unsigned i = first; i < first + npages; i++)
    atomic_store_explicit(&c->page_slab[i], PAI_NO_SLAB, memory_order_relaxed);
  c->free_pages |= run << first;
}

// ---- NUMA queries ----

int pai_numa_nodes(unsigned *out) { return pai_os()->node_count(out); }

int pa_numa_node_count(unsigned *out) {
  if (out == NULL) return EINVAL;
  return pai_numa_nodes(out);
}

/* Fake topology only: the chunk holding p. Only a chunk's base is registered, so an address
 * past the first 2 MiB of a huge mapping is found by walking down to the nearest registered
 * base (chunks never overlap, so that one holds p or nothing does). Bounded: tests only. */
static pai_chunk_t *fake_chunk_of(const void *p) {
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)(PAI_CHUNK_SIZE - 1);
  for (unsigned step = 0; step < 4096 && a != 0; step++, a -= PAI_CHUNK_SIZE) {
    pai_chunk_t *c = pai_chunk_lookup((const void *)a);
    if (c != NULL) return c;
  }
  return NULL;
}

int pa_numa_page_node(const void *p, int *node) {
  if (p == NULL || node == NULL) return EINVAL;
  if (pai_os_fake_active()) {
    pai_chunk_t *c = fake_chunk_of(p);
    uintptr_t a = (uintptr_t)p;
    if (c == NULL || a < c->base || a - c->base >= c->len) return EFAULT;
    if (c->bound_node < 0) return ENODEV;
    *node = c->bound_node;
    return 0;
  }
  return pai_os()->page_node(p, node);
}

bool pai_numa_is_fake(void) { return pai_os_fake_active() != 0; }
