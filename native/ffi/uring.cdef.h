/* cffi cdef of native/include/pa_uring.h (the io_uring proactor's C side).
 * Ownership: pa_uring_t and pa_bufring_t are freed by pa_uring_destroy / pa_uring_bufring_destroy
 * (src/poolalloc/net/uring/ring.py pairs every create with a destroy); memory handed to a send, sendmsg
 * or splice SQE is owned by the caller until the operation's completion arrives. */
typedef struct pa_uring_s pa_uring_t;
typedef struct pa_bufring_s pa_bufring_t;

typedef struct pa_uring_cqe_s {
  uint64_t user_data;
  int32_t res;
  uint32_t flags;
} pa_uring_cqe_t;

typedef struct pa_uring_msg_s {
  uint64_t words[8];
} pa_uring_msg_t;

typedef struct pa_uring_probe_s {
  int code;
  int disabled;
  int seccomp;
  unsigned features;
  unsigned setup_flags;
  unsigned has_pbuf_ring;
  unsigned has_pbuf_inc;
  unsigned has_send_zc;
  unsigned has_splice;
  unsigned has_multishot;
  uint64_t memlock_cur;
  char reason[200];
} pa_uring_probe_t;

#define PA_URING_SINGLE_ISSUER 1
#define PA_URING_CSEND_MAX 16384
#define PA_URING_SEND_MAX 2147479552
#define PA_URING_CSEND_PENDING_MAX 65536

int pa_uring_probe(pa_uring_probe_t *out);
/* caller frees with pa_uring_destroy */
int pa_uring_create(unsigned entries, unsigned options, pa_uring_t **out);
void pa_uring_destroy(pa_uring_t *ring);
int pa_uring_fd(const pa_uring_t *ring);
unsigned pa_uring_setup_flags(const pa_uring_t *ring);
unsigned pa_uring_features(const pa_uring_t *ring);
unsigned pa_uring_pending(const pa_uring_t *ring);
int pa_uring_submit(pa_uring_t *ring);
int pa_uring_enter(pa_uring_t *ring, unsigned wait_nr, int64_t timeout_ns, pa_uring_cqe_t *out,
                   unsigned cap, unsigned *n);
int pa_uring_prep_nop(pa_uring_t *ring, uint64_t user_data);
int pa_uring_prep_accept(pa_uring_t *ring, int fd, int multishot, uint64_t user_data);
int pa_uring_prep_recv(pa_uring_t *ring, int fd, uint16_t bgid, int multishot, uint64_t user_data);
int pa_uring_prep_send(pa_uring_t *ring, int fd, const void *buf, size_t len, int zc,
                       uint64_t user_data);
int pa_uring_prep_sendmsg(pa_uring_t *ring, int fd, const void *iov, unsigned n,
                          pa_uring_msg_t *msg, uint64_t user_data);
/* cffi converts a list of ffi.from_buffer handles (bases) and of ints (lens) into the arrays */
int pa_uring_prep_sendv(pa_uring_t *ring, int fd, void *const *bases, const uint64_t *lens,
                        unsigned n, uint64_t *iov, pa_uring_msg_t *msg, uint64_t user_data);
int pa_uring_prep_splice(pa_uring_t *ring, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
                         unsigned len, uint64_t user_data);
int pa_uring_prep_poll(pa_uring_t *ring, int fd, unsigned events, int multishot,
                       uint64_t user_data);
int pa_uring_prep_cancel(pa_uring_t *ring, int fd, uint64_t target, uint64_t user_data);
int pa_uring_prep_cancel_all(pa_uring_t *ring, uint64_t user_data);
int pa_uring_registered_index(const pa_uring_t *ring);
/* data is `const void *` in pa_uring.h; char here so that cffi passes a bytes object as is */
int pa_uring_csend(pa_uring_t *ring, int fd, const char *data, size_t len, uint64_t py_ud);
int pa_uring_csend_busy(pa_uring_t *ring, int fd, int notify, uint64_t py_ud, int *busy);
int pa_uring_csend_sent(pa_uring_t *ring, int fd, uint64_t *sent);
int pa_uring_csend_detach(pa_uring_t *ring, int fd, uint64_t *sent);
unsigned pa_uring_csend_inflight(const pa_uring_t *ring);
#define PA_URING_BUFRING_INC 1
#define PA_URING_CQE_F_BUF_MORE 16
int pa_uring_bufring_create(pa_uring_t *ring, uint16_t bgid, unsigned entries, unsigned flags,
                            pa_bufring_t **out);
                                                 /* caller frees with pa_uring_bufring_destroy */
int pa_uring_bufring_destroy(pa_bufring_t *br);
int pa_uring_bufring_add(pa_bufring_t *br, uint64_t addr, uint32_t len, uint16_t bid);
void pa_uring_bufring_publish(pa_bufring_t *br);
int pa_uring_bufring_readd(pa_bufring_t *br, const uint16_t *bids, unsigned n);
unsigned pa_uring_bufring_entries(const pa_bufring_t *br);
