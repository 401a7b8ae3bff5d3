/* SPDX-License-Identifier: MIT */
/* --- probe.c: can this process use io_uring, and if not, why ------------------------------
 *
 * io_uring can be missing for reasons a user can act on, and the answer must say which:
 * the sysctl kernel.io_uring_disabled (1: only the io_uring_group may, 2: nobody), a seccomp
 * filter (containers commonly return EPERM or ENOSYS for io_uring_setup), the memlock limit
 * (ring memory was charged to RLIMIT_MEMLOCK before 5.12), an old kernel (no provided-buffer
 * rings before 5.19, no multishot receive before 6.0). The probe builds a real ring, asks the
 * kernel which opcodes it knows (IORING_REGISTER_PROBE) and registers a small buffer ring.
 * ------------------------------------------------------------------------------------------- */
#include "pa_uring.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#define PROBE_OPS 256

static int read_int_field(const char *path, const char *key, int *out) {
  FILE *f = fopen(path, "r");
  if (!f) return ENOENT;
  char line[256];
  int found = ENOENT;
  size_t klen = strlen(key);
  while (found && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && sscanf(line + klen, " %d", out) == 1) found = 0;
  }
  fclose(f);
  return found;
}

static void read_environment(pa_uring_probe_t *o) {
  if (read_int_field("/proc/sys/kernel/io_uring_disabled", "", &o->disabled)) o->disabled = -1;
  if (read_int_field("/proc/self/status", "Seccomp:", &o->seccomp)) o->seccomp = -1;
  struct rlimit rl;
  o->memlock_cur = 0;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
    o->memlock_cur = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

static int kernel_at_least(int major, int minor) {
  struct utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return 0;
  return ma > major || (ma == major && mi >= minor);
}

static void explain_setup_failure(pa_uring_probe_t *o, int err) {
  const char *why;
  if (o->disabled == 2)
    why = "io_uring is disabled by the sysctl kernel.io_uring_disabled=2";
  else if (o->disabled == 1 && err == EPERM)
    why = "io_uring is restricted to the io_uring_group (kernel.io_uring_disabled=1)";
  else if ((err == EPERM || err == ENOSYS) && o->seccomp == 2)
    why = "a seccomp filter refuses io_uring_setup (container or sandbox policy)";
  else if (err == ENOSYS)
    why = "the kernel has no io_uring (built without CONFIG_IO_URING)";
  else if (err == ENOMEM)
    why = "the kernel refused ring memory; check RLIMIT_MEMLOCK (ulimit -l)";
  else if (err == EINVAL)
    why = "the kernel is too old for the ring flags we need";
  else
    why = "io_uring_setup failed";
  snprintf(o->reason, sizeof o->reason, "%s (io_uring_setup: %s, memlock %llu KiB)", why,
           strerror(err), (unsigned long long)(o->memlock_cur / 1024));
}

static int has_op(const struct io_uring_probe *p, unsigned op) {
  return op < p->ops_len && (p->ops[op].flags & IO_URING_OP_SUPPORTED);
}

static const struct {
  unsigned op;
  const char *name;
} required_ops[] = {
    {IORING_OP_ACCEPT, "ACCEPT"},   {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},       {IORING_OP_SENDMSG, "SENDMSG"},
    {IORING_OP_POLL_ADD, "POLL_ADD"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    {IORING_OP_SPLICE, "SPLICE"},
};

static int check_ops(pa_uring_probe_t *o, int fd) {
  size_t sz = sizeof(struct io_uring_probe) + PROBE_OPS * sizeof(struct io_uring_probe_op);
  struct io_uring_probe *p = calloc(1, sz);
  if (!p) return ENOMEM;
  int err = 0;
  if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, p, PROBE_OPS) < 0) {
    err = errno;
    snprintf(o->reason, sizeof o->reason, "IORING_REGISTER_PROBE failed: %s", strerror(err));
  }
  for (size_t i = 0; !err && i < sizeof required_ops / sizeof required_ops[0]; i++) {
    if (!has_op(p, required_ops[i].op)) {
      err = EOPNOTSUPP;
      snprintf(o->reason, sizeof o->reason, "the kernel lacks IORING_OP_%s", required_ops[i].name);
    }
  }
  o->has_send_zc = has_op(p, IORING_OP_SEND_ZC);
  o->has_splice = has_op(p, IORING_OP_SPLICE);
  free(p);
  return err;
}

static int check_features(pa_uring_probe_t *o) {
  const unsigned need = IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL;
  if ((o->features & need) == need) return 0;
  snprintf(o->reason, sizeof o->reason,
           "the kernel lacks io_uring features EXT_ARG/NODROP/FAST_POLL (features 0x%x)",
           o->features);
  return EOPNOTSUPP;
}

static int check_bufring(pa_uring_probe_t *o, pa_uring_t *ring) {
  pa_bufring_t *br = NULL;
  int err = pa_uring_bufring_create(ring, 0, 8, 0, &br);
  if (err) {
    snprintf(o->reason, sizeof o->reason,
             "IORING_REGISTER_PBUF_RING refused (%s): provided-buffer rings need Linux 5.19",
             strerror(err));
    return err;
  }
  o->has_pbuf_ring = 1;
  err = pa_uring_bufring_destroy(br);
  if (err) return err;
  /* optional: incremental consumption (6.12); without it every receive takes a whole buffer */
  if (pa_uring_bufring_create(ring, 0, 8, PA_URING_BUFRING_INC, &br) == 0) {
    o->has_pbuf_inc = 1;
    return pa_uring_bufring_destroy(br);
  }
  return 0;
}

static int check_multishot(pa_uring_probe_t *o) {
  o->has_multishot = (unsigned)kernel_at_least(6, 0);
  if (o->has_multishot) return 0;
  snprintf(o->reason, sizeof o->reason, "multishot receive needs Linux 6.0");
  return EOPNOTSUPP;
}

int pa_uring_probe(pa_uring_probe_t *o) {
  if (!o) return EINVAL;
  memset(o, 0, sizeof *o);
  read_environment(o);
  pa_uring_t *ring = NULL;
  int err = pa_uring_create(8, PA_URING_SINGLE_ISSUER, &ring);
  if (err) {
    explain_setup_failure(o, err);
    o->code = err;
    return 0;
  }
  o->setup_flags = pa_uring_setup_flags(ring);
  o->features = pa_uring_features(ring);
  err = check_features(o);
  if (!err) err = check_ops(o, pa_uring_fd(ring));
  if (!err) err = check_bufring(o, ring);
  if (!err) err = check_multishot(o);
  pa_uring_destroy(ring);
  o->code = err;
  if (!err) snprintf(o->reason, sizeof o->reason, "io_uring is available");
  return 0;
}
