/* SPDX-License-Identifier: MIT */
/* --- uring.c: raw io_uring (setup, submission, batched reaping, provided-buffer rings) ---------
 *
 * No liburing: three system calls (io_uring_setup, io_uring_enter, io_uring_register) and the
 * mmap'd rings. Debian's liburing 2.3 lacks the buffer-ring helpers, and the subset we need is
 * small. Layout and memory ordering follow the kernel's io_uring.h and the io_uring(7) and
 * io_uring_register_buf_ring(3) man pages: we store the SQ tail and the CQ head with release
 * semantics and load the kernel's SQ head and CQ tail with acquire semantics.
 *
 * Who may touch what: a ring is driven by one thread at a time (no lock here). By default the
 * ring is not bound to a task (COOP_TASKRUN), so a loop may be built in one thread, run in
 * another and closed in a third. With PA_URING_SINGLE_ISSUER the kernel binds the ring to the
 * first thread that enters it (SINGLE_ISSUER + DEFER_TASKRUN: completions' task work runs only
 * when that thread enters, never interrupting it); the ring is created disabled
 * (IORING_SETUP_R_DISABLED) and enabled by the first enter, so that the binding goes to the
 * thread that runs the loop, not to the one that built it. Other threads then get EEXIST.
 *
 * fork(): the rings and the buffer ring are mapped MADV_DONTFORK, and a pthread_atfork handler
 * bumps a generation counter. In a child every call on an inherited ring returns ECHILD and
 * pa_uring_destroy() only closes the descriptor, so a child can never write into (or unregister
 * buffers from) its parent's ring. A child creates its own ring.
 * ------------------------------------------------------------------------------------------- */
#include "pa_uring.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_REGISTER_ENABLE_RINGS
#define IORING_REGISTER_ENABLE_RINGS 12
#endif
/* Linux 6.12; older headers lack them (the kernel answers EINVAL when it lacks the feature) */
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
#define PA_IOU_PBUF_RING_INC 2
/* struct io_uring_buf_reg as of 6.12: older headers call `flags` `pad` */
struct pa_buf_reg {
  uint64_t ring_addr;
  uint32_t ring_entries;
  uint16_t bgid;
  uint16_t flags;
  uint64_t resv[3];
};
_Static_assert(sizeof(struct pa_buf_reg) == sizeof(struct io_uring_buf_reg), "buf_reg layout");

_Static_assert(sizeof(struct msghdr) <= sizeof(pa_uring_msg_t), "msghdr storage too small");
_Static_assert(sizeof(pa_uring_cqe_t) == 16, "pa_uring_cqe_t layout");
_Static_assert(PA_URING_CQE_F_NOTIF == IORING_CQE_F_NOTIF, "flag values mirror the kernel's");
_Static_assert(PA_URING_CQE_BUFFER_SHIFT == IORING_CQE_BUFFER_SHIFT, "bid shift");
_Static_assert(PA_URING_CQE_F_BUF_MORE == IORING_CQE_F_BUF_MORE, "flag values mirror the kernel's");

/* ---- the ring structures ---- */

struct pa_uring_s {
  int fd;
  unsigned setup_flags;
  unsigned features;
  unsigned generation;   /* fork generation at creation; a mismatch means "inherited" */
  int enabled;           /* R_DISABLED cleared by the first pa_uring_enter */
  /* submission queue */
  unsigned *sq_khead, *sq_ktail, *sq_kflags, sq_mask, sq_entries;
  unsigned sq_tail;      /* our copy of the tail: SQEs written so far */
  struct io_uring_sqe *sqes;
  /* completion queue */
  unsigned *cq_khead, *cq_ktail, cq_mask;
  struct io_uring_cqe *cqes;
  /* mappings */
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
  /* registered ring fd (IORING_REGISTER_RING_FDS): the index to enter with, -1 when none */
  int reg_index;
  /* thread_serial() of the thread that registered it: registrations are per thread */
  uint64_t reg_thread;
  /* copied small sends (pa_uring_csend): records by socket fd, detached ones still in flight */
  struct csend_s **cs_by_fd;
  unsigned cs_cap;
  struct csend_s *cs_zombies;
  unsigned cs_inflight;
};

/* The small sends a ring makes on its own: the bytes are copied here, so Python keeps nothing
 * alive and never sees the completion unless it asked (notify) or the send failed. */
typedef struct csend_s {
  struct csend_s *prev, *next; /* the list of detached records still in flight */
  int fd;
  int detached, notify, inflight, failed;
  uint64_t py_ud;              /* what Python's event carries (its token and kind) */
  uint64_t sent;               /* bytes the kernel completed, not yet taken by the caller */
  char *a;                     /* in flight: a[a_off, a_len) is what the kernel still sends */
  uint32_t a_len, a_off;
  char *b;                     /* written while `a` was in flight: sent next, in order */
  uint32_t b_len, b_cap;
} csend_t;

struct pa_bufring_s {
  pa_uring_t *ring;
  struct io_uring_buf_ring *br;
  size_t map_len;
  unsigned entries, mask;
  uint16_t bgid;
  uint16_t tail;         /* staged tail; published by pa_uring_bufring_publish */
  uint64_t *addrs;       /* by bid: the block last staged under it (pa_uring_bufring_readd) */
  uint32_t *lens;
};

/* ---- fork generation ---- */

static unsigned fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A number per thread that is never reused, unlike a tid (the kernel hands a dead thread's tid
 * to a new one, which must not enter by the old thread's registered index). 0 until asked. */
static uint64_t thread_serials;
static _Thread_local uint64_t cached_serial;

static void on_fork_child(void) {
  __atomic_add_fetch(&fork_generation, 1, __ATOMIC_RELAXED);
  cached_serial = 0; /* the child's thread registered nothing: it counts as a new thread */
}
static void install_atfork(void) { (void)pthread_atfork(NULL, NULL, on_fork_child); }

static int inherited(const pa_uring_t *r) {
  return r->generation != __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
}

/* ---- system calls ---- */

static int sys_setup(unsigned entries, struct io_uring_params *p) {
  long fd = syscall(__NR_io_uring_setup, entries, p);
  return fd < 0 ? -errno : (int)fd;
}

static int sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags, void *arg,
                     size_t argsz) {
  long n = syscall(__NR_io_uring_enter, fd, submit, wait, flags, arg, argsz);
  return n < 0 ? -errno : (int)n;
}

static int sys_register(int fd, unsigned op, void *arg, unsigned nr) {
  long rc = syscall(__NR_io_uring_register, fd, op, arg, nr);
  return rc < 0 ? errno : 0;
}

/* ---- setup ---- */

/* Best first; each later set drops what an older kernel refuses (EINVAL). */
static const unsigned setup_candidates[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    0,
};
#define BASE_SETUP (IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED)

/* Without PA_URING_SINGLE_ISSUER, start at the first set that does not bind the ring to a task. */
static int setup_probed(unsigned entries, unsigned options, struct io_uring_params *p) {
  size_t n = sizeof setup_candidates / sizeof setup_candidates[0];
  int fd = -EINVAL;
  for (size_t i = (options & PA_URING_SINGLE_ISSUER) ? 0 : 2; i < n && fd == -EINVAL; i++) {
    memset(p, 0, sizeof *p);
    p->flags = BASE_SETUP | setup_candidates[i];
    p->cq_entries = entries * 4;
    fd = sys_setup(entries, p);
  }
  return fd;
}

static void *map_ring(int fd, size_t len, off_t off) {
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, off);
  if (m == MAP_FAILED) return NULL;
  (void)madvise(m, len, MADV_DONTFORK);
  return m;
}

static void unmap_all(pa_uring_t *r) {
  if (r->sqes) munmap(r->sqes, r->sqes_len);
  if (r->cq_map && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map) munmap(r->sq_map, r->sq_map_len);
}

static int map_rings(pa_uring_t *r, const struct io_uring_params *p) {
  r->sq_map_len = p->sq_off.array + p->sq_entries * sizeof(unsigned);
  r->cq_map_len = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
  if (p->features & IORING_FEAT_SINGLE_MMAP) {
    if (r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
    r->cq_map_len = r->sq_map_len;
  }
  r->sq_map = map_ring(r->fd, r->sq_map_len, IORING_OFF_SQ_RING);
  if (!r->sq_map) return errno;
  r->cq_map = (p->features & IORING_FEAT_SINGLE_MMAP)
                  ? r->sq_map
                  : map_ring(r->fd, r->cq_map_len, IORING_OFF_CQ_RING);
  if (!r->cq_map) return errno;
  r->sqes_len = p->sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = map_ring(r->fd, r->sqes_len, IORING_OFF_SQES);
  return r->sqes ? 0 : errno;
}

static void bind_offsets(pa_uring_t *r, const struct io_uring_params *p) {
  char *sq = r->sq_map, *cq = r->cq_map;
  r->sq_khead = (unsigned *)(sq + p->sq_off.head);
  r->sq_ktail = (unsigned *)(sq + p->sq_off.tail);
  r->sq_kflags = (unsigned *)(sq + p->sq_off.flags);
  r->sq_mask = *(unsigned *)(sq + p->sq_off.ring_mask);
  r->sq_entries = p->sq_entries;
  /* The indirection array maps slot i to SQE i for ever, so it is written once here. */
  unsigned *array = (unsigned *)(sq + p->sq_off.array);
  for (unsigned i = 0; i < p->sq_entries; i++) array[i] = i;
  r->sq_tail = *r->sq_ktail;
  r->cq_khead = (unsigned *)(cq + p->cq_off.head);
  r->cq_ktail = (unsigned *)(cq + p->cq_off.tail);
  r->cq_mask = *(unsigned *)(cq + p->cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
}

int pa_uring_create(unsigned entries, unsigned options, pa_uring_t **out) {
  if (!out || entries == 0 || entries > 4096 || (options & ~PA_URING_SINGLE_ISSUER)) return EINVAL;
  (void)pthread_once(&atfork_once, install_atfork);
  pa_uring_t *r = calloc(1, sizeof *r);
  if (!r) return ENOMEM;
  r->reg_index = -1;
  struct io_uring_params p;
  r->fd = setup_probed(entries, options, &p);
  if (r->fd < 0) {
    int err = -r->fd;
    free(r);
    return err;
  }
  r->setup_flags = p.flags & ~(unsigned)IORING_SETUP_R_DISABLED;
  r->features = p.features;
  r->generation = __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
  int err = map_rings(r, &p);
  if (err) {
    pa_uring_destroy(r);
    return err;
  }
  bind_offsets(r, &p);
  *out = r;
  return 0;
}

static void csend_destroy_all(pa_uring_t *r);
static void unregister_ring_fd(pa_uring_t *r);

void pa_uring_destroy(pa_uring_t *r) {
  if (!r) return;
  /* In a forked child the mappings were never inherited (MADV_DONTFORK): only close. */
  if (!inherited(r)) {
    unregister_ring_fd(r);
    unmap_all(r);
  }
  if (r->fd >= 0) close(r->fd);
  csend_destroy_all(r);
  free(r);
}

int pa_uring_fd(const pa_uring_t *r) { return r ? r->fd : -1; }
unsigned pa_uring_setup_flags(const pa_uring_t *r) { return r ? r->setup_flags : 0; }
unsigned pa_uring_features(const pa_uring_t *r) { return r ? r->features : 0; }

unsigned pa_uring_pending(const pa_uring_t *r) {
  if (!r) return 0;
  return r->sq_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
}

/* ---- submission ---- */

/* Registered ring fd (IORING_REGISTER_RING_FDS, 5.18): io_uring_enter then skips the file
 * table lookup. The registration belongs to the calling thread, so it is made only for a
 * SINGLE_ISSUER ring (bound to the thread that enables it) and undone by that same thread. A
 * kernel that refuses it leaves reg_index at -1: entering by fd works everywhere. */
static uint64_t thread_serial(void) {
  if (!cached_serial) cached_serial = __atomic_add_fetch(&thread_serials, 1, __ATOMIC_RELAXED);
  return cached_serial;
}

static void register_ring_fd(pa_uring_t *r) {
  if (!(r->setup_flags & IORING_SETUP_SINGLE_ISSUER)) return;
  struct io_uring_rsrc_update up;
  memset(&up, 0, sizeof up);
  up.offset = (unsigned)-1; /* any free slot */
  up.data = (uint64_t)r->fd;
  long rc = syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_RING_FDS, &up, 1);
  if (rc == 1) {
    r->reg_index = (int)up.offset;
    r->reg_thread = thread_serial();
  }
}

static void unregister_ring_fd(pa_uring_t *r) {
  if (r->reg_index < 0 || r->reg_thread != thread_serial()) return;
  struct io_uring_rsrc_update up;
  memset(&up, 0, sizeof up);
  up.offset = (unsigned)r->reg_index;
  (void)syscall(__NR_io_uring_register, r->fd, IORING_UNREGISTER_RING_FDS, &up, 1);
  r->reg_index = -1;
}

static int enable(pa_uring_t *r) {
  int err = sys_register(r->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
  if (err) return err;
  r->enabled = 1;
  register_ring_fd(r);
  return 0;
}

/* Enter by the registered index from the thread that registered it; any other thread enters by
 * fd (and a SINGLE_ISSUER ring then answers EEXIST, as without the registration). */
static int ring_enter(const pa_uring_t *r, unsigned submit, unsigned wait, unsigned flags,
                      void *arg, size_t argsz) {
  if (r->reg_index >= 0 && r->reg_thread == thread_serial())
    return sys_enter(r->reg_index, submit, wait, flags | IORING_ENTER_REGISTERED_RING, arg, argsz);
  return sys_enter(r->fd, submit, wait, flags, arg, argsz);
}

int pa_uring_registered_index(const pa_uring_t *r) { return r ? r->reg_index : -1; }

/* Writing SQEs is allowed from any thread; only entering the kernel enables a disabled ring,
 * which makes the entering thread the single issuer. */
static int writable(const pa_uring_t *r) {
  if (!r) return EBADF; /* a closed ring (the bindings pass NULL for one) */
  return inherited(r) ? ECHILD : 0;
}

static int usable(pa_uring_t *r) {
  int err = writable(r);
  if (err) return err;
  return r->enabled ? 0 : enable(r);
}

/* Hand queued SQEs to the kernel without waiting. */
static int flush(pa_uring_t *r) {
  unsigned pending = pa_uring_pending(r);
  if (pending == 0) return 0;
  int err = usable(r);
  if (err) return err;
  int n = ring_enter(r, pending, 0, 0, NULL, 0);
  if (n < 0 && n != -EINTR && n != -EAGAIN && n != -EBUSY) return -n;
  return 0;
}

int pa_uring_submit(pa_uring_t *r) {
  if (r == NULL) return EINVAL;
  if (pa_uring_pending(r) == 0) return 0;
  int err = writable(r);
  if (err) return err;
  return flush(r);
}

static struct io_uring_sqe *next_sqe(pa_uring_t *r, int *err) {
  *err = writable(r);
  if (*err) return NULL;
  if (pa_uring_pending(r) >= r->sq_entries) {
    *err = flush(r);
    if (*err) return NULL;
    if (pa_uring_pending(r) >= r->sq_entries) {
      *err = EBUSY;
      return NULL;
    }
  }
  struct io_uring_sqe *sqe = &r->sqes[r->sq_tail & r->sq_mask];
  memset(sqe, 0, sizeof *sqe);
  return sqe;
}

static void commit_sqe(pa_uring_t *r) {
  r->sq_tail++;
  __atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
}

#define PREP_BEGIN(r)                            \
  int err_;                                      \
  struct io_uring_sqe *sqe = next_sqe((r), &err_); \
  if (!sqe) return err_

#define PREP_END(r, ud)   \
  sqe->user_data = (ud);  \
  commit_sqe(r);          \
  return 0

int pa_uring_prep_nop(pa_uring_t *r, uint64_t user_data) {
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_NOP;
  PREP_END(r, user_data);
}

int pa_uring_prep_accept(pa_uring_t *r, int fd, int multishot, uint64_t user_data) {
  if (fd < 0) return EBADF;
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_ACCEPT;
  sqe->fd = fd;
  sqe->accept_flags = SOCK_CLOEXEC;
  if (multishot) sqe->ioprio |= IORING_ACCEPT_MULTISHOT;
  PREP_END(r, user_data);
}

int pa_uring_prep_recv(pa_uring_t *r, int fd, uint16_t bgid, int multishot, uint64_t user_data) {
  if (fd < 0) return EBADF;
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_RECV;
  sqe->fd = fd;
  sqe->flags = IOSQE_BUFFER_SELECT;
  sqe->buf_group = bgid;
  if (multishot) sqe->ioprio |= IORING_RECV_MULTISHOT;
  PREP_END(r, user_data);
}

int pa_uring_prep_send(pa_uring_t *r, int fd, const void *buf, size_t len, int zc,
                       uint64_t user_data) {
  if (fd < 0) return EBADF;
  if (!buf || len == 0 || len > PA_URING_SEND_MAX) return EINVAL;
  PREP_BEGIN(r);
  sqe->opcode = zc ? IORING_OP_SEND_ZC : IORING_OP_SEND;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)buf;
  sqe->len = (uint32_t)len;
  /* MSG_WAITALL makes the kernel retry short sends on a stream socket itself. */
  sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
  PREP_END(r, user_data);
}

int pa_uring_prep_sendmsg(pa_uring_t *r, int fd, const void *iov, unsigned n,
                          pa_uring_msg_t *msg, uint64_t user_data) {
  if (fd < 0) return EBADF;
  if (!iov || !msg || n == 0 || n > 1024) return EINVAL;
  PREP_BEGIN(r);
  struct msghdr *mh = (struct msghdr *)(void *)msg;
  memset(mh, 0, sizeof *mh);
  mh->msg_iov = (struct iovec *)(uintptr_t)iov;
  mh->msg_iovlen = n;
  sqe->opcode = IORING_OP_SENDMSG;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)mh;
  sqe->len = 1;
  sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
  PREP_END(r, user_data);
}

int pa_uring_prep_sendv(pa_uring_t *r, int fd, void *const *bases, const uint64_t *lens,
                        unsigned n, uint64_t *iov, pa_uring_msg_t *msg, uint64_t user_data) {
  if (fd < 0) return EBADF;
  if (!bases || !lens || !iov || !msg || n == 0 || n > 1024) return EINVAL;
  for (unsigned i = 0; i < n; i++) {
    if (!bases[i] && lens[i]) return EINVAL;
    iov[2 * i] = (uint64_t)(uintptr_t)bases[i];
    iov[2 * i + 1] = lens[i];
  }
  return pa_uring_prep_sendmsg(r, fd, iov, n, msg, user_data);
}

int pa_uring_prep_splice(pa_uring_t *r, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
                         unsigned len, uint64_t user_data) {
  if (fd_in < 0 || fd_out < 0) return EBADF;
  if (len == 0) return EINVAL;
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_SPLICE;
  sqe->fd = fd_out;
  sqe->off = off_out < 0 ? (uint64_t)-1 : (uint64_t)off_out;
  sqe->splice_fd_in = fd_in;
  sqe->splice_off_in = off_in < 0 ? (uint64_t)-1 : (uint64_t)off_in;
  sqe->len = len;
  PREP_END(r, user_data);
}

int pa_uring_prep_poll(pa_uring_t *r, int fd, unsigned events, int multishot,
                       uint64_t user_data) {
  if (fd < 0) return EBADF;
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_POLL_ADD;
  sqe->fd = fd;
  sqe->poll32_events = events;
  if (multishot) sqe->len = IORING_POLL_ADD_MULTI;
  PREP_END(r, user_data);
}

int pa_uring_prep_cancel(pa_uring_t *r, int fd, uint64_t target, uint64_t user_data) {
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  if (fd >= 0) {
    sqe->fd = fd;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
  } else {
    sqe->fd = -1;
    sqe->addr = target;
  }
  PREP_END(r, user_data);
}

int pa_uring_prep_cancel_all(pa_uring_t *r, uint64_t user_data) {
  PREP_BEGIN(r);
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
  PREP_END(r, user_data);
}

/* ---- completion ---- */

static void csend_complete(pa_uring_t *r, csend_t *c, int32_t res, pa_uring_cqe_t *ev,
                           unsigned *n);

static unsigned reap(pa_uring_t *r, pa_uring_cqe_t *out, unsigned cap) {
  unsigned head = *r->cq_khead;
  unsigned tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
  unsigned n = 0;
  for (; head != tail && n < cap; head++) {
    const struct io_uring_cqe *c = &r->cqes[head & r->cq_mask];
    if (c->user_data & PA_URING_CSEND_TAG) {
      /* a copied send: handled here; Python sees an event only when it must act */
      csend_complete(r, (csend_t *)(uintptr_t)(c->user_data & ~PA_URING_CSEND_TAG), c->res, out, &n);
      continue;
    }
    out[n].user_data = c->user_data;
    out[n].res = c->res;
    out[n].flags = c->flags;
    n++;
  }
  __atomic_store_n(r->cq_khead, head, __ATOMIC_RELEASE);
  return n;
}

static unsigned cq_ready(const pa_uring_t *r) {
  return __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE) - *r->cq_khead;
}

/* Whether the kernel holds completions we can only get by entering (task work, overflow). */
static int kernel_has_more(const pa_uring_t *r) {
  unsigned f = __atomic_load_n(r->sq_kflags, __ATOMIC_RELAXED);
  return (f & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0;
}

static int enter_and_wait(pa_uring_t *r, unsigned wait_nr, int64_t timeout_ns) {
  unsigned submit = pa_uring_pending(r);
  unsigned ready = cq_ready(r);
  unsigned want = wait_nr > ready ? wait_nr : 0;
  if (submit == 0 && want == 0 && !kernel_has_more(r) &&
      (ready > 0 || !(r->setup_flags & IORING_SETUP_DEFER_TASKRUN)))
    return 0;
  unsigned flags = IORING_ENTER_GETEVENTS;
  struct __kernel_timespec ts;
  struct io_uring_getevents_arg arg;
  void *argp = NULL;
  size_t argsz = 0;
  if (want && timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    memset(&arg, 0, sizeof arg);
    arg.ts = (uint64_t)(uintptr_t)&ts;
    argp = &arg;
    argsz = sizeof arg;
    flags |= IORING_ENTER_EXT_ARG;
  }
  int n = ring_enter(r, submit, want, flags, argp, argsz);
  if (n >= 0 || n == -ETIME || n == -EINTR || n == -EAGAIN || n == -EBUSY) return 0;
  return -n;
}

int pa_uring_enter(pa_uring_t *r, unsigned wait_nr, int64_t timeout_ns, pa_uring_cqe_t *out,
                   unsigned cap, unsigned *n) {
  if (!n || (cap && !out)) return EINVAL;
  *n = 0;
  int err = usable(r);
  if (err) return err;
  if (timeout_ns == 0) wait_nr = 0;
  err = enter_and_wait(r, wait_nr, timeout_ns);
  if (err) return err;
  *n = reap(r, out, cap);
  return 0;
}


/* ---- copied small sends ---- */

static void csend_free(csend_t *c) {
  free(c->a);
  free(c->b);
  free(c);
}

static int csend_submit(pa_uring_t *r, csend_t *c) {
  int err;
  struct io_uring_sqe *sqe = next_sqe(r, &err);
  if (!sqe) return err;
  sqe->opcode = IORING_OP_SEND;
  sqe->fd = c->fd;
  sqe->addr = (uint64_t)(uintptr_t)(c->a + c->a_off);
  sqe->len = c->a_len - c->a_off;
  sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
  sqe->user_data = PA_URING_CSEND_TAG | (uint64_t)(uintptr_t)c;
  commit_sqe(r);
  c->inflight = 1;
  r->cs_inflight++;
  return 0;
}

/* The send failed (or could not be submitted): drop what is buffered, tell Python once. */
static void csend_fail(csend_t *c, int32_t res, pa_uring_cqe_t *ev, unsigned *n) {
  free(c->a);
  free(c->b);
  c->a = c->b = NULL;
  c->a_len = c->a_off = c->b_len = c->b_cap = 0;
  c->failed = 1;
  c->notify = 0;
  ev[*n].user_data = c->py_ud;
  ev[*n].res = res;
  ev[*n].flags = 0;
  (*n)++;
}

/* One completion of a copied send. Writes at most one event into ev[*n]: the caller has room. */
static void csend_complete(pa_uring_t *r, csend_t *c, int32_t res, pa_uring_cqe_t *ev,
                           unsigned *n) {
  c->inflight = 0;
  r->cs_inflight--;
  if (c->detached) {
    if (c->prev) c->prev->next = c->next;
    else r->cs_zombies = c->next;
    if (c->next) c->next->prev = c->prev;
    csend_free(c);
    return;
  }
  if (res < 0) {
    csend_fail(c, res, ev, n);
    return;
  }
  if (res == 0 && c->a_off < c->a_len) {
    csend_fail(c, -EPIPE, ev, n);
    return;
  }
  c->a_off += (uint32_t)res;
  c->sent += (uint32_t)res;
  if (c->a_off < c->a_len) { /* a short send (a signal): the kernel sends the rest next */
    int err = csend_submit(r, c);
    if (err) csend_fail(c, -err, ev, n);
    return;
  }
  free(c->a);
  c->a = NULL;
  c->a_len = c->a_off = 0;
  if (c->b_len) {
    c->a = c->b;
    c->a_len = c->b_len;
    c->b = NULL;
    c->b_len = c->b_cap = 0;
    int err = csend_submit(r, c);
    if (err) csend_fail(c, -err, ev, n);
    return;
  }
  if (c->notify) {
    c->notify = 0;
    ev[*n].user_data = c->py_ud;
    ev[*n].res = 0;
    ev[*n].flags = 0;
    (*n)++;
  }
}

static int csend_slot(pa_uring_t *r, int fd, csend_t ***slot) {
  if ((unsigned)fd >= r->cs_cap) {
    unsigned cap = r->cs_cap ? r->cs_cap : 64;
    while (cap <= (unsigned)fd) cap *= 2;
    csend_t **grown = realloc(r->cs_by_fd, cap * sizeof *grown);
    if (!grown) return ENOMEM;
    memset(grown + r->cs_cap, 0, (cap - r->cs_cap) * sizeof *grown);
    r->cs_by_fd = grown;
    r->cs_cap = cap;
  }
  *slot = &r->cs_by_fd[fd];
  return 0;
}

int pa_uring_csend(pa_uring_t *r, int fd, const void *data, size_t len, uint64_t py_ud) {
  int err = writable(r);
  if (err) return err;
  if (fd < 0) return EBADF;
  if (!data || len == 0) return EINVAL;
  if (len > PA_URING_CSEND_MAX) return EMSGSIZE;
  csend_t **slot;
  err = csend_slot(r, fd, &slot);
  if (err) return err;
  csend_t *c = *slot;
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c) return ENOMEM;
    c->fd = fd;
    *slot = c;
  }
  if (c->failed) return EPIPE;
  c->py_ud = py_ud;
  if (!c->inflight) {
    c->a = malloc(len);
    if (!c->a) return ENOMEM;
    memcpy(c->a, data, len);
    c->a_len = (uint32_t)len;
    c->a_off = 0;
    err = csend_submit(r, c);
    if (err) {
      free(c->a);
      c->a = NULL;
      c->a_len = 0;
    }
    return err;
  }
  if (c->b_len + len > PA_URING_CSEND_PENDING_MAX) return EAGAIN;
  if (c->b_len + len > c->b_cap) {
    uint32_t cap = c->b_cap ? c->b_cap : 256;
    while (cap < c->b_len + len) cap *= 2;
    char *grown = realloc(c->b, cap);
    if (!grown) return ENOMEM;
    c->b = grown;
    c->b_cap = cap;
  }
  memcpy(c->b + c->b_len, data, len);
  c->b_len += (uint32_t)len;
  return 0;
}

int pa_uring_csend_busy(pa_uring_t *r, int fd, int notify, uint64_t py_ud, int *busy) {
  if (!busy) return EINVAL;
  *busy = 0;
  int err = writable(r);
  if (err) return err;
  if (fd < 0 || (unsigned)fd >= r->cs_cap || !r->cs_by_fd[fd]) return 0;
  csend_t *c = r->cs_by_fd[fd];
  if (c->failed) {
    *busy = -EPIPE;
    return 0;
  }
  if (c->inflight) {
    *busy = 1;
    if (notify) {
      c->notify = 1;
      c->py_ud = py_ud;
    }
  }
  return 0;
}

int pa_uring_csend_sent(pa_uring_t *r, int fd, uint64_t *sent) {
  if (!r || !sent) return EINVAL;
  *sent = 0;
  if (fd < 0 || (unsigned)fd >= r->cs_cap || !r->cs_by_fd[fd]) return 0;
  *sent = r->cs_by_fd[fd]->sent;
  r->cs_by_fd[fd]->sent = 0;
  return 0;
}

int pa_uring_csend_detach(pa_uring_t *r, int fd, uint64_t *sent) {
  if (sent) *sent = 0;
  int err = writable(r);
  if (err) return err;
  if (fd < 0 || (unsigned)fd >= r->cs_cap || !r->cs_by_fd[fd]) return 0;
  csend_t *c = r->cs_by_fd[fd];
  r->cs_by_fd[fd] = NULL;
  if (sent) *sent = c->sent;
  if (!c->inflight) {
    csend_free(c);
    return 0;
  }
  /* The kernel still reads `a`: it is freed with the record at the final completion. A send to
   * a peer that never reads would wait for ever: cancel it (its own completion is ignored). */
  free(c->b);
  c->b = NULL;
  c->b_len = c->b_cap = 0;
  c->detached = 1;
  c->prev = NULL;
  c->next = r->cs_zombies;
  if (c->next) c->next->prev = c;
  r->cs_zombies = c;
  struct io_uring_sqe *sqe = next_sqe(r, &err);
  if (!sqe) return err;
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = PA_URING_CSEND_TAG | (uint64_t)(uintptr_t)c;
  sqe->user_data = 0;
  commit_sqe(r);
  return 0;
}

unsigned pa_uring_csend_inflight(const pa_uring_t *r) { return r ? r->cs_inflight : 0; }

/* At destroy, a send still in flight may yet be read by the kernel, which tears the ring down
 * asynchronously after its fd is closed: its record and bytes are left allocated (a few KiB
 * at most per socket, and only when a close did not wait for the sends, see Proactor.close)
 * rather than freed under it. */
static void csend_destroy_all(pa_uring_t *r) {
  for (unsigned i = 0; i < r->cs_cap; i++)
    if (r->cs_by_fd[i] && !r->cs_by_fd[i]->inflight) csend_free(r->cs_by_fd[i]);
  free(r->cs_by_fd);
  r->cs_by_fd = NULL;
  r->cs_cap = 0;
  r->cs_zombies = NULL; /* every zombie is in flight: left as said above */
}

/* ---- provided-buffer ring ---- */

int pa_uring_bufring_create(pa_uring_t *r, uint16_t bgid, unsigned entries, unsigned flags,
                            pa_bufring_t **out) {
  if (!r) return EBADF;
  if (!out || entries == 0 || entries > PA_URING_MAX_BUFRING || (entries & (entries - 1)) ||
      (flags & ~(unsigned)PA_URING_BUFRING_INC))
    return EINVAL;
  if (inherited(r)) return ECHILD;
  pa_bufring_t *b = calloc(1, sizeof *b);
  if (!b) return ENOMEM;
  b->addrs = calloc(entries, sizeof *b->addrs);
  b->lens = calloc(entries, sizeof *b->lens);
  if (!b->addrs || !b->lens) {
    free(b->addrs);
    free(b->lens);
    free(b);
    return ENOMEM;
  }
  b->map_len = entries * sizeof(struct io_uring_buf);
  void *m = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    int err = errno;
    free(b->addrs);
    free(b->lens);
    free(b);
    return err;
  }
  (void)madvise(m, b->map_len, MADV_DONTFORK);
  struct pa_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)m;
  reg.ring_entries = entries;
  reg.bgid = bgid;
  if (flags & PA_URING_BUFRING_INC) reg.flags = PA_IOU_PBUF_RING_INC;
  int err = sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
  if (err) {
    munmap(m, b->map_len);
    free(b->addrs);
    free(b->lens);
    free(b);
    return err;
  }
  b->ring = r;
  b->br = m;
  b->entries = entries;
  b->mask = entries - 1;
  b->bgid = bgid;
  *out = b;
  return 0;
}

int pa_uring_bufring_destroy(pa_bufring_t *b) {
  if (!b) return 0;
  int err = 0;
  if (!inherited(b->ring)) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.bgid = b->bgid;
    err = sys_register(b->ring->fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    munmap(b->br, b->map_len);
  }
  free(b->addrs);
  free(b->lens);
  free(b);
  return err;
}

int pa_uring_bufring_add(pa_bufring_t *b, uint64_t addr, uint32_t len, uint16_t bid) {
  if (!b) return EBADF; /* a closed buffer ring */
  if (addr == 0 || len == 0 || bid >= b->entries) return EINVAL;
  if (inherited(b->ring)) return ECHILD;
  struct io_uring_buf *e = &b->br->bufs[b->tail & b->mask];
  e->addr = addr;
  e->len = len;
  e->bid = bid;
  b->tail++;
  b->addrs[bid] = addr;
  b->lens[bid] = len;
  return 0;
}

int pa_uring_bufring_readd(pa_bufring_t *b, const uint16_t *bids, unsigned n) {
  if (!b) return EBADF;
  if (n && !bids) return EINVAL;
  if (inherited(b->ring)) return ECHILD;
  for (unsigned i = 0; i < n; i++) {
    uint16_t bid = bids[i];
    if (bid >= b->entries || !b->addrs[bid]) return EINVAL;
    struct io_uring_buf *e = &b->br->bufs[b->tail & b->mask];
    e->addr = b->addrs[bid];
    e->len = b->lens[bid];
    e->bid = bid;
    b->tail++;
  }
  __atomic_store_n(&b->br->tail, b->tail, __ATOMIC_RELEASE);
  return 0;
}

void pa_uring_bufring_publish(pa_bufring_t *b) {
  if (b && !inherited(b->ring)) __atomic_store_n(&b->br->tail, b->tail, __ATOMIC_RELEASE);
}

unsigned pa_uring_bufring_entries(const pa_bufring_t *b) { return b ? b->entries : 0; }
