/* SPDX-License-Identifier: MIT */
/* --- numa_check.c: does binding memory to a NUMA node work here, and what does distance cost? --
 *
 * Stand-alone (no libnuma, no poolalloc): raw mbind / get_mempolicy / move_pages syscalls.
 * For every node with memory: map a buffer, bind it to that node (MPOL_BIND) BEFORE the first
 * touch, touch it, then ask the kernel where each page really is (get_mempolicy with
 * MPOL_F_NODE|MPOL_F_ADDR, and move_pages with no target as a second witness).
 * Then, for every node with CPUs: pin this thread to that node's CPUs and time a read (sum of
 * 64-bit words) over each node's buffer. Output: one placement line per node and a bandwidth
 * matrix (GB/s, best and median of the repetitions).
 *
 * Build: gcc -O2 -std=c11 -o numa_check numa_check.c      Run: ./numa_check [MiB] [reps]
 * ------------------------------------------------------------------------------------------- */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 64
#define MPOL_BIND_ 2
#define MPOL_F_NODE_ 1
#define MPOL_F_ADDR_ 2

typedef struct node_s {
  int id;
  int has_memory;
  cpu_set_t cpus;
  int ncpus;
  uint64_t *buf;
} node_t;

static node_t nodes[MAX_NODES];
static int node_count;

// ---- sysfs ----

static int parse_list(const char *path, int *out, int max) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[4096] = {0};
  if (!fgets(line, sizeof line, f)) line[0] = 0;
  fclose(f);
  int n = 0;
  for (char *tok = strtok(line, ",\n"); tok && n < max; tok = strtok(NULL, ",\n")) {
    int lo = atoi(tok), hi = lo;
    char *dash = strchr(tok, '-');
    if (dash) hi = atoi(dash + 1);
    for (int i = lo; i <= hi && n < max; i++) out[n++] = i;
  }
  return n;
}

static void read_nodes(void) {
  int ids[MAX_NODES], mem[MAX_NODES];
  char path[256];
  int n = parse_list("/sys/devices/system/node/online", ids, MAX_NODES);
  int nm = parse_list("/sys/devices/system/node/has_memory", mem, MAX_NODES);
  if (n <= 0) {  // no NUMA tree: the whole machine is node 0
    n = 1, ids[0] = 0, nm = 1, mem[0] = 0;
  }
  for (int i = 0; i < n; i++) {
    node_t *nd = &nodes[node_count++];
    nd->id = ids[i];
    for (int j = 0; j < nm; j++) nd->has_memory |= mem[j] == ids[i];
    static int cpus[4096];
    snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpulist", ids[i]);
    int nc = parse_list(path, cpus, 4096);
    CPU_ZERO(&nd->cpus);
    if (nc < 0) sched_getaffinity(0, sizeof nd->cpus, &nd->cpus);
    for (int c = 0; c < nc; c++) CPU_SET(cpus[c], &nd->cpus);
    nd->ncpus = CPU_COUNT(&nd->cpus);
  }
}

// ---- placement ----

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int page_node(void *p) {
  int node = -1;
  if (syscall(SYS_get_mempolicy, &node, NULL, 0UL, p, MPOL_F_NODE_ | MPOL_F_ADDR_) != 0) return -errno;
  return node;
}

static int bind_and_touch(node_t *nd, size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno;
  unsigned long mask[MAX_NODES / 64 + 1] = {0};
  mask[nd->id / 64] |= 1UL << (nd->id % 64);
  if (syscall(SYS_mbind, p, bytes, MPOL_BIND_, mask, (unsigned long)MAX_NODES + 1, 0U) != 0) {
    int err = errno;
    munmap(p, bytes);
    return err;
  }
  memset(p, 1, bytes);  // first touch after binding: the pages are allocated on the node now
  nd->buf = p;
  return 0;
}

static void verify(node_t *nd, size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = bytes / page, here = 0, other = 0;
  int first_other = -1;
  for (size_t i = 0; i < pages; i++) {
    int node = page_node((char *)nd->buf + i * page);
    if (node == nd->id) here++;
    else if (other++ == 0) first_other = node;
  }
  enum { SAMPLE = 64 };
  void *addr[SAMPLE];
  int status[SAMPLE], agree = 0;
  for (int i = 0; i < SAMPLE; i++) addr[i] = (char *)nd->buf + (pages * (size_t)i / SAMPLE) * page;
  long rc = syscall(SYS_move_pages, 0, (unsigned long)SAMPLE, addr, NULL, status, 0);
  for (int i = 0; rc == 0 && i < SAMPLE; i++) agree += status[i] == nd->id;
  printf("node %d: bound with mbind; get_mempolicy: %zu/%zu pages on node %d", nd->id, here, pages,
         nd->id);
  if (other) printf(" (%zu elsewhere, first on %d)", other, first_other);
  if (rc == 0) printf("; move_pages: %d/%d sampled pages agree\n", agree, SAMPLE);
  else printf("; move_pages failed: %s\n", strerror(errno));
}

// ---- bandwidth ----

static uint64_t sink;

static double read_pass(const uint64_t *buf, size_t words) {
  double t0 = now();
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t i = 0; i + 3 < words; i += 4) s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
  sink += s0 + s1 + s2 + s3;
  return now() - t0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void bandwidth(size_t bytes, int reps) {
  printf("\nread bandwidth, GB/s (best / median of %d passes over %zu MiB, one thread)\n", reps,
         bytes >> 20);
  printf("%-14s", "cpu \\ memory");
  for (int m = 0; m < node_count; m++)
    if (nodes[m].buf) printf("   node %-11d", nodes[m].id);
  printf("\n");
  double t[64];
  for (int c = 0; c < node_count; c++) {
    if (!nodes[c].ncpus) continue;
    if (sched_setaffinity(0, sizeof nodes[c].cpus, &nodes[c].cpus) != 0) {
      printf("cpus of node %d: cannot pin (%s)\n", nodes[c].id, strerror(errno));
      continue;
    }
    printf("cpus of node %-2d", nodes[c].id);
    for (int m = 0; m < node_count; m++) {
      if (!nodes[m].buf) continue;
      read_pass(nodes[m].buf, bytes / 8);  // warm the TLB and caches of the path
      for (int r = 0; r < reps && r < 64; r++) t[r] = read_pass(nodes[m].buf, bytes / 8);
      qsort(t, (size_t)(reps < 64 ? reps : 64), sizeof t[0], cmp_double);
      printf("   %6.2f / %6.2f  ", (double)bytes / t[0] / 1e9, (double)bytes / t[reps / 2] / 1e9);
    }
    printf("\n");
  }
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
  int reps = argc > 2 ? atoi(argv[2]) : 7;
  if (mib < 4) mib = 4;
  if (reps < 1) reps = 1;
  size_t bytes = mib << 20;
  read_nodes();
  printf("nodes online: %d\n", node_count);
  for (int i = 0; i < node_count; i++) {
    node_t *nd = &nodes[i];
    printf("node %d: %d cpus, %s\n", nd->id, nd->ncpus, nd->has_memory ? "memory" : "no memory");
    if (!nd->has_memory) continue;
    int err = bind_and_touch(nd, bytes);
    if (err) printf("node %d: mbind/mmap refused: %s (placement would be unbound)\n", nd->id, strerror(err));
    else verify(nd, bytes);
  }
  bandwidth(bytes, reps);
  if (node_count < 2) printf("\nonly one node: no remote figure exists on this machine\n");
  return sink == 42 ? 1 : 0;  // keeps the sums alive
}
