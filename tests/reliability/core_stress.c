/* C test driver of the allocator core, for valgrind (memcheck, helgrind) and sanitizers.
 *
 * No Python: the core's thread safety must not lean on the GIL. `make valgrind` builds it with
 * every C file of native/core and runs it under memcheck and helgrind; it also runs plainly.
 *
 *   1. misuse: bad sizes/alignments, double free, foreign and interior pointers, closed pool
 *   2. fault injection: mmap refused (ENOMEM) leaves nothing half-made; batch all-or-nothing
 *   3. threads: N threads allocate and pass every block to the next thread, which checks the
 *      block's stamp and frees it (cross-thread frees), with batches and trims mixed in
 *   4. close with blocks out: they stay valid and the pool goes when the last comes back
 *   5. reclaim: threads churn while another thread keeps emptying their caches
 *      (pa_pool_decay), then park blocks and idle while the pool closes (pa_pool_close_report);
 *      where membarrier is missing, those caches are reported busy instead
 *   6. thread exit: another key's destructor allocates and frees after the allocator's ran, on
 *      a thread whose stack (and static TLS) the test unmaps after the join; closing the pool
 *      then must not touch that memory
 *   7. membarrier refused at run time (seccomp filter, EPERM): part 5 again, reporting busy
 *   8. retention pressure: threads on different classes swing their working sets past a small
 *      retain_bytes, so that each one's kept empty slabs are evicted by the others (a trylock
 *      on depots that their owners are using); each generation of threads leaves blocks for the
 *      next, which frees them into the exited threads' slabs and adopts those slabs once empty
 *   9. exited threads' reservations: a thread swings 64 KiB blocks and exits; its shard, now
 *      without a live cache, keeps no reservation for idle slabs it does not have
 *  10. retention per thread: two threads each leave more idle than retain_bytes; the pool keeps
 *      more than one budget and at most two while both live, one budget once one has exited
 * Exit status 0 and "ok" when every check held; counters must balance exactly.
 *
 * Environment: PA_C_THREADS (default 4), PA_C_ROUNDS (default 20000 per thread), PA_C_RECLAIM
 * (default 1; 0 skips parts 5 and 7, which helgrind cannot model), PA_C_LATE (default 1; 0
 * skips part 6, which ThreadSanitizer's runtime cannot run), PA_C_SECCOMP (default 1; 0 skips
 * part 7).
 */
#include "poolalloc.h"
#include "internal.h" /* pai_reclaim_live_supported */

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* helgrind does not model C11 atomics: tell it that the hand-off through a mailbox orders the
 * sender's writes before the receiver's reads (the exchange is seq_cst; TSan sees that itself). */
#if defined(__has_include)
#if __has_include(<valgrind/helgrind.h>)
#include <valgrind/helgrind.h>
#endif
#endif
#ifndef ANNOTATE_HAPPENS_BEFORE
#define ANNOTATE_HAPPENS_BEFORE(obj) ((void)(obj))
#define ANNOTATE_HAPPENS_AFTER(obj) ((void)(obj))
#endif

#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                \
    }                                                                         \
  } while (0)
#define EXPECT_RC(call, want) EXPECT((call) == (want))

static const size_t sizes[] = {1, 64, 100, 1000, 4096, 5000, 70000, 300000, 3u << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define SLOTS 64

static unsigned env_or(const char *name, unsigned dflt) {
  const char *v = getenv(name);
  return v && *v ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

// ---- 1. misuse ----

static void check_misuse(void) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  void *p = NULL;
  EXPECT_RC(pa_alloc(pool, 0, 64, &p), EINVAL);
  EXPECT_RC(pa_alloc(pool, 10, 3, &p), EINVAL);
  EXPECT_RC(pa_alloc(pool, 10, 8192, &p), EINVAL);
  EXPECT(pa_alloc(pool, SIZE_MAX, 64, &p) != 0);
  void *batch[4];
  EXPECT(pa_alloc_batch(pool, 64, 64, SIZE_MAX / 2, batch) != 0);
  EXPECT_RC(pa_alloc(pool, 100, 64, &p), 0);
  EXPECT(((uintptr_t)p & 63) == 0);
  int local = 0;
  EXPECT_RC(pa_free(&local), EFAULT);                 // not ours
  EXPECT_RC(pa_free((char *)p + 1), EFAULT);          // interior pointer
  EXPECT_RC(pa_free(p), 0);
  EXPECT_RC(pa_free(p), EALREADY);                    // double free
  EXPECT_RC(pa_pool_check(pool), 0);
  EXPECT_RC(pa_pool_close(pool), 0);
  EXPECT_RC(pa_pool_close(pool), 0);                  // idempotent
  EXPECT_RC(pa_alloc(pool, 100, 64, &p), ESHUTDOWN);
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.allocs == 1 && st.frees == 1 && st.in_use_blocks == 0);
  pa_pool_destroy(pool);
}

// ---- 2. fault injection ----

static void check_faults(void) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  void *p;
  EXPECT_RC(pa_fault_set(PA_FAULT_MAP, 0, 1, ENOMEM), 0);
  EXPECT_RC(pa_alloc(pool, 3u << 20, 64, &p), ENOMEM);    // a dedicated mapping refused
  EXPECT_RC(pa_fault_set(PA_FAULT_MAP, 0, 1, ENOMEM), 0);
  EXPECT_RC(pa_alloc(pool, 100, 64, &p), ENOMEM);         // a new chunk refused
  void *batch[200];
  EXPECT_RC(pa_fault_set(PA_FAULT_MAP, 1, 1, ENOMEM), 0); // the second chunk of the batch fails
  int rc = pa_alloc_batch(pool, 300000, 64, 200, batch);
  EXPECT(rc == ENOMEM);
  EXPECT_RC(pa_fault_set(PA_FAULT_MAP, 0, 0, 0), 0);
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.in_use_blocks == 0);                          // all or nothing
  EXPECT(st.failed_allocs >= 3);
  EXPECT_RC(pa_alloc_batch(pool, 300000, 64, 20, batch), 0);
  size_t freed = 0;
  EXPECT_RC(pa_free_batch(batch, 20, &freed), 0);
  EXPECT(freed == 20);
  EXPECT_RC(pa_pool_check(pool), 0);
  EXPECT_RC(pa_pool_close(pool), 0);
  pa_pool_destroy(pool);
}

// ---- 3. threads with cross-thread frees ----

typedef struct {
  _Atomic(void *) slot[SLOTS];  // blocks handed from the previous thread to this one
} mailbox_t;

typedef struct {
  pa_pool_t *pool;
  mailbox_t *boxes;
  unsigned me, nthreads, rounds;
  unsigned long allocs, frees;
} worker_t;

static void stamp(void *p, size_t n, uint32_t tag) {
  memcpy(p, &tag, sizeof tag);
  if (n >= 2 * sizeof tag) memcpy((char *)p + n - sizeof tag, &tag, sizeof tag);
}

static void check_and_free(void *p, unsigned long *frees) {
  size_t n = 0;
  EXPECT_RC(pa_block_size(p, &n), 0);
  uint32_t a, b;
  memcpy(&a, p, sizeof a);
  memcpy(&b, (char *)p + n - sizeof b, sizeof b);
  EXPECT(n < 2 * sizeof a || a == b);  // both ends carry the stamp of the one owner
  EXPECT_RC(pa_free(p), 0);
  (*frees)++;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  mailbox_t *next = &w->boxes[(w->me + 1) % w->nthreads];
  mailbox_t *mine = &w->boxes[w->me];
  unsigned seed = w->me * 7919u + 1;
  for (unsigned r = 0; r < w->rounds; r++) {
    seed = seed * 1103515245u + 12345u;
    size_t size = sizes[(seed >> 16) % (NSIZES - (r % 64 ? 1 : 0))];
    void *p;
    EXPECT_RC(pa_alloc(w->pool, size, 64, &p), 0);
    w->allocs++;
    size_t n;
    EXPECT_RC(pa_block_size(p, &n), 0);
    stamp(p, n, (uint32_t)(w->me << 24 | (r & 0xffffff)));
    ANNOTATE_HAPPENS_BEFORE(p);
    void *old = atomic_exchange(&next->slot[r % SLOTS], p);  // hand it on
    if (old) {
      ANNOTATE_HAPPENS_AFTER(old);
      check_and_free(old, &w->frees);
    }
    void *in = atomic_exchange(&mine->slot[(r * 7) % SLOTS], NULL);
    if (in) {
      ANNOTATE_HAPPENS_AFTER(in);
      check_and_free(in, &w->frees);
    }
    if (r % 997 == 0) {
      void *batch[16];
      EXPECT_RC(pa_alloc_batch(w->pool, 200, 64, 16, batch), 0);
      size_t freed = 0;
      EXPECT_RC(pa_free_batch(batch, 16, &freed), 0);
      EXPECT(freed == 16);
    }
    if (r % 4099 == 0) EXPECT_RC(pa_pool_trim(w->pool, NULL), 0);
  }
  return NULL;
}

static void check_threads(unsigned nthreads, unsigned rounds) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  mailbox_t *boxes = calloc(nthreads, sizeof *boxes);
  worker_t *ws = calloc(nthreads, sizeof *ws);
  pthread_t *ts = calloc(nthreads, sizeof *ts);
  EXPECT(boxes && ws && ts);
  for (unsigned i = 0; i < nthreads; i++) {
    ws[i] = (worker_t){.pool = pool, .boxes = boxes, .me = i, .nthreads = nthreads,
                       .rounds = rounds};
    EXPECT_RC(pthread_create(&ts[i], NULL, worker, &ws[i]), 0);
  }
  unsigned long allocs = 0, frees = 0;
  for (unsigned i = 0; i < nthreads; i++) {
    EXPECT_RC(pthread_join(ts[i], NULL), 0);
    allocs += ws[i].allocs;
    frees += ws[i].frees;
  }
  for (unsigned i = 0; i < nthreads; i++)  // what is still in the mailboxes
    for (unsigned s = 0; s < SLOTS; s++) {
      void *p = atomic_load(&boxes[i].slot[s]);
      if (p) check_and_free(p, &frees);
    }
  EXPECT(allocs == frees);
  EXPECT_RC(pa_pool_check(pool), 0);
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.in_use_blocks == 0 && st.allocs == st.frees);
  EXPECT(st.allocs >= allocs);  // plus the batches
  EXPECT_RC(pa_pool_close(pool), 0);
  pa_pool_destroy(pool);
  free(boxes);
  free(ws);
  free(ts);
  printf("threads: %u x %u rounds, %lu blocks, all freed across threads\n", nthreads, rounds,
         allocs);
}

// ---- 4. close with blocks out ----

static void check_close_with_blocks_out(void) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  void *p, *q;
  EXPECT_RC(pa_alloc(pool, 1000, 64, &p), 0);
  EXPECT_RC(pa_alloc(pool, 3u << 20, 64, &q), 0);
  memset(p, 1, 1000);
  EXPECT_RC(pa_pool_close(pool), 0);
  pa_pool_destroy(pool);  // the handle goes; the blocks keep the pool alive
  memset(q, 2, 3u << 20);
  EXPECT_RC(pa_free(p), 0);
  EXPECT_RC(pa_free(q), 0);  // the last block: the pool's memory goes back now
}

// ---- 5. reclaiming live threads' caches ----

typedef struct reclaim_arg_s {
  pa_pool_t *pool;
  unsigned rounds;
  _Atomic int parked, release;
} reclaim_arg_t;

static void *reclaim_worker(void *arg) {
  reclaim_arg_t *a = arg;
  void *held[SLOTS] = {0};
  unsigned seed = (unsigned)(uintptr_t)&held;
  for (unsigned r = 0; r < a->rounds; r++) {
    seed = seed * 1103515245u + 12345u;
    unsigned slot = (seed >> 8) % SLOTS;
    if (held[slot]) {
      EXPECT(*(uintptr_t *)held[slot] == (uintptr_t)held[slot]);
      EXPECT_RC(pa_free(held[slot]), 0);
      held[slot] = NULL;
    } else {
      EXPECT_RC(pa_alloc(a->pool, sizes[(seed >> 16) % 7], 64, &held[slot]), 0);
      *(uintptr_t *)held[slot] = (uintptr_t)held[slot];
    }
  }
  for (unsigned i = 0; i < SLOTS; i++)
    if (held[i]) EXPECT_RC(pa_free(held[i]), 0);
  atomic_fetch_add(&a->parked, 1);  // the cache is full of parked blocks now
  while (!atomic_load(&a->release)) {
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  return NULL;
}

static void check_reclaim(unsigned nthreads, unsigned rounds) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  reclaim_arg_t a = {.pool = pool, .rounds = rounds};
  pthread_t *ts = calloc(nthreads, sizeof *ts);
  EXPECT(ts != NULL);
  for (unsigned i = 0; i < nthreads; i++)
    EXPECT_RC(pthread_create(&ts[i], NULL, reclaim_worker, &a), 0);
  size_t released;
  while ((unsigned)atomic_load(&a.parked) < nthreads) EXPECT_RC(pa_pool_decay(pool, 0, &released), 0);
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.in_use_blocks == 0 && st.allocs == st.frees);
  pa_close_report_t rep;
  EXPECT_RC(pa_pool_close_report(pool, &rep), 0);
  bool live = pai_reclaim_live_supported();
  EXPECT(rep.in_use_bytes == 0);
  if (live) {
    EXPECT(rep.caches_busy == 0 && rep.mapped_bytes == 0);
  } else {
    /* each idle thread still parks blocks: reported, nothing emptied, no empty cache counted */
    EXPECT(rep.caches_busy == nthreads && rep.caches_reclaimed == 0 && rep.mapped_bytes > 0);
  }
  atomic_store(&a.release, 1);
  for (unsigned i = 0; i < nthreads; i++) EXPECT_RC(pthread_join(ts[i], NULL), 0);
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.mapped_bytes == 0);  // the exiting threads handed their caches back
  pa_pool_destroy(pool);
  free(ts);
  printf("reclaim: %u threads, %s\n", nthreads,
         live ? "caches emptied while busy and at close" : "no membarrier: caches reported busy");
}

// ---- 6. allocator calls after the allocator's thread-exit hook ----

static pthread_key_t late_key;
static pa_pool_t *late_pool;
static _Atomic unsigned late_calls;

/* Re-arms itself, so that it runs in every destructor round glibc makes, the last included:
 * a per-thread record made there would outlive the thread. */
static void late_destructor(void *arg) {
  void *p;
  EXPECT_RC(pa_alloc(late_pool, 200, 64, &p), 0);
  memset(p, 0xA5, 200);
  EXPECT_RC(pa_free(p), 0);
  atomic_fetch_add(&late_calls, 1);
  EXPECT_RC(pthread_setspecific(late_key, arg), 0);
}

static void *late_worker(void *arg) {
  void *p[8];
  for (int i = 0; i < 8; i++) EXPECT_RC(pa_alloc(late_pool, 200, 64, &p[i]), 0);
  for (int i = 0; i < 8; i++) EXPECT_RC(pa_free(p[i]), 0);
  EXPECT_RC(pthread_setspecific(late_key, arg), 0);
  return NULL;
}

static void check_late_exit(void) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  EXPECT_RC(pa_pool_create(&cfg, &late_pool), 0);
  void *warm;  // the allocator's key exists before ours: its destructor runs first in a round
  EXPECT_RC(pa_alloc(late_pool, 64, 64, &warm), 0);
  EXPECT_RC(pa_free(warm), 0);
  EXPECT_RC(pthread_key_create(&late_key, late_destructor), 0);
  for (int round = 0; round < 4; round++) {
    size_t len = 1u << 20;  // user stack: glibc puts the thread's static TLS on it too
    void *stack = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(stack != MAP_FAILED);
    pthread_attr_t attr;
    EXPECT_RC(pthread_attr_init(&attr), 0);
    EXPECT_RC(pthread_attr_setstack(&attr, stack, len), 0);
    pthread_t t;
    atomic_store(&late_calls, 0);
    EXPECT_RC(pthread_create(&t, &attr, late_worker, (void *)1), 0);
    EXPECT_RC(pthread_join(t, NULL), 0);
    EXPECT_RC(pthread_attr_destroy(&attr), 0);
    EXPECT(atomic_load(&late_calls) >= 1);
    EXPECT_RC(munmap(stack, len), 0);
    size_t released;  // walks the threads' caches: none may lead into the unmapped stack
    EXPECT_RC(pa_pool_decay(late_pool, 0, &released), 0);
  }
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(late_pool, &st), 0);
  EXPECT(st.in_use_blocks == 0 && st.allocs == st.frees);
  pa_close_report_t rep;
  EXPECT_RC(pa_pool_close_report(late_pool, &rep), 0);
  EXPECT(rep.caches_busy == 0 && rep.in_use_bytes == 0 && rep.mapped_bytes == 0);
  pa_pool_destroy(late_pool);
  EXPECT_RC(pthread_key_delete(late_key), 0);
  puts("late exit: allocator calls from a later key destructor leave nothing behind");
}

// ---- 7. membarrier refused at run time ----

/* Every thread of the process (TSYNC) gets EPERM from membarrier from now on. */
static int refuse_membarrier(void) {
  struct sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog fprog = {.len = sizeof prog / sizeof prog[0], .filter = prog};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog) != 0)
    return errno;
  return 0;
}

// ---- 8. retention pressure: eviction across classes, adoption from exited threads ----

typedef struct {
  pa_pool_t *pool;
  size_t size;
  unsigned rounds;
  void **leave;          /* blocks left for the next generation to free */
  unsigned nleave;
  unsigned long allocs, frees;
} swing_t;

static void *swing_worker(void *arg) {
  swing_t *w = arg;
  void *live[96];
  for (unsigned r = 0; r < w->rounds; r++) {
    unsigned n = 8 + r % 88; /* the working set swings, so slabs empty and fill again */
    for (unsigned i = 0; i < n; i++) {
      EXPECT_RC(pa_alloc(w->pool, w->size, 64, &live[i]), 0);
      stamp(live[i], w->size, (uint32_t)(uintptr_t)w ^ i);
      w->allocs++;
    }
    for (unsigned i = n; i > 0; i--) {
      uint32_t tag;
      memcpy(&tag, live[i - 1], sizeof tag);
      EXPECT(tag == ((uint32_t)(uintptr_t)w ^ (i - 1)));
      EXPECT_RC(pa_free(live[i - 1]), 0);
      w->frees++;
    }
  }
  for (unsigned i = 0; i < w->nleave; i++) {
    EXPECT_RC(pa_alloc(w->pool, w->size, 64, &w->leave[i]), 0);
    w->allocs++;
  }
  return NULL;
}

static void check_retention_pressure(unsigned rounds) {
  enum { GENS = 3, THREADS = 3, LEAVE = 40 };
  static const size_t swing_sizes[THREADS] = {65536, 20000, 4096};
  pa_config_t cfg;
  pa_config_init(&cfg);
  /* per live thread cache: the three workers and the main thread keep at most 2 MiB idle, far
   * below what the three working sets swing by */
  cfg.retain_bytes = 512u << 10;
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  void *left[THREADS][LEAVE];
  unsigned long allocs = 0, frees = 0;
  bool have_left = false;
  for (unsigned g = 0; g < GENS; g++) {
    pthread_t tids[THREADS];
    swing_t ws[THREADS];
    void *next[THREADS][LEAVE];
    for (unsigned t = 0; t < THREADS; t++) {
      ws[t] = (swing_t){pool, swing_sizes[(t + g) % THREADS], rounds, next[t], LEAVE, 0, 0};
      EXPECT_RC(pthread_create(&tids[t], NULL, swing_worker, &ws[t]), 0);
    }
    /* the previous generation's blocks go back from this thread, into slabs of shards whose
     * threads have exited, while the new threads run */
    for (unsigned t = 0; have_left && t < THREADS; t++)
      for (unsigned i = 0; i < LEAVE; i++) {
        EXPECT_RC(pa_free(left[t][i]), 0);
        frees++;
      }
    for (unsigned t = 0; t < THREADS; t++) {
      EXPECT_RC(pthread_join(tids[t], NULL), 0);
      allocs += ws[t].allocs;
      frees += ws[t].frees;
    }
    memcpy(left, next, sizeof left);
    have_left = true;
    EXPECT_RC(pa_pool_check(pool), 0);
  }
  for (unsigned t = 0; t < THREADS; t++)
    for (unsigned i = 0; i < LEAVE; i++) {
      EXPECT_RC(pa_free(left[t][i]), 0);
      frees++;
    }
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.allocs == allocs && st.frees == frees && st.in_use_blocks == 0);
  EXPECT_RC(pa_pool_check(pool), 0);
  pa_close_report_t rep;
  EXPECT_RC(pa_pool_close_report(pool, &rep), 0);
  EXPECT(rep.mapped_bytes == 0 && rep.in_use_bytes == 0);
  pa_pool_destroy(pool);
  printf("retention: %u generations of %u threads, %u KiB budget per thread, %lu blocks\n",
         (unsigned)GENS, (unsigned)THREADS, (unsigned)(cfg.retain_bytes >> 10), allocs);
#ifdef PA_LOCK_STATS
  printf("  slab carves %lu, releases %lu, adoptions %lu, chunk maps %lu, evictions %lu\n",
         (unsigned long)pai_ev[0], (unsigned long)pai_ev[1], (unsigned long)pai_ev[2],
         (unsigned long)pai_ev[3], (unsigned long)pai_ev[4]);
#endif
}

// ---- 9. a shard without a live cache keeps no reservation for idle slabs ----

static void *credit_worker(void *arg) {
  pa_pool_t *pool = arg;
  void *live[40];
  for (unsigned r = 0; r < 50; r++) { /* 0 to 40 blocks of 64 KiB: slabs empty and fill */
    unsigned n = r % 2 ? 40 : 8;
    for (unsigned i = 0; i < n; i++) EXPECT_RC(pa_alloc(pool, 65536, 64, &live[i]), 0);
    for (unsigned i = n; i > 0; i--) EXPECT_RC(pa_free(live[i - 1]), 0);
  }
  return NULL;
}

static uint64_t shard_credit(pa_pool_t *pool, unsigned shard) {
  uint64_t sum = 0;
  for (unsigned node = 0; node < pool->nnodes; node++)
    for (unsigned cls = 0; cls < PAI_NCLASSES; cls++) {
      pai_depot_t *d = pai_depot_at(pool, node, shard, cls);
      pthread_mutex_lock(&d->lock);
      sum += d->idle_credit;
      pthread_mutex_unlock(&d->lock);
    }
  return sum;
}

static void check_orphan_credits(void) {
  pa_config_t cfg;
  pa_config_init(&cfg);
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  for (unsigned t = 0; t < 2; t++) { /* the first cache of the pool, then the second */
    pthread_t tid;
    EXPECT_RC(pthread_create(&tid, NULL, credit_worker, pool), 0);
    EXPECT_RC(pthread_join(tid, NULL), 0);
  }
  for (unsigned shard = 0; shard < PAI_SHARDS; shard++) {
    EXPECT(atomic_load(&pool->shard_caches[shard]) == 0);
    EXPECT(shard_credit(pool, shard) == 0);
  }
  EXPECT_RC(pa_pool_check(pool), 0);
  pa_pool_close(pool);
  pa_pool_destroy(pool);
  puts("orphan credits: none kept");
}

// ---- 10. the retention bound scales with the live thread caches ----

enum { RETAIN_BLOCKS = 128 }; /* 8 MiB of 64 KiB blocks: 16 slabs, 4 times the budget */

typedef struct {
  pa_pool_t *pool;
  unsigned id;
  pthread_barrier_t *all, *last;
} retain_arg_t;

static pthread_barrier_t retain_all, retain_last;

static void *retain_worker(void *arg) {
  retain_arg_t *a = arg;
  void *live[RETAIN_BLOCKS];
  for (unsigned i = 0; i < RETAIN_BLOCKS; i++)
    EXPECT_RC(pa_alloc(a->pool, 65536, 64, &live[i]), 0);
  pthread_barrier_wait(a->all); /* both caches exist before either frees */
  for (unsigned turn = 0; turn < 2; turn++) { /* one after the other: a fixed order */
    if (turn == a->id)
      for (unsigned i = RETAIN_BLOCKS; i > 0; i--) EXPECT_RC(pa_free(live[i - 1]), 0);
    pthread_barrier_wait(a->all);
  }
  pthread_barrier_wait(a->all); /* the main thread has looked */
  if (a->id == 0) pthread_barrier_wait(a->last); /* the other exits first */
  return NULL;
}

static uint64_t pool_idle(pa_pool_t *pool) {
  return atomic_load(&pool->idle_slab_bytes) + __atomic_load_n(&pool->retained, __ATOMIC_RELAXED);
}

static void check_retention_per_thread(void) {
  const uint64_t budget = 2u << 20;
  pa_config_t cfg;
  pa_config_init(&cfg);
  cfg.retain_bytes = budget;
  pa_pool_t *pool;
  EXPECT_RC(pa_pool_create(&cfg, &pool), 0);
  EXPECT_RC(pthread_barrier_init(&retain_all, NULL, 3), 0);
  EXPECT_RC(pthread_barrier_init(&retain_last, NULL, 2), 0);
  pthread_t tids[2];
  retain_arg_t args[2];
  for (unsigned t = 0; t < 2; t++) {
    args[t] = (retain_arg_t){pool, t, &retain_all, &retain_last};
    EXPECT_RC(pthread_create(&tids[t], NULL, retain_worker, &args[t]), 0);
  }
  for (unsigned i = 0; i < 3; i++) pthread_barrier_wait(&retain_all); /* allocated, freed x2 */
  uint64_t both = pool_idle(pool);
  EXPECT(both > budget && both <= 2 * budget);
  pthread_barrier_wait(&retain_all);
  EXPECT_RC(pthread_join(tids[1], NULL), 0);
  uint64_t one = pool_idle(pool); /* its exit gave the excess back */
  EXPECT(one <= budget);
  pthread_barrier_wait(&retain_last);
  EXPECT_RC(pthread_join(tids[0], NULL), 0);
  EXPECT(pool_idle(pool) <= budget); /* no cache left: still one budget */
  pa_stats_t st;
  EXPECT_RC(pa_pool_stats(pool, &st), 0);
  EXPECT(st.allocs == 2 * RETAIN_BLOCKS && st.frees == st.allocs && st.in_use_blocks == 0);
  EXPECT_RC(pa_pool_check(pool), 0);
  pa_close_report_t rep;
  EXPECT_RC(pa_pool_close_report(pool, &rep), 0);
  EXPECT(rep.mapped_bytes == 0);
  pa_pool_destroy(pool);
  pthread_barrier_destroy(&retain_all);
  pthread_barrier_destroy(&retain_last);
  printf("retention per thread: %lu KiB idle with two threads, %lu KiB after one exited (budget "
         "%lu KiB each)\n", (unsigned long)(both >> 10), (unsigned long)(one >> 10),
         (unsigned long)(budget >> 10));
}

int main(void) {
  check_misuse();
  check_faults();
  check_threads(env_or("PA_C_THREADS", 4), env_or("PA_C_ROUNDS", 20000));
  check_close_with_blocks_out();
  /* helgrind models neither C11 atomics nor membarrier, the reclaim's whole synchronisation
   * (see tlcache.c); ThreadSanitizer models the atomics and runs it */
  if (env_or("PA_C_RECLAIM", 1)) check_reclaim(env_or("PA_C_THREADS", 4), env_or("PA_C_ROUNDS", 20000));
  /* ThreadSanitizer tears its per-thread state down in a key destructor of its own, before a
   * re-armed destructor's last round: under it, part 6 crashes inside the runtime */
  if (env_or("PA_C_LATE", 1)) check_late_exit();
  check_retention_pressure(env_or("PA_C_ROUNDS", 20000) / 20 + 20);
  check_orphan_credits();
  check_retention_per_thread();
  /* last: the filter stays for the rest of the process */
  if (env_or("PA_C_RECLAIM", 1) && env_or("PA_C_SECCOMP", 1)) {
    EXPECT_RC(refuse_membarrier(), 0);
    check_reclaim(env_or("PA_C_THREADS", 4), env_or("PA_C_ROUNDS", 20000) / 10);
    EXPECT(!pai_reclaim_live_supported());
  }
  puts("ok");
  return 0;
}
