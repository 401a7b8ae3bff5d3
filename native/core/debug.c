/* SPDX-License-Identifier: MIT */
/* --- debug.c: poison and canary patterns, and the unpooled mode's block table ---------------
 *
 * PA_DEBUG_UNPOOLED gives every block its own posix_memalign() so that memory profilers
 * (memray) see each buffer with its stack. pa_free() still needs no pool argument: a block the
 * chunk registry does not know is looked up in this table (only while the table is not empty).
 *
 * Lock order / who may touch what: up_lock (a leaf) guards the table; pool->lock is taken
 * after it is released, never inside it.
 * ------------------------------------------------------------------------------------------- */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UP_BUCKETS 4096u

typedef struct up_node_s {
  void *p;
  pa_pool_t *pool;
  size_t size, req;
  struct up_node_s *next;
} up_node_t;

static up_node_t *up_table[UP_BUCKETS];
static pthread_mutex_t up_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic size_t up_count;

// ---- patterns ----

void pai_poison_fill(void *p, size_t n) { memset(p, PAI_POISON_BYTE, n); }

static int all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != v) return EILSEQ;
  return 0;
}

int pai_poison_check(const void *p, size_t n) { return all_bytes(p, n, PAI_POISON_BYTE); }

int pai_canary_check(const void *p, size_t req, size_t size) {
  return req > size ? EILSEQ : all_bytes((const char *)p + req, size - req, PAI_CANARY_BYTE);
}

// ---- the unpooled table ----

static unsigned bucket_of(const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 6) * 0x9E3779B97F4A7C15ull) >> 52) % UP_BUCKETS;
}

bool pai_unpooled_any(void) { return atomic_load_explicit(&up_count, memory_order_relaxed) > 0; }

void pai_unpooled_fork_lock(void) { pthread_mutex_lock(&up_lock); }

void pai_unpooled_fork_unlock(int child) {
  if (child) pthread_mutex_init(&up_lock, NULL);
  else pthread_mutex_unlock(&up_lock);
}

static int reserve_bytes(pa_pool_t *pool, size_t bytes) {
  int err = 0;
  pthread_mutex_lock(&pool->lock);
  if (pool->max_bytes && pool->mapped + bytes > pool->max_bytes) {
    pool->failed++;
    err = ENOSPC;
  } else {
    pai_note_mapped(pool, 0, bytes);
    pool->unpooled_allocs++;
    pool->unpooled_bytes += bytes;
  }
  pthread_mutex_unlock(&pool->lock);
  return err;
}

static void unreserve_bytes(pa_pool_t *pool, size_t bytes, bool freed) {
  pthread_mutex_lock(&pool->lock);
  pool->mapped -= bytes;
  pool->node_mapped[0] -= bytes;
  pool->unpooled_bytes -= bytes;
  if (freed) pool->unpooled_frees++;
  else pool->unpooled_allocs--;
  pthread_mutex_unlock(&pool->lock);
}

int pai_unpooled_alloc(pa_pool_t *pool, size_t size, size_t align, void **out) {
  size_t need = (pool->debug & PA_DEBUG_CANARY) ? size + PAI_CANARY_BYTES : size;
  size_t bytes = (need + PA_MIN_ALIGN - 1) & ~(size_t)(PA_MIN_ALIGN - 1);
  if (bytes < size) return EOVERFLOW;
  int err = reserve_bytes(pool, bytes);
  if (err) return err;
  up_node_t *node = malloc(sizeof *node);
  void *p = NULL;
  if (node == NULL || posix_memalign(&p, align < PA_MIN_ALIGN ? PA_MIN_ALIGN : align, bytes)) {
    free(node);
    unreserve_bytes(pool, bytes, false);
    return ENOMEM;
  }
  if (pool->debug & PA_DEBUG_CANARY) memset((char *)p + size, PAI_CANARY_BYTE, bytes - size);
  *node = (up_node_t){p, pool, bytes, size, NULL};
  atomic_fetch_add(&pool->refs, 1);
  pai_note_out(pool, (int64_t)bytes);
  pthread_mutex_lock(&up_lock);
  node->next = up_table[bucket_of(p)];
  up_table[bucket_of(p)] = node;
  atomic_fetch_add(&up_count, 1);
  pthread_mutex_unlock(&up_lock);
  *out = p;
  return 0;
}

static up_node_t *take_node(const void *p, bool unlink) {
  up_node_t **link = &up_table[bucket_of(p)];
  while (*link && (*link)->p != p) link = &(*link)->next;
  up_node_t *node = *link;
  if (node && unlink) {
    *link = node->next;
    atomic_fetch_sub(&up_count, 1);
  }
  return node;
}

int pai_unpooled_lookup(const void *p, pa_pool_t **pool, size_t *size) {
  pthread_mutex_lock(&up_lock);
  up_node_t *node = take_node(p, false);
  if (node) {
    if (pool) *pool = node->pool;
    if (size) *size = node->req;
  }
  pthread_mutex_unlock(&up_lock);
  return node ? 0 : EFAULT;
}

int pai_unpooled_free(void *p) {
  pthread_mutex_lock(&up_lock);
  up_node_t *node = take_node(p, true);
  pthread_mutex_unlock(&up_lock);
  if (node == NULL) return EFAULT;
  pa_pool_t *pool = node->pool;
  int err = 0;
  if (pool->debug & PA_DEBUG_CANARY) err = pai_canary_check(p, node->req, node->size);
  free(p);
  pai_note_out(pool, -(int64_t)node->size);
  unreserve_bytes(pool, node->size, true);
  free(node);
  pai_pool_unref(pool);
  return err;
}

/* pa_pool_check for unpooled blocks: canaries of every live block of the pool. */
int pai_unpooled_check(pa_pool_t *pool) {
  int err = 0;
  if (!(pool->debug & PA_DEBUG_CANARY)) return 0;
  pthread_mutex_lock(&up_lock);
  for (unsigned b = 0; b < UP_BUCKETS && err == 0; b++)
    for (up_node_t *n = up_table[b]; n && err == 0; n = n->next)
      if (n->pool == pool) err = pai_canary_check(n->p, n->req, n->size);
  pthread_mutex_unlock(&up_lock);
  return err;
}
