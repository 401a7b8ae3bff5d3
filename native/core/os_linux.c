/* SPDX-License-Identifier: MIT */
/* --- os_linux.c: mmap/munmap/mbind/getcpu/get_mempolicy through raw syscalls -----------------
 *
 * Raw syscalls keep libnuma out of the build. Two test hooks live here: fault injection
 * (pa_fault_set: after `skip` successful calls, fail `count` calls with `err`) and a fake NUMA
 * topology (pa_numa_fake) that answers node queries from a table and records mbind instead of
 * calling it.
 *
 * Threads: the fault counters are atomics; the fake topology is written only by pa_numa_fake,
 * which tests call while no pool is in use on another thread (documented in the header). The
 * fake current CPU is per thread.
 * ------------------------------------------------------------------------------------------- */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

#define MPOL_BIND_MODE 2
#define MPOL_F_NODE_FLAG (1 << 0)
#define MPOL_F_ADDR_FLAG (1 << 1)

// ---- the real OS ----

static int real_map(size_t len, void **out) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return errno ? errno : ENOMEM;
  *out = p;
  return 0;
}

static int real_unmap(void *p, size_t len) { return munmap(p, len) == 0 ? 0 : errno; }

static int real_bind(void *p, size_t len, int node) {
  unsigned long mask[PAI_MAX_NODES / (8 * sizeof(unsigned long))] = {0};
  if (node < 0 || node >= PAI_MAX_NODES) return EINVAL;
  mask[(unsigned)node / (8 * sizeof(unsigned long))] |= 1ul << ((unsigned)node % (8 * sizeof(unsigned long)));
  long rc = syscall(SYS_mbind, p, len, MPOL_BIND_MODE, mask, (unsigned long)PAI_MAX_NODES + 1, 0);
  return rc == 0 ? 0 : errno;
}

static int real_page_node(const void *p, int *node) {
  int mode = -1;
  long rc = syscall(SYS_get_mempolicy, &mode, NULL, 0ul, p, MPOL_F_NODE_FLAG | MPOL_F_ADDR_FLAG);
  if (rc != 0) return errno;
  *node = mode;
  return 0;
}

static int real_getcpu(unsigned *cpu, unsigned *node) {
  long rc = syscall(SYS_getcpu, cpu, node, NULL);
  return rc == 0 ? 0 : errno;
}

/* Highest number in a list such as "0", "0-3" or "0,2-5", plus one. */
static unsigned parse_node_list(const char *s) {
  unsigned best = 0, cur = 0;
  int have = 0;
  for (;; s++) {
    if (*s >= '0' && *s <= '9') { cur = cur * 10 + (unsigned)(*s - '0'); have = 1; continue; }
    if (have && cur + 1 > best) best = cur + 1;
    cur = 0; have = 0;
    if (*s == '\0' || *s == '\n') break;
  }
  return best;
}

static int real_node_count(unsigned *out) {
  char buf[256] = {0};
  int fd = open("/sys/devices/system/node/online", O_RDONLY | O_CLOEXEC);
  *out = 1;
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n > 0) {
    unsigned c = parse_node_list(buf);
    if (c > 0) *out = c > PAI_MAX_NODES ? PAI_MAX_NODES : c;
  }
  return 0;
}

static const pai_os_t real_os = {real_map, real_unmap, real_bind, real_page_node, real_getcpu,
                                 real_node_count};

// ---- the fake topology ----

static _Atomic unsigned fake_nodes;  /* 0: real OS; read by any thread, written by tests */
static unsigned fake_ncpus;
static int fake_map[1024];
static __thread int fake_cpu;

static int fake_bind(void *p, size_t len, int node) {
  (void)p; (void)len;
  return (node >= 0 && (unsigned)node < fake_nodes) ? 0 : EINVAL;
}

static int fake_page_node(const void *p, int *node) {
  pai_chunk_t *c = pai_chunk_lookup(p);
  if (c == NULL || c->bound_node < 0) return EFAULT;
  *node = c->bound_node;
  return 0;
}

static int fake_getcpu(unsigned *cpu, unsigned *node) {
  *cpu = (unsigned)fake_cpu;
  *node = (unsigned)fake_map[(unsigned)fake_cpu % (fake_ncpus ? fake_ncpus : 1)];
  return 0;
}

static int fake_node_count(unsigned *out) { *out = fake_nodes; return 0; }

static const pai_os_t fake_os = {real_map, real_unmap, fake_bind, fake_page_node, fake_getcpu,
                                 fake_node_count};

const pai_os_t *pai_os(void) { return fake_nodes ? &fake_os : &real_os; }

int pai_os_fake_active(void) { return fake_nodes != 0; }

int pa_numa_fake(unsigned nodes, const int *cpu_to_node, unsigned ncpus) {
  if (nodes == 0) { fake_nodes = 0; fake_ncpus = 0; return 0; }
  if (nodes > PAI_MAX_NODES || ncpus == 0 || ncpus > 1024 || cpu_to_node == NULL) return EINVAL;
  for (unsigned i = 0; i < ncpus; i++)
    if (cpu_to_node[i] < 0 || (unsigned)cpu_to_node[i] >= nodes) return EINVAL;
  memcpy(fake_map, cpu_to_node, ncpus * sizeof(int));
  fake_ncpus = ncpus;
  fake_nodes = nodes;
  return 0;
}

int pa_numa_fake_set_cpu(int cpu) {
  if (fake_nodes == 0) return ENODEV;
  if (cpu < 0 || (unsigned)cpu >= fake_ncpus) return EINVAL;
  fake_cpu = cpu;
  pai_tcache_cpu_moved();
  return 0;
}

// ---- fault injection ----

typedef struct fault_s {
  _Atomic unsigned skip, count;
  _Atomic int err;
} fault_t;

static fault_t faults[2];

static fault_t *fault_of(unsigned what) {
  if (what == PA_FAULT_MAP) return &faults[0];
  if (what == PA_FAULT_BIND) return &faults[1];
  return NULL;
}

int pa_fault_set(unsigned what, unsigned skip, unsigned count, int err) {
  fault_t *f = fault_of(what);
  if (f == NULL || (count && err <= 0)) return EINVAL;
  atomic_store(&f->count, 0);
  atomic_store(&f->skip, skip);
  atomic_store(&f->err, err);
  atomic_store(&f->count, count);
  return 0;
}

/* 0 when the call may proceed, else the injected error. */
static int fault_take(unsigned what) {
  fault_t *f = fault_of(what);
  unsigned c = atomic_load(&f->count);
  while (c > 0) {
    unsigned s = atomic_load(&f->skip);
    if (s > 0) {
      if (atomic_compare_exchange_weak(&f->skip, &s, s - 1)) return 0;
      continue;
    }
    if (atomic_compare_exchange_weak(&f->count, &c, c - 1)) return atomic_load(&f->err);
  }
  return 0;
}

// ---- the entry points the core uses ----

int pai_os_map_aligned(size_t len, size_t align, void **out) {
  int err = fault_take(PA_FAULT_MAP);
  if (err) return err;
  void *raw;
  size_t span = len + align;
  if (span < len) return EOVERFLOW;
  err = pai_os()->map(span, &raw);
  if (err) return err;
  uintptr_t a = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
  size_t head = a - (uintptr_t)raw, tail = span - head - len;
  if (head) pai_os()->unmap(raw, head);
  if (tail) pai_os()->unmap((void *)(a + len), tail);
  *out = (void *)a;
  return 0;
}

int pai_os_unmap(void *p, size_t len) { return pai_os()->unmap(p, len); }

int pai_os_bind(void *p, size_t len, int node) {
  int err = fault_take(PA_FAULT_BIND);
  return err ? err : pai_os()->bind(p, len, node);
}

int pai_os_random(void *buf, size_t n) {
  long rc = syscall(SYS_getrandom, buf, n, 0);
  return rc == (long)n ? 0 : EIO;
}

int pai_os_fake_cpu_node(int cpu, unsigned *node) {
  if (fake_nodes == 0 || cpu < 0 || (unsigned)cpu >= fake_ncpus) return EINVAL;
  *node = (unsigned)fake_map[cpu];
  return 0;
}
