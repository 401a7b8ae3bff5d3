/* SPDX-License-Identifier: MIT */
/* --- alloc_bench.c: alloc+free pairs of poolalloc against glibc, jemalloc, mimalloc ----------
 *
 * Workloads: fixed 64 B, 4 KiB and 64 KiB in LIFO order (batches of 100 allocated,
 * then freed newest first); mixed sizes 16 B..16 KiB with 1000 live blocks, one replaced at
 * random per pair. Each at 1 and 2 threads (every thread runs the same loop; poolalloc uses one
 * pool shared by the threads). Allocators alternate inside every round; the figure is ns per
 * alloc+free pair per thread, median and min-max over the rounds. jemalloc and mimalloc are
 * loaded with dlopen, so each keeps its own heap. "freelist" is a bare per-thread intrusive
 * free list per 64-byte size step: the floor any allocator pays.
 *
 * Build and run: bench/run_alloc_bench.sh (compiles the core sources directly, -O2).
 * ------------------------------------------------------------------------------------------- */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "poolalloc.h"
#ifdef PA_LOCK_STATS
#include <stdatomic.h>
extern _Atomic uint64_t pai_lock_taken, pai_lock_contended, pai_ev[6];
static double lock_taken[2][4], lock_contended[2][4]; /* [threads-1][workload], summed */
static double events[2][4][6]; /* carves, releases, adoptions, maps, evictions, counter writes */
#endif

#define LIFO_DEPTH 100
#define MIXED_LIVE 1000
#define MAX_THREADS 2

typedef struct alloc_api_s {
  const char *name;
  void *(*alloc)(size_t);
  void (*release)(void *);
} alloc_api_t;

// ---- poolalloc ----

static pa_pool_t *bench_pool;

static void *pa_alloc_fn(size_t n) {
  void *p;
  return pa_alloc(bench_pool, n, 64, &p) == 0 ? p : NULL;
}

static void pa_free_fn(void *p) { pa_free(p); }

// ---- the floor: a bare intrusive free list per 64-byte step, per thread ----

#define FL_STEPS 1025
#define FL_ARENAS 64
typedef struct fl_node_s { struct fl_node_s *next; } fl_node_t;
static __thread fl_node_t *fl_heads[FL_STEPS];
static __thread char *fl_bump, *fl_end;
static __thread char *fl_arenas[FL_ARENAS];
static __thread int fl_narenas;

static void *fl_alloc(size_t n) {
  size_t step = (n + 63) >> 6;
  fl_node_t *h = fl_heads[step];
  if (__builtin_expect(h != NULL, 1)) {
    fl_heads[step] = h->next;
    return h;
  }
  size_t bytes = (step << 6) + 64; /* one header word keeps the step */
  if (fl_bump == NULL || fl_bump + bytes > fl_end) {
    if (fl_narenas == FL_ARENAS) return NULL;
    fl_bump = aligned_alloc(4096, (size_t)64 << 20);
    if (fl_bump == NULL) return NULL;
    fl_arenas[fl_narenas++] = fl_bump;
    fl_end = fl_bump + ((size_t)64 << 20);
  }
  size_t *hdr = (size_t *)fl_bump;
  *hdr = step;
  fl_bump += bytes;
  return (char *)hdr + 64;
}

static void fl_free(void *p) {
  size_t step = *(size_t *)((char *)p - 64);
  fl_node_t *node = p;
  node->next = fl_heads[step];
  fl_heads[step] = node;
}

/* A thread's lists and arenas go at its end. */
static void fl_reset(void) {
  for (int i = 0; i < fl_narenas; i++) free(fl_arenas[i]);
  fl_narenas = 0;
  fl_bump = fl_end = NULL;
  memset(fl_heads, 0, sizeof fl_heads);
}

// ---- dlopen'd allocators ----

static int load(alloc_api_t *api, const char *name, const char *lib, const char *a,
                const char *f) {
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) return -1;
  api->name = name;
  api->alloc = (void *(*)(size_t))dlsym(h, a);
  api->release = (void (*)(void *))dlsym(h, f);
  return api->alloc && api->release ? 0 : -1;
}

// ---- workloads ----

typedef struct job_s {
  const alloc_api_t *api;
  int kind; /* 0: fixed LIFO, 1: mixed */
  size_t size;
  long pairs;
  uint64_t seed;
  double ns, cpu_ns;
} job_t;

static double clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void run_fixed(job_t *j) {
  void *ptrs[LIFO_DEPTH];
  long rounds = j->pairs / LIFO_DEPTH;
  for (long r = 0; r < rounds; r++) {
    for (int i = 0; i < LIFO_DEPTH; i++) {
      ptrs[i] = j->api->alloc(j->size);
      *(volatile char *)ptrs[i] = (char)i;
    }
    for (int i = LIFO_DEPTH - 1; i >= 0; i--) j->api->release(ptrs[i]);
  }
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static size_t mixed_size(uint64_t *s) { return 16 + (size_t)(xorshift(s) % (16384 - 16 + 1)); }

static void run_mixed(job_t *j) {
  void *live[MIXED_LIVE];
  uint64_t s = j->seed;
  for (int i = 0; i < MIXED_LIVE; i++) live[i] = j->api->alloc(mixed_size(&s));
  for (long r = 0; r < j->pairs; r++) {
    unsigned i = (unsigned)(xorshift(&s) % MIXED_LIVE);
    j->api->release(live[i]);
    live[i] = j->api->alloc(mixed_size(&s));
    *(volatile char *)live[i] = 1;
  }
  for (int i = 0; i < MIXED_LIVE; i++) j->api->release(live[i]);
}

static void *thread_main(void *arg) {
  job_t *j = arg;
  double t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  if (j->kind == 0) run_fixed(j);
  else run_mixed(j);
  j->ns = (clock_ns(CLOCK_MONOTONIC) - t0) / (double)j->pairs;
  j->cpu_ns = (clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / (double)j->pairs;
  fl_reset();
  return NULL;
}

/* ns per pair per thread (wall, and CPU time in *cpu), averaged over the threads. */
static double measure(const alloc_api_t *api, int kind, size_t size, long pairs, int threads,
                      double *cpu) {
  job_t jobs[MAX_THREADS];
  pthread_t tids[MAX_THREADS];
  if (threads == 1) { /* in the main thread, where glibc uses its main arena */
    jobs[0] = (job_t){api, kind, size, pairs, 0x9E3779B97F4A7C15ull, 0, 0};
    thread_main(&jobs[0]);
    *cpu = jobs[0].cpu_ns;
    return jobs[0].ns;
  }
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){api, kind, size, pairs, 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1), 0, 0};
    pthread_create(&tids[t], NULL, thread_main, &jobs[t]);
  }
  double sum = 0, cpu_sum = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    sum += jobs[t].ns;
    cpu_sum += jobs[t].cpu_ns;
  }
  *cpu = cpu_sum / threads;
  return sum / threads;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// ---- main ----

#define MAX_APIS 5
#define MAX_ROUNDS 31
#define NWORK 4

static const char *work_names[NWORK] = {"fixed 64 B", "fixed 4 KiB", "fixed 64 KiB", "mixed"};
static const size_t work_sizes[NWORK] = {64, 4096, 65536, 0};

typedef double results_t[2][NWORK][MAX_APIS][MAX_ROUNDS];

static double median_of(double *v, int rounds) {
  qsort(v, (size_t)rounds, sizeof(double), cmp_double);
  return v[rounds / 2];
}

static void print_table(const char *what, results_t res, const alloc_api_t *apis, int n,
                        int rounds) {
  printf("\n%s ns per alloc+free pair per thread\n\n", what);
  printf("| threads | workload | allocator | median | min-max | vs mimalloc |\n");
  printf("|---|---|---|---|---|---|\n");
  for (int t = 0; t < 2; t++)
    for (int w = 0; w < NWORK; w++) {
      double med[MAX_APIS], mi = 0;
      for (int a = 0; a < n; a++) {
        med[a] = median_of(res[t][w][a], rounds);
        if (strcmp(apis[a].name, "mimalloc") == 0) mi = med[a];
      }
      for (int a = 0; a < n; a++) {
        printf("| %d | %s | %s | %.1f | %.1f-%.1f | ", t + 1, work_names[w], apis[a].name,
               med[a], res[t][w][a][0], res[t][w][a][rounds - 1]);
        if (mi > 0) printf("%.2fx |\n", med[a] / mi);
        else printf("n/a |\n");
      }
    }
}

/* Throughput of 2 threads over 1 thread, from wall-clock medians. */
static void print_scaling(results_t res, const alloc_api_t *apis, int n, int rounds) {
  printf("\n2-thread throughput / 1-thread throughput (wall-clock medians)\n\n");
  printf("| allocator | fixed 64 B | fixed 4 KiB | fixed 64 KiB | mixed |\n|---|---|---|---|---|\n");
  for (int a = 0; a < n; a++) {
    printf("| %s |", apis[a].name);
    for (int w = 0; w < NWORK; w++)
      printf(" %.2f |", 2.0 * median_of(res[0][w][a], rounds) / median_of(res[1][w][a], rounds));
    printf("\n");
  }
}

/* Is `name` one of the comma-separated names in `list`? */
static int in_list(const char *list, const char *name) {
  size_t len = strlen(name);
  for (const char *p = list; *p;) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == len && strncmp(p, name, len) == 0) return 1;
    if (end == NULL) break;
    p = end + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  long pairs = argc > 2 ? atol(argv[2]) : 1000000;
  if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 5;
  alloc_api_t apis[MAX_APIS];
  int n = 0;
  apis[n++] = (alloc_api_t){"poolalloc", pa_alloc_fn, pa_free_fn};
  apis[n++] = (alloc_api_t){"glibc", malloc, free};
  if (load(&apis[n], "jemalloc", "libjemalloc.so.2", "malloc", "free") == 0) n++;
  if (load(&apis[n], "mimalloc", "libmimalloc.so.2", "mi_malloc", "mi_free") == 0) n++;
  apis[n++] = (alloc_api_t){"freelist", fl_alloc, fl_free};
  if (argc > 3) { /* keep only the named allocators, comma-separated (for profiling) */
    int m = 0;
    for (int a = 0; a < n; a++)
      if (in_list(argv[3], apis[a].name)) apis[m++] = apis[a];
    n = m;
  }
  pa_config_t cfg; /* PA_BENCH_RETAIN=bytes: the pool's retain_bytes (default 8 MiB) */
  pa_config_init(&cfg);
  const char *retain = getenv("PA_BENCH_RETAIN");
  if (retain && *retain) cfg.retain_bytes = strtoull(retain, NULL, 10);
  if (n == 0 || pa_pool_create(&cfg, &bench_pool) != 0) return 1;
  static double res[2][NWORK][MAX_APIS][MAX_ROUNDS], cpu[2][NWORK][MAX_APIS][MAX_ROUNDS];
  for (int r = 0; r < rounds; r++)
    for (int t = 0; t < 2; t++)
      for (int w = 0; w < NWORK; w++)
        for (int k = 0; k < n; k++) {
          int a = (k + r) % n; /* rotate who goes first */
#ifdef PA_LOCK_STATS
          uint64_t taken0 = atomic_load(&pai_lock_taken), cont0 = atomic_load(&pai_lock_contended);
          uint64_t ev0[6];
          for (int e = 0; e < 6; e++) ev0[e] = atomic_load(&pai_ev[e]);
#endif
          res[t][w][a][r] = measure(&apis[a], work_sizes[w] == 0, work_sizes[w], pairs, t + 1,
                                    &cpu[t][w][a][r]);
#ifdef PA_LOCK_STATS
          if (apis[a].alloc == pa_alloc_fn) {
            lock_taken[t][w] += (double)(atomic_load(&pai_lock_taken) - taken0);
            lock_contended[t][w] += (double)(atomic_load(&pai_lock_contended) - cont0);
            for (int e = 0; e < 6; e++) events[t][w][e] += (double)(atomic_load(&pai_ev[e]) - ev0[e]);
          }
#endif
        }
  print_table("wall-clock", res, apis, n, rounds);
  print_table("CPU time (CLOCK_THREAD_CPUTIME_ID)", cpu, apis, n, rounds);
  print_scaling(res, apis, n, rounds);
#ifdef PA_LOCK_STATS
  printf("\npoolalloc depot lock acquisitions per 1000 pairs per thread (contended ones: a "
         "trylock failed first), and slab carves, slab releases, adoptions of an empty slab from "
         "another shard, chunk maps, slabs of other classes evicted, and writes to the pool-wide idle-slab and "
         "live-bytes counters per 1000 pairs per thread\n\n"
         "| threads | workload | taken | contended | contended %% | carves | releases | adoptions "
         "| chunk maps | evictions | counter writes |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int t = 0; t < 2; t++)
    for (int w = 0; w < NWORK; w++) {
      double per = 1000.0 / ((double)pairs * rounds * (t + 1));
      printf("| %d | %s | %.2f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", t + 1,
             work_names[w], lock_taken[t][w] * per, lock_contended[t][w] * per,
             lock_taken[t][w] ? 100.0 * lock_contended[t][w] / lock_taken[t][w] : 0.0,
             events[t][w][0] * per, events[t][w][1] * per, events[t][w][2] * per,
             events[t][w][3] * per, events[t][w][4] * per, events[t][w][5] * per);
    }
#endif
  printf("\nrounds=%d pairs per run per thread=%ld\n", rounds, pairs);
  pa_pool_close(bench_pool);
  pa_pool_destroy(bench_pool);
  return 0;
}
