/* SPDX-License-Identifier: MIT */
/* --- pa_uring.h: raw io_uring for the poolalloc proactor (no liburing) -------------------------
 *
 * A ring is driven by one thread (the proactor's). SQE "prep" calls only write into the shared
 * submission queue; pa_uring_enter() submits everything queued, optionally waits, and copies the
 * completions into a caller-provided array, which Python walks. No callbacks into Python.
 *
 * Conventions (as in native/include/poolalloc.h):
 *  - Every function returns 0 or a positive errno code.
 *  - A completion's `res` is passed through as the kernel wrote it: negative means -errno.
 *    Python negates it in exactly one place (cqe_error in
 *    src/poolalloc/net/uring/ring.py).
 *  - Memory handed to an SQE (send buffers, iovecs, the msghdr storage) must stay valid until
 *    the operation's completion arrives; the caller owns it and keeps it alive.
 *
 * Provided-buffer ring (IORING_REGISTER_PBUF_RING): the caller adds {addr, len, bid} entries
 * (blocks of a BufferPool) and publishes them; the kernel picks one when data arrives and names
 * its bid in the completion flags (flags >> PA_URING_CQE_BUFFER_SHIFT).
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_URING_H
#define PA_URING_H

#include <stddef.h>
#include <stdint.h>

typedef struct pa_uring_s pa_uring_t;
typedef struct pa_bufring_s pa_bufring_t;

/* One completion as Python sees it. */
typedef struct pa_uring_cqe_s {
  uint64_t user_data;
  int32_t res;    /* >= 0 result, < 0 is -errno */
  uint32_t flags; /* PA_URING_CQE_F_*; bid in the upper 16 bits */
} pa_uring_cqe_t;

/* Caller-owned storage for one sendmsg's msghdr (kept alive until the completion). */
typedef struct pa_uring_msg_s {
  uint64_t words[8];
} pa_uring_msg_t;

/* What the run-time probe found. code 0: usable; else an errno and a sentence in reason. */
typedef struct pa_uring_probe_s {
  int code;
  int disabled;            /* /proc/sys/kernel/io_uring_disabled, -1 if absent */
  int seccomp;             /* Seccomp: field of /proc/self/status, -1 if absent */
  unsigned features;       /* IORING_FEAT_* of a test ring */
  unsigned setup_flags;    /* the flags pa_uring_create would use */
  unsigned has_pbuf_ring;  /* IORING_REGISTER_PBUF_RING accepted */
  unsigned has_pbuf_inc;   /* ... with IOU_PBUF_RING_INC (6.12): optional */
  unsigned has_send_zc;    /* IORING_OP_SEND_ZC supported */
  unsigned has_splice;     /* IORING_OP_SPLICE supported */
  unsigned has_multishot;  /* multishot accept + recv (kernel >= 6.0) */
  uint64_t memlock_cur;    /* RLIMIT_MEMLOCK soft limit in bytes (UINT64_MAX = unlimited) */
  char reason[200];
} pa_uring_probe_t;

#define PA_URING_CQE_F_BUFFER 1u
#define PA_URING_CQE_F_MORE 2u
#define PA_URING_CQE_F_SOCK_NONEMPTY 4u
#define PA_URING_CQE_F_NOTIF 8u
#define PA_URING_CQE_BUFFER_SHIFT 16u
#define PA_URING_MAX_BUFRING 32768u
#define PA_URING_SINGLE_ISSUER 1u
/* user_data of the ring's own copied sends (never a Python token: those stay below 2^56) */
#define PA_URING_CSEND_TAG (1ull << 63)
#define PA_URING_CSEND_MAX 16384u         /* largest write pa_uring_csend copies */
#define PA_URING_SEND_MAX 0x7ffff000u     /* most one send moves (the kernel's MAX_RW_COUNT) */
#define PA_URING_CSEND_PENDING_MAX 65536u /* bytes buffered behind a send in flight */

/* ---- probe ---- */
int pa_uring_probe(pa_uring_probe_t *out);

/* ---- ring ---- */
/* entries: SQ size (rounded up to a power of two by the kernel); the CQ gets 4x as many.
 * options: PA_URING_SINGLE_ISSUER binds the ring to the first thread that enters it
 * (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them); other threads then get EEXIST. */
int pa_uring_create(unsigned entries, unsigned options, pa_uring_t **out);
void pa_uring_destroy(pa_uring_t *ring);
int pa_uring_fd(const pa_uring_t *ring);
unsigned pa_uring_setup_flags(const pa_uring_t *ring);
unsigned pa_uring_features(const pa_uring_t *ring);   /* IORING_FEAT_* */
unsigned pa_uring_pending(const pa_uring_t *ring); /* SQEs queued, not yet submitted */
/* Hand what is queued to the kernel now, without waiting and without reaping completions.
 * A queued SQE names its socket by fd number, resolved only at submission: submit before
 * closing a socket that has SQEs queued, or they may act on whatever reuses the number. */
int pa_uring_submit(pa_uring_t *ring);
/* Submit what is queued, wait for at least `wait_nr` completions (or until timeout_ns passes;
 * timeout_ns < 0 waits without limit), then copy up to `cap` completions into `out`.
 * A timeout or a signal is not an error: *n tells what arrived. */
int pa_uring_enter(pa_uring_t *ring, unsigned wait_nr, int64_t timeout_ns, pa_uring_cqe_t *out,
                   unsigned cap, unsigned *n);

/* ---- submissions (queued until the next pa_uring_enter) ---- */
int pa_uring_prep_nop(pa_uring_t *ring, uint64_t user_data);
int pa_uring_prep_accept(pa_uring_t *ring, int fd, int multishot, uint64_t user_data);
/* Receive into a buffer the kernel picks from group `bgid`. */
int pa_uring_prep_recv(pa_uring_t *ring, int fd, uint16_t bgid, int multishot, uint64_t user_data);
/* zc != 0: IORING_OP_SEND_ZC (two completions: the result with F_MORE, then F_NOTIF). */
int pa_uring_prep_send(pa_uring_t *ring, int fd, const void *buf, size_t len, int zc,
                       uint64_t user_data);
/* iov: `n` pairs {base, len} laid out like struct iovec; msg: caller storage for the msghdr. */
int pa_uring_prep_sendmsg(pa_uring_t *ring, int fd, const void *iov, unsigned n,
                          pa_uring_msg_t *msg, uint64_t user_data);
/* A gather send of `n` buffers given as separate arrays of bases and lengths: they are written
 * into `iov` (caller storage for n {base, len} pairs, kept until the completion) and sent as
 * pa_uring_prep_sendmsg does, so that the caller builds no iovec entry by entry. */
int pa_uring_prep_sendv(pa_uring_t *ring, int fd, void *const *bases, const uint64_t *lens,
                        unsigned n, uint64_t *iov, pa_uring_msg_t *msg, uint64_t user_data);
/* off < 0 means "use and advance the file position" (pipes must pass -1). */
int pa_uring_prep_splice(pa_uring_t *ring, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
                         unsigned len, uint64_t user_data);
int pa_uring_prep_poll(pa_uring_t *ring, int fd, unsigned events, int multishot,
                       uint64_t user_data);
/* Cancel every operation on `fd` (fd >= 0), or the one whose user_data is `target` (fd < 0). */
int pa_uring_prep_cancel(pa_uring_t *ring, int fd, uint64_t target, uint64_t user_data);
/* Cancel every operation in flight on the ring (the cancel itself completes with the count). */
int pa_uring_prep_cancel_all(pa_uring_t *ring, uint64_t user_data);

/* Index of the registered ring fd (IORING_REGISTER_RING_FDS) the ring enters by, -1 if none
 * (only SINGLE_ISSUER rings register, from the thread that enables them). */
int pa_uring_registered_index(const pa_uring_t *ring);

/* ---- copied small sends ----
 * pa_uring_csend copies `len` (<= PA_URING_CSEND_MAX) bytes and sends them on `fd`, in order
 * with the earlier copied sends on that fd: one send in flight per fd; what is written
 * meanwhile is buffered (up to PA_URING_CSEND_PENDING_MAX, else EAGAIN) and sent when it
 * completes. The caller keeps nothing alive. Completions are handled inside pa_uring_enter;
 * an event {py_ud, res, 0} reaches the caller only when a send failed (res < 0; later calls
 * get EPIPE) or, with a notify request from pa_uring_csend_busy, once everything was sent
 * (res 0). EMSGSIZE: too large to copy; the caller sends it itself, after the copied ones. */
int pa_uring_csend(pa_uring_t *ring, int fd, const void *data, size_t len, uint64_t py_ud);
/* *busy: 1 while copied bytes of `fd` are in flight (notify != 0: post the res-0 event, as
 * py_ud, when they are all sent), -EPIPE after a failure, else 0. */
int pa_uring_csend_busy(pa_uring_t *ring, int fd, int notify, uint64_t py_ud, int *busy);
/* *sent: the bytes of `fd`'s copied sends the kernel completed since the last call (or since
 * the first send), counted at completion as a plain send counts what it sent; 0 when `fd` has
 * no record. Resets the count. */
int pa_uring_csend_sent(pa_uring_t *ring, int fd, uint64_t *sent);
/* Forget `fd` before it is closed: a send in flight is cancelled and its record freed at its
 * last completion; buffered bytes are dropped. *sent (may be NULL): as pa_uring_csend_sent
 * just before, what the completions so far sent (a cancelled send's bytes are not counted). */
int pa_uring_csend_detach(pa_uring_t *ring, int fd, uint64_t *sent);
/* Copied sends still in flight (including detached ones): the ring is drained when 0. */
unsigned pa_uring_csend_inflight(const pa_uring_t *ring);

/* ---- provided-buffer ring ---- */
/* flags for pa_uring_bufring_create: PA_URING_BUFRING_INC asks for incremental consumption
 * (IOU_PBUF_RING_INC, Linux 6.12): a receive takes only the bytes it needs from the buffer at
 * the head, so many small receives share one buffer; the completion then carries
 * PA_URING_CQE_F_BUF_MORE while the kernel keeps using that buffer. An older kernel answers
 * EINVAL: create the ring without the flag. */
#define PA_URING_BUFRING_INC 1
#define PA_URING_CQE_F_BUF_MORE 16
/* entries: a power of two, at most PA_URING_MAX_BUFRING. */
int pa_uring_bufring_create(pa_uring_t *ring, uint16_t bgid, unsigned entries, unsigned flags,
                            pa_bufring_t **out);
/* Unregister and unmap; the ring must still be alive. Buffers in it are no longer used. */
int pa_uring_bufring_destroy(pa_bufring_t *br);
/* Stage one entry; the kernel sees it after pa_uring_bufring_publish. EINVAL on a bad bid. */
int pa_uring_bufring_add(pa_bufring_t *br, uint64_t addr, uint32_t len, uint16_t bid);
void pa_uring_bufring_publish(pa_bufring_t *br);
/* Stage again, and publish, the blocks last added under `bids` (n of them): buffers a receive
 * used and nobody kept go back into the ring without their addresses crossing into Python.
 * EINVAL on a bid never added (entries staged before it stay staged). */
int pa_uring_bufring_readd(pa_bufring_t *br, const uint16_t *bids, unsigned n);
unsigned pa_uring_bufring_entries(const pa_bufring_t *br);

#endif /* PA_URING_H */
