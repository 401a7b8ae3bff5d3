/* Standalone check of native/uring/*.c against the running kernel (no Python):
 *   gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Inative/include native/uring/uring.c \
 *       native/uring/probe.c tests/net/uring/ring_smoke.c -o /tmp/ring_smoke && /tmp/ring_smoke */
#include "pa_uring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(x)                                                             \
  do {                                                                       \
    int rc_ = (x);                                                           \
    if (rc_) {                                                               \
      fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #x, strerror(rc_)); \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

#define NBUF 4
#define BSZ 8

int main(void) {
  pa_uring_probe_t pr;
  CHECK(pa_uring_probe(&pr));
  printf("probe: code=%d reason=%s flags=0x%x zc=%u splice=%u seccomp=%d disabled=%d\n", pr.code,
         pr.reason, pr.setup_flags, pr.has_send_zc, pr.has_splice, pr.seccomp, pr.disabled);
  if (pr.code) return 2;
  pa_uring_t *r;
  CHECK(pa_uring_create(64, PA_URING_SINGLE_ISSUER, &r));
  pa_bufring_t *br;
  CHECK(pa_uring_bufring_create(r, 1, NBUF, 0, &br));
  static char bufs[NBUF][BSZ];
  for (int i = 0; i < NBUF; i++) CHECK(pa_uring_bufring_add(br, (uint64_t)(uintptr_t)bufs[i], BSZ, (uint16_t)i));
  pa_uring_bufring_publish(br);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
  CHECK(pa_uring_prep_recv(r, sv[0], 1, 1, 42));
  const char *msg = "0123456789abcdefghijklmnopqrstuvwxyz0123456789"; /* 46 bytes > 4*8 */
  CHECK(pa_uring_prep_send(r, sv[1], msg, strlen(msg), 0, 7));
  pa_uring_cqe_t cq[16];
  unsigned n, got = 0, total = 0;
  int enobufs = 0;
  for (int round = 0; round < 10 && !enobufs; round++) {
    CHECK(pa_uring_enter(r, 1, 200000000, cq, 16, &n));
    for (unsigned i = 0; i < n; i++) {
      printf("cqe ud=%llu res=%d flags=0x%x bid=%u\n", (unsigned long long)cq[i].user_data,
             cq[i].res, cq[i].flags, cq[i].flags >> PA_URING_CQE_BUFFER_SHIFT);
      if (cq[i].user_data == 42 && cq[i].res > 0) { got++; total += (unsigned)cq[i].res; }
      if (cq[i].user_data == 42 && cq[i].res == -ENOBUFS) enobufs = 1;
    }
  }
  printf("recv completions=%u bytes=%u enobufs=%d\n", got, total, enobufs);
  if (!enobufs || total != NBUF * BSZ) return 3;
  /* refill, re-arm, get the rest */
  for (int i = 0; i < NBUF; i++) CHECK(pa_uring_bufring_add(br, (uint64_t)(uintptr_t)bufs[i], BSZ, (uint16_t)i));
  pa_uring_bufring_publish(br);
  CHECK(pa_uring_prep_recv(r, sv[0], 1, 1, 43));
  CHECK(pa_uring_enter(r, 2, 200000000, cq, 16, &n));
  for (unsigned i = 0; i < n; i++) {
    printf("cqe ud=%llu res=%d flags=0x%x\n", (unsigned long long)cq[i].user_data, cq[i].res, cq[i].flags);
    if (cq[i].res > 0) total += (unsigned)cq[i].res;
  }
  if (total != strlen(msg)) return 4;
  /* cancel the armed multishot */
  CHECK(pa_uring_prep_cancel(r, sv[0], 0, 99));
  int cancelled = 0, cancel_done = 0;
  for (int round = 0; round < 5 && !(cancelled && cancel_done); round++) {
    CHECK(pa_uring_enter(r, 1, 200000000, cq, 16, &n));
    for (unsigned i = 0; i < n; i++) {
      printf("cancel cqe ud=%llu res=%d flags=0x%x\n", (unsigned long long)cq[i].user_data, cq[i].res, cq[i].flags);
      if (cq[i].user_data == 43 && cq[i].res == -ECANCELED) cancelled = 1;
      if (cq[i].user_data == 99) cancel_done = 1;
    }
  }
  if (!cancelled || !cancel_done) return 5;
  pid_t pid = fork();
  if (pid == 0) {
    int e = pa_uring_prep_nop(r, 1);
    pa_uring_bufring_destroy(br);
    pa_uring_destroy(r);
    pa_uring_t *r2;
    int e2 = pa_uring_create(8, 0, &r2);
    unsigned n2 = 0;
    if (!e2) { pa_uring_prep_nop(r2, 5); e2 = pa_uring_enter(r2, 1, -1, cq, 16, &n2); pa_uring_destroy(r2); }
    _exit(e == ECHILD && e2 == 0 && n2 == 1 ? 0 : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  printf("child exit=%d\n", WEXITSTATUS(st));
  if (WEXITSTATUS(st)) return 6;
  CHECK(pa_uring_prep_nop(r, 77));
  CHECK(pa_uring_enter(r, 1, -1, cq, 16, &n));
  if (n != 1 || cq[0].user_data != 77) return 7;
  CHECK(pa_uring_bufring_destroy(br));
  pa_uring_destroy(r);
  close(sv[0]);
  close(sv[1]);
  puts("OK");
  return 0;
}
