/* SPDX-License-Identifier: MIT */
/* --- lease.h: shared types of the poolalloc._lease extension ------------------------------------
 *
 * Two types live here. A LeasePool sits in front of one core pool: it keeps a stash of ready
 * blocks (refilled and drained in batches through pa_api_t), counts what is out, and enforces the
 * capacity. A Buffer is one lease: it owns one block and exports it through the buffer protocol.
 *
 * The safety rule: a block goes back to the pool only when its lease is released AND no export of
 * it is alive (exports == 0). Two kinds of export count:
 *   - buffer-protocol exports of the lease itself (memoryview(lease), lease.view, recv_into...):
 *     one per bf_getbuffer until its bf_releasebuffer; memoryview slices and casts share the
 *     managed buffer of their parent, so they count once;
 *   - pins (BufferPin, lease.pin(), what as_array() builds numpy arrays on): one per pin object
 *     for as long as that object is alive. A pin has no bf_releasebuffer, so numpy keeps the pin
 *     itself as the array's `.base` (not a memoryview that Python code could release early), and
 *     no Python-side release can end the pin before the last array over it is gone.
 *
 * Who may touch what: every field below is read and written with the GIL held, and no function of
 * this extension releases the GIL, so the GIL serialises them (see docs/design.md "## Leases" for
 * what a free-threaded build would need). The core behind `pa_api` is thread-safe by itself.
 *
 * Counting invariant of a LeasePool (checked by the tests through counters()):
 *     acquires - releases - gc_returns == live   (gc_returns: leases collected unreleased)
 *     used == charge of (live + parked leases)
 *     fixed pools: core in_use_blocks == used + stash_n  (before close)
 * ------------------------------------------------------------------------------------------- */
#ifndef POOLALLOC_LEASE_H
#define POOLALLOC_LEASE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pa_lease_capi.h"
#include "poolalloc.h"

typedef struct lease_pool_s LeasePoolObject;

typedef struct buffer_s {
  PyObject_HEAD
  void *ptr;               /* the block; NULL once it went back to the pool */
  Py_ssize_t nbytes;       /* bytes exported: exactly what was asked for */
  Py_ssize_t exports;      /* live bf_getbuffer exports */
  Py_ssize_t charge;       /* what this lease counts against capacity: 1 block, or block bytes */
  LeasePoolObject *pool;   /* strong reference while the object is alive; NULL in the freelist */
  PyObject *origin;        /* acquisition stack when leak tracking sampled this lease */
  int released;            /* release() was called (or the lease was collected) */
} BufferObject;

/* A leak that recurs must not make the tracker itself grow without bound: past this many
 * origins kept, collected leases are only counted (leaks.report groups the kept ones). */
#define LEASE_GC_LEAKS_KEPT 256

struct lease_pool_s {
  PyObject_HEAD
  pa_pool_t *pool;         /* core pool; kept alive by `owner` */
  PyObject *owner;         /* the Python object that owns `pool` (a SlabPool) */
  PyObject *name;
  PyObject *slow;          /* slow(core, timeout, nbytes, align): called when at capacity */
  PyObject *notify;        /* notify(): called when a block came back and waiters > 0 */
  PyObject *capture;       /* capture() -> origin, for leak tracking */
  PyObject *tracked;       /* dict: id(lease) -> origin of every tracked live lease */
  PyObject *gc_leaks;      /* list: origins of tracked leases collected unreleased, the first
                              LEASE_GC_LEAKS_KEPT of them (gc_returns counts them all) */
  PyObject *weakreflist;
  size_t size;             /* fixed pools: the block request size */
  size_t align;
  Py_ssize_t capacity;     /* 0: unbounded. Blocks (fixed) or bytes (variable) */
  Py_ssize_t max_request;  /* variable pools: larger requests can never be held; 0: no bound */
  Py_ssize_t used;         /* charge of live + parked leases */
  Py_ssize_t peak;         /* high-water mark of used */
  Py_ssize_t live;         /* leases out, release() not called yet */
  Py_ssize_t parked;       /* released leases whose block waits for its last export */
  PyObject *waitq;         /* list: one entry per waiting thread/task (appended from Python) */
  unsigned long long acquires, releases, gc_returns, refills, drains;
  unsigned long sole;      /* the thread that took every lease counted in `used`, if one did */
  int mixed;               /* leases of more than one thread in `used` (reset when used == 0) */
  int fixed;               /* one block size (BufferPool) or any size (Allocator) */
  int strict;              /* release() with live exports raises instead of parking */
  int closed;
  int track_mode;          /* 0 off, 1 sampled, 2 all */
  Py_ssize_t track_every;  /* sampled: one lease in track_every */
  Py_ssize_t track_tick;
  Py_ssize_t stash_max;    /* 0: no stash (debug/unpooled mode) */
  Py_ssize_t stash_batch;
  Py_ssize_t stash_n;
  void **stash;            /* ready blocks, LIFO */
};

/* A pin: keeps one lease's block from going back for as long as the pin object lives, and
 * exports that block (no bf_releasebuffer, so consumers keep the pin itself). */
typedef struct {
  PyObject_HEAD
  BufferObject *lease;     /* strong reference */
  void *ptr;
  Py_ssize_t nbytes;
} PinObject;

extern PyTypeObject LeaseBufferType;
extern PyTypeObject LeasePinType;
extern PyTypeObject LeasePoolType;
extern PyTypeObject LeaseObjBaseType; /* objlease.c: C base of poolalloc.objects.Lease */
extern PyTypeObject LeaseViewBaseType; /* viewlease.c: C base of leases that wrap one view */
extern PyTypeObject LeaseWindowType;   /* window.c: bytes of a block shown by buffer protocol */
PyObject *lease_window_view(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *lease_window_new_view(void *address, Py_ssize_t nbytes); /* window_view's C side */
PyObject *lease_view_swap(PyObject *lease, PyObject *released);   /* ViewLeaseBase._swap_view */
/* the Window that exports `view` (borrowed), or NULL when none does; its live exports */
PyObject *lease_window_of(PyObject *view);
Py_ssize_t lease_window_exports(PyObject *window);
extern const pa_api_t *lease_api;

/* exceptions taken from poolalloc.errors at import */
extern PyObject *LeaseExc_LeaseReleased, *LeaseExc_DoubleRelease, *LeaseExc_Foreign,
    *LeaseExc_Busy, *LeaseExc_Closed, *LeaseExc_Exhausted, *LeaseExc_Value, *LeaseExc_Memory,
    *LeaseExc_Overflow;

/* lease.c */
extern PyObject *lease_token;  /* capsule that only poolalloc.buffers holds: LeasePool's key */
int lease_raise_rc(int rc, const char *context);                      /* always returns -1 */
int lease_raise_code(PyObject *cls, int code, const char *fmt, ...);  /* always returns -1 */

/* buffer.c */
BufferObject *lease_buffer_new(LeasePoolObject *p, void *ptr, Py_ssize_t nbytes, Py_ssize_t charge);
int lease_buffer_release(BufferObject *b);
int lease_buffer_type_ready(void);  /* PyType_Ready for Buffer and its `with` methods */

/* withbind.c: a lease type's __enter__ or __exit__, bound without allocating; one static
 * descriptor per method and type, made with LEASE_WITH_DESCR */
typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;          /* the unbound call, Owner.__exit__(lease, None, None, None) */
  PyObject *(*impl)(PyObject *lease); /* the method's work, once the arguments are right */
  const char *name;                   /* "__enter__" or "__exit__" */
  Py_ssize_t nargs;                   /* after the lease: 0 for __enter__, 3 for __exit__ */
  PyTypeObject *type;                 /* what it binds to (subtypes too) */
  const char *owner, *qualname, *what; /* "Buffer", "poolalloc.Buffer", "a poolalloc.Buffer" */
} LeaseWithDescr;
extern PyTypeObject LeaseWithDescrType;
PyObject *lease_with_descr_call(PyObject *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);
#define LEASE_WITH_DESCR(type_, owner_, qualname_, what_, name_, nargs_, impl_)              \
  {PyObject_HEAD_INIT(&LeaseWithDescrType).vectorcall = lease_with_descr_call,             \
   .impl = (impl_), .name = (name_), .nargs = (nargs_), .type = (type_), .owner = (owner_), \
   .qualname = (qualname_), .what = (what_)}
/* PyType_Ready for `type` with these two in its dict (and for the descriptor types) */
int lease_with_type_ready(PyTypeObject *type, LeaseWithDescr *enter, LeaseWithDescr *exit);
int lease_objlease_type_ready(void); /* the same for the C base of ObjectPool leases */
int lease_buffer_check_release(BufferObject *b, Py_ssize_t index);  /* may b be released now? */

/* leasepool.c */
int lease_pool_give_back(LeasePoolObject *p, BufferObject *b);  /* the block of b returns; -1 error */
void lease_pool_untrack(LeasePoolObject *p, BufferObject *b);

#endif /* POOLALLOC_LEASE_H */
