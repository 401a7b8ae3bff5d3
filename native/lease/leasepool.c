/* SPDX-License-Identifier: MIT */
/* --- leasepool.c: the lease layer in front of one core pool (poolalloc._lease.LeasePool) --------
 *
 * Fast path of acquire: pop a block from the stash, take a lease object from the freelist, count.
 * No C call into the core and no Python allocation. The stash is refilled with one
 * pa_alloc_batch() when empty and drained with one pa_free_batch() when full, so the core's cost
 * is paid once per `stash_batch` leases.
 *
 * Capacity is counted here, exactly: `used` is the charge of every lease not yet back (live or
 * parked). For a fixed pool the stash is part of the promise as well: used + stash_n never
 * exceeds the capacity, so the core never holds more blocks than the capacity allows.
 *
 * When the pool is at capacity, acquire() calls the Python slow path `slow(core, timeout, nbytes,
 * align)`, which waits; give-back calls `notify()` only while somebody waits (waiters > 0).
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>

#define STASH_DEFAULT 64

// ---- stash ----

/* Free the newest `n` stashed blocks in one core call. */
static int stash_drain(LeasePoolObject *p, Py_ssize_t n) {
  if (n <= 0) return 0;
  void **first = p->stash + p->stash_n - n;
  size_t freed = 0;
  int rc = lease_api->free_batch(first, (size_t)n, &freed);
  if (rc != 0)  // the first `freed` went back: keep the rest, packed at the top of the stash
    memmove(first, first + freed, ((size_t)n - freed) * sizeof(void *));
  p->stash_n -= (Py_ssize_t)freed;
  p->drains++;
  return rc ? lease_raise_rc(rc, "release") : 0;
}

static Py_ssize_t stash_room(LeasePoolObject *p) {
  Py_ssize_t n = p->stash_batch;
  if (p->capacity > 0 && p->capacity - p->used - p->stash_n < n)
    n = p->capacity - p->used - p->stash_n;
  return n;
}

static int stash_refill(LeasePoolObject *p) {
  Py_ssize_t n = stash_room(p);
  if (n < 1) n = 1;  // only reached with used < capacity, so one block is always allowed
  int rc = lease_api->alloc_batch(p->pool, p->size, p->align, (size_t)n, p->stash);
  if (rc != 0 && n > 1) {  // all or nothing: a smaller request may still fit
    n = 1;
    rc = lease_api->alloc(p->pool, p->size, p->align, p->stash);
  }
  if (rc != 0) return lease_raise_rc(rc, "acquire");
  p->stash_n = n;
  p->refills++;
  return 0;
}

// ---- taking and giving back blocks ----

static void count_out(LeasePoolObject *p, Py_ssize_t charge) {
  // who holds the pool: one thread alone, or several (what the slow path needs to tell a wait
  // that can never end, a thread waiting for blocks only it holds, from an ordinary one)
  unsigned long me = PyThread_get_thread_ident();
  if (p->used == 0) {
    p->sole = me;
    p->mixed = 0;
  } else if (p->sole != me) {
    p->mixed = 1;
  }
  p->used += charge;
  if (p->used > p->peak) p->peak = p->used;
  p->live++;
  p->acquires++;
}

/* 0: block in *out; 1: at capacity (no error set); -1: error set. */
static int take_block(LeasePoolObject *p, void **out) {
  if (p->closed) return lease_raise_code(LeaseExc_Closed, ESHUTDOWN, "acquire(): the pool is closed");
  if (p->capacity > 0 && p->used >= p->capacity) return 1;
  if (p->stash_max == 0) {
    int rc = lease_api->alloc(p->pool, p->size, p->align, out);
    return rc ? lease_raise_rc(rc, "acquire") : 0;
  }
  if (p->stash_n == 0 && stash_refill(p) < 0) return -1;
  *out = p->stash[--p->stash_n];
  return 0;
}

static int raise_free_error(int rc) {
  return lease_raise_rc(rc, rc == EILSEQ ? "release: debug check: bytes past the end of the Buffer "
                                        "(canary) or freed memory (poison) were overwritten"
                                      : "release");
}

static int put_block(LeasePoolObject *p, void *ptr) {
  if (p->closed || p->stash_max == 0 || !p->fixed) {
    int rc = lease_api->free(ptr);
    return rc ? raise_free_error(rc) : 0;
  }
  if (p->stash_n == p->stash_max && stash_drain(p, p->stash_batch) < 0) {
    // the drain stopped at a bad block: free this one on its own so nothing is lost
    int rc = lease_api->free(ptr);
    return rc ? lease_raise_rc(rc, "release") : -1;
  }
  p->stash[p->stash_n++] = ptr;
  return 0;
}

static int call_notify(LeasePoolObject *p) {
  if (p->waitq == NULL || PyList_GET_SIZE(p->waitq) == 0 || p->notify == NULL) return 0;
  PyObject *r = PyObject_CallNoArgs(p->notify);
  Py_XDECREF(r);
  return r == NULL ? -1 : 0;
}

int lease_pool_give_back(LeasePoolObject *p, BufferObject *b) {
  void *ptr = b->ptr;
  b->ptr = NULL;
  p->used -= b->charge;
  int rc = put_block(p, ptr);
  if (call_notify(p) < 0) rc = -1;
  return rc;
}

// ---- leak tracking ----

static int track(LeasePoolObject *p, BufferObject *b) {
  if (p->track_mode == 1 && ++p->track_tick < p->track_every) return 0;
  p->track_tick = 0;
  PyObject *origin = PyObject_CallNoArgs(p->capture);
  if (origin == NULL) return -1;
  PyObject *key = PyLong_FromVoidPtr(b);
  int rc = key == NULL ? -1 : PyDict_SetItem(p->tracked, key, origin);
  Py_XDECREF(key);
  if (rc < 0) {
    Py_DECREF(origin);
    return -1;
  }
  b->origin = origin;
  return 0;
}

void lease_pool_untrack(LeasePoolObject *p, BufferObject *b) {
  if (b->origin == NULL || p->tracked == NULL) return;
  PyObject *key = PyLong_FromVoidPtr(b);
  if (key == NULL || PyDict_DelItem(p->tracked, key) < 0) PyErr_Clear();
  Py_XDECREF(key);
}

static BufferObject *make_lease(LeasePoolObject *p, void *ptr, Py_ssize_t nbytes,
                                Py_ssize_t charge) {
  BufferObject *b = lease_buffer_new(p, ptr, nbytes, charge);
  if (b == NULL) {  // no lease object: the block goes straight back, the MemoryError stays
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (put_block(p, ptr) < 0) PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    return NULL;
  }
  count_out(p, charge);
  if (p->track_mode && track(p, b) < 0) {
    (void)lease_buffer_release(b);
    Py_DECREF(b);
    return NULL;
  }
  return b;
}

// ---- acquire (fixed pools) ----

/* None or a real number of seconds (bools are not durations). An int past a double's range is
 * no error: the slow path (Waiters.wait_sync) turns it into no limit with check_timeout. */
static int check_timeout(PyObject *timeout, const char *method) {
  if (timeout == Py_None) return 0;
  if (PyLong_Check(timeout) && !PyBool_Check(timeout)) {
    int overflow = 0;
    long t = PyLong_AsLongAndOverflow(timeout, &overflow);
    if (t == -1 && !overflow && PyErr_Occurred()) return -1;
    if (overflow < 0)  // no wait is negative; the repr of an int this long may be refused
      return lease_raise_code(LeaseExc_Value, EINVAL, "%s(): timeout must be >= 0 seconds (inf: "
                              "no limit) or None, not a negative int", method);
    if (!overflow && t < 0)
      return lease_raise_code(LeaseExc_Value, EINVAL, "%s(): timeout must be >= 0 seconds (inf: "
                              "no limit) or None, not %ld", method, t);
    return 0;
  }
  if (PyFloat_Check(timeout)) {
    double t = PyFloat_AS_DOUBLE(timeout);
    if (t != t || t < 0)  // NaN: no deadline can be computed from it; no wait is negative
      return lease_raise_code(LeaseExc_Value, EINVAL, "%s(): timeout must be >= 0 seconds (inf: "
                              "no limit) or None, not %R", method, timeout);
    return 0;
  }
  PyErr_Format(PyExc_TypeError, "%s(): timeout must be a number of seconds (int or float) or "
               "None, not %.100s", method, Py_TYPE(timeout)->tp_name);
  return -1;
}

static PyObject *call_slow(LeasePoolObject *p, PyObject *timeout, Py_ssize_t nbytes, size_t align) {
  if (p->slow == NULL)
    return PyErr_Format(LeaseExc_Exhausted, "acquire(): the pool is at its capacity (%zd)",
                        p->capacity);
  return PyObject_CallFunction(p->slow, "OOnn", p, timeout, nbytes, (Py_ssize_t)align);
}

static PyObject *try_acquire_one(LeasePoolObject *p) {
  void *ptr;
  int rc = take_block(p, &ptr);
  if (rc < 0) return NULL;
  if (rc > 0) Py_RETURN_NONE;
  return (PyObject *)make_lease(p, ptr, (Py_ssize_t)p->size, 1);
}

static int require_fixed(LeasePoolObject *p, int fixed) {
  if (p->fixed == fixed) return 0;
  PyErr_SetString(PyExc_TypeError, fixed ? "this lease layer serves alloc(), not acquire()"
                                         : "this lease layer serves acquire(), not alloc()");
  return -1;
}

static PyObject *lp_acquire(LeasePoolObject *p, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
  PyObject *timeout = nargs > 0 ? args[0] : Py_None;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  int bad_kw =
      nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout");
  if (nargs + nkw > 1 || bad_kw) {
    PyErr_SetString(PyExc_TypeError, "acquire() takes one optional argument: timeout");
    return NULL;
  }
  if (nkw == 1) timeout = args[0];
  if (require_fixed(p, 1) < 0 || check_timeout(timeout, "acquire") < 0) return NULL;
  PyObject *lease = try_acquire_one(p);
  if (lease != Py_None) return lease;
  Py_DECREF(lease);
  return call_slow(p, timeout, -1, p->align);
}

static PyObject *lp_try_acquire(LeasePoolObject *p, PyObject *unused) {
  (void)unused;
  if (require_fixed(p, 1) < 0) return NULL;
  return try_acquire_one(p);
}

/* A list of n leases, or None when the capacity cannot cover all n now. */
static PyObject *lp_acquire_many(LeasePoolObject *p, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 0) return PyErr_Format(PyExc_ValueError, "acquire_many(): n must be >= 0, not %zd", n);
  if (require_fixed(p, 1) < 0) return NULL;
  if (p->closed) return PyErr_Format(LeaseExc_Closed, "acquire_many(): the pool is closed");
  if (p->capacity > 0 && p->used + n > p->capacity) Py_RETURN_NONE;
  PyObject *list = PyList_New(n);
  if (list == NULL) return NULL;
  for (Py_ssize_t i = 0; i < n; i++) {
    // leak tracking may run Python code, and another thread may take blocks meanwhile: then
    // try_acquire_one() says None and the caller falls back to the waiting path
    PyObject *lease = try_acquire_one(p);
    if (lease == NULL || lease == Py_None) {
      PyObject *et, *ev, *tb;
      PyErr_Fetch(&et, &ev, &tb);
      for (Py_ssize_t j = 0; j < i; j++) {
        if (lease_buffer_release((BufferObject *)PyList_GET_ITEM(list, j)) < 0) PyErr_Clear();
      }
      PyErr_Restore(et, ev, tb);
      Py_DECREF(list);
      return lease;  // NULL with the error set, or None
    }
    PyList_SET_ITEM(list, i, lease);
  }
  return list;
}

// ---- alloc (variable pools) ----

/* 0: lease in *out; 1: capacity would be exceeded; -1 error. */
static int alloc_lease(LeasePoolObject *p, Py_ssize_t nbytes, Py_ssize_t align, PyObject **out) {
  if (p->closed) return lease_raise_code(LeaseExc_Closed, ESHUTDOWN, "alloc(): the pool is closed");
  if (nbytes <= 0 || align <= 0 || (align & (align - 1)) || align > (Py_ssize_t)PA_MAX_ALIGN)
    return lease_raise_rc(EINVAL, "alloc(): nbytes >= 1 and alignment a power of two <= 4096");
  // Past an address space a request is an overflow, as SlabPool.alloc says, whatever the
  // capacity (not a shortage of memory, nor of capacity).
  if ((size_t)nbytes > PA_MAX_REQUEST)
    return lease_raise_code(LeaseExc_Overflow, EOVERFLOW, "alloc(%zd): a block of %zd bytes is "
                            "more than an address space holds", nbytes, nbytes);
  // a block is never smaller than the request: a request above the capacity can never fit, and
  // one above what is left waits; otherwise the block's real size decides (allocated, checked)
  if (p->capacity > 0 && nbytes > p->capacity)
    return lease_raise_code(LeaseExc_Value, EINVAL, "alloc(%zd): more than the capacity of this "
                            "Allocator (%zd bytes); it can never be served", nbytes, p->capacity);
  // Chunks are mapped without reserving memory: a request over what the machine holds would
  // be handed out, and the process killed when it touched it (an address-space limit needs
  // no check here: the mapping itself fails under it).
  if (p->max_request > 0 && nbytes > p->max_request)
    return lease_raise_code(LeaseExc_Memory, ENOMEM, "alloc(%zd): more than this machine's "
                            "memory and swap (or its cgroup's memory limit, %zd bytes) can "
                            "hold", nbytes, p->max_request);
  if (p->capacity > 0 && nbytes > p->capacity - p->used) return 1;
  void *ptr;
  size_t bs = 0;
  int rc = lease_api->alloc(p->pool, (size_t)nbytes, (size_t)align, &ptr);
  if (rc) return lease_raise_rc(rc, "alloc");
  rc = lease_api->block_size(ptr, &bs);
  if (rc == 0 && p->capacity > 0 && (Py_ssize_t)bs > p->capacity) {
    rc = lease_api->free(ptr);
    if (rc) return lease_raise_rc(rc, "alloc");
    return lease_raise_code(LeaseExc_Value, EINVAL, "alloc(%zd, alignment=%zd): its block is %zu "
                            "bytes (the size class that serves it), more than the capacity of "
                            "this Allocator (%zd bytes); it can never be served", nbytes, align,
                            bs, p->capacity);
  }
  if (rc == 0 && p->capacity > 0 && p->used + (Py_ssize_t)bs > p->capacity) {
    rc = lease_api->free(ptr);
    return rc ? lease_raise_rc(rc, "alloc") : 1;
  }
  if (rc) {
    (void)lease_api->free(ptr);
    return lease_raise_rc(rc, "alloc");
  }
  *out = (PyObject *)make_lease(p, ptr, nbytes, (Py_ssize_t)bs);
  return *out == NULL ? -1 : 0;
}

/* An int argument of alloc() (nbytes or alignment) as a Py_ssize_t. A bool or a float is no size
 * (TypeError, as BufferPool says). Past the C range nothing is truncated and no bare
 * OverflowError leaks: nbytes above it is more than an address space holds (PoolOverflowError,
 * as from SlabPool.alloc), any other value there is out of range (PoolValueError). */
_Static_assert(sizeof(long long) == sizeof(Py_ssize_t), "PyLong_AsLongLongAndOverflow's range");
/* repr(n), or a description of an int too long to print (Python refuses past 4300 digits) */
static PyObject *shown_int(PyObject *n) {
  PyObject *r = PyObject_Repr(n);
  if (r == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
    PyErr_Clear();
    r = PyUnicode_FromString("an int too long to print");
  }
  return r;
}

static int request_arg(PyObject *obj, int is_nbytes, Py_ssize_t *out) {
  const char *what = is_nbytes ? "nbytes" : "alignment";
  if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  PyObject *n = PyNumber_Index(obj);
  if (n == NULL) return -1;
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
  PyObject *shown = overflow ? shown_int(n) : NULL;
  if (overflow && shown == NULL)
    ;  // the error of shown_int stands
  else if (overflow > 0 && is_nbytes)
    lease_raise_code(LeaseExc_Overflow, EOVERFLOW, "alloc(%U): a block of %U bytes is more than "
                     "an address space holds", shown, shown);
  else if (overflow < 0 && is_nbytes)
    lease_raise_code(LeaseExc_Value, EINVAL, "alloc(): nbytes must be >= 1, not %U", shown);
  else if (overflow)
    lease_raise_code(LeaseExc_Value, EINVAL, "alloc(): alignment must be a power of two <= %d, "
                     "not %U", (int)PA_MAX_ALIGN, shown);
  Py_XDECREF(shown);
  Py_DECREF(n);
  if (PyErr_Occurred()) return -1;
  *out = (Py_ssize_t)v;
  return 0;
}

static PyObject *lp_alloc(LeasePoolObject *p, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"nbytes", "alignment", "timeout", NULL};
  Py_ssize_t nbytes, align = PA_MIN_ALIGN;
  PyObject *nbytes_arg, *align_arg = NULL, *timeout = Py_None, *lease = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$O:alloc", kwlist, &nbytes_arg, &align_arg,
                                   &timeout))
    return NULL;
  if (request_arg(nbytes_arg, 1, &nbytes) < 0) return NULL;
  if (align_arg != NULL && request_arg(align_arg, 0, &align) < 0) return NULL;
  if (require_fixed(p, 0) < 0 || check_timeout(timeout, "alloc") < 0) return NULL;
  int rc = alloc_lease(p, nbytes, align, &lease);
  if (rc < 0) return NULL;
  if (rc == 0) return lease;
  return call_slow(p, timeout, nbytes, (size_t)align);
}

static PyObject *lp_try_alloc(LeasePoolObject *p, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) return PyErr_Format(PyExc_TypeError, "try_alloc(nbytes, alignment)");
  Py_ssize_t nbytes, align;
  if (request_arg(args[0], 1, &nbytes) < 0 || request_arg(args[1], 0, &align) < 0)
    return NULL;
  if (require_fixed(p, 0) < 0) return NULL;
  PyObject *lease = NULL;
  int rc = alloc_lease(p, nbytes, align, &lease);
  if (rc < 0) return NULL;
  if (rc > 0) Py_RETURN_NONE;
  return lease;
}

// ---- release ----

static int check_mine(LeasePoolObject *p, PyObject *obj) {
  if (!Py_IS_TYPE(obj, &LeaseBufferType))
    return lease_raise_code(LeaseExc_Foreign, EFAULT, "release(): expected a poolalloc.Buffer "
                            "leased from this pool, not a %.100s", Py_TYPE(obj)->tp_name);
  if (((BufferObject *)obj)->pool != p)
    return lease_raise_code(LeaseExc_Foreign, EFAULT, "this Buffer belongs to another pool");
  return 0;
}

static PyObject *lp_release(LeasePoolObject *p, PyObject *obj) {
  if (check_mine(p, obj) < 0 || lease_buffer_release((BufferObject *)obj) < 0) return NULL;
  Py_RETURN_NONE;
}

/* All or nothing: every lease is checked before any is released, so a foreign, already
 * released, twice-listed or (strict) busy one releases nothing. Duplicates are found by marking
 * each checked lease (released = 2) and unmarking them all before acting; no Python code runs in
 * between. Then every lease is released even when one give-back fails (a debug-mode canary
 * check), and the first failure is raised at the end. A tuple copy: a give-back may run Python
 * code (notify), during which another thread could resize the caller's list. */
static PyObject *lp_release_many(LeasePoolObject *p, PyObject *iterable) {
  PyObject *seq = PySequence_Tuple(iterable);
  if (seq == NULL) return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(seq), checked = 0;
  int ok = 1;
  for (; checked < n; checked++) {
    PyObject *obj = PyTuple_GET_ITEM(seq, checked);
    if (check_mine(p, obj) < 0 || lease_buffer_check_release((BufferObject *)obj, checked) < 0) {
      ok = 0;
      break;
    }
    ((BufferObject *)obj)->released = 2;
  }
  for (Py_ssize_t i = 0; i < checked; i++) ((BufferObject *)PyTuple_GET_ITEM(seq, i))->released = 0;
  if (!ok) {
    Py_DECREF(seq);
    return NULL;
  }
  PyObject *et = NULL, *ev = NULL, *tb = NULL;
  for (Py_ssize_t i = 0; i < n; i++) {
    BufferObject *b = (BufferObject *)PyTuple_GET_ITEM(seq, i);
    if (b->released) continue;  // a notify callback in between released it: nothing to do
    if (lease_buffer_release(b) < 0) {
      if (et == NULL) PyErr_Fetch(&et, &ev, &tb);
      else PyErr_Clear();
    }
  }
  Py_DECREF(seq);
  if (et != NULL) {
    PyErr_Restore(et, ev, tb);
    return NULL;
  }
  Py_RETURN_NONE;
}

// ---- maintenance ----

static PyObject *lp_drain(LeasePoolObject *p, PyObject *unused) {
  (void)unused;
  Py_ssize_t n = p->stash_n;
  if (stash_drain(p, n) < 0) return NULL;
  return PyLong_FromSsize_t(n);
}

static PyObject *lp_close(LeasePoolObject *p, PyObject *unused) {
  (void)unused;
  p->closed = 1;
  if (stash_drain(p, p->stash_n) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *lp_set_tracking(LeasePoolObject *p, PyObject *args) {
  int mode;
  Py_ssize_t every;
  PyObject *capture;
  if (!PyArg_ParseTuple(args, "inO:set_tracking", &mode, &every, &capture)) return NULL;
  if (mode < 0 || mode > 2 || every < 1)
    return PyErr_Format(PyExc_ValueError, "set_tracking(): mode 0..2 and every >= 1");
  if (mode && !PyCallable_Check(capture))
    return PyErr_Format(PyExc_TypeError, "set_tracking(): capture must be callable");
  Py_INCREF(capture);
  Py_XSETREF(p->capture, capture);
  p->track_mode = mode;
  p->track_every = every;
  p->track_tick = 0;
  Py_RETURN_NONE;
}

static PyObject *lp_counters(LeasePoolObject *p, PyObject *unused) {
  (void)unused;
  return Py_BuildValue("{sn sn sn sn sn sn sn sK sK sK sK sK sn sn si}", "capacity", p->capacity,
                       "used", p->used, "peak", p->peak, "live", p->live, "parked", p->parked,
                       "stashed", p->stash_n, "waiters",
                       p->waitq ? PyList_GET_SIZE(p->waitq) : 0, "acquires", p->acquires,
                       "releases", p->releases, "gc_returns", p->gc_returns, "refills",
                       p->refills, "drains", p->drains, "block_size", (Py_ssize_t)p->size,
                       "alignment", (Py_ssize_t)p->align, "closed", p->closed);
}

static PyObject *lp_get_held_by_caller(LeasePoolObject *p, void *closure) {
  (void)closure;
  return PyBool_FromLong(p->used > 0 && !p->mixed && p->sole == PyThread_get_thread_ident());
}

static PyObject *lp_get_waiters(LeasePoolObject *p, void *closure) {
  (void)closure;
  return PyLong_FromSsize_t(p->waitq ? PyList_GET_SIZE(p->waitq) : 0);
}

/* A new pool only with the token; tp_init checks it again (it could be called on its own). */
static PyObject *lp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *token = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
  if (token == NULL && kwargs != NULL) token = PyDict_GetItemString(kwargs, "token");
  if (token != lease_token) {
    PyErr_SetString(PyExc_TypeError, "LeasePool is internal: use poolalloc.BufferPool or "
                    "poolalloc.Allocator");
    return NULL;
  }
  return PyType_GenericNew(type, args, kwargs);
}

static PyObject *lp_get_available(LeasePoolObject *p, void *closure) {
  (void)closure;
  return PyBool_FromLong(!p->closed && (p->capacity == 0 || p->used < p->capacity));
}

// ---- type ----

static int lp_init(LeasePoolObject *p, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"token", "pool_address", "owner", "size", "alignment", "capacity",
                           "fixed", "strict", "stash", "name", "slow", "notify", "waitq",
                           "max_request", NULL};
  PyObject *token, *addr, *owner, *name = Py_None, *slow = Py_None, *notify = Py_None;
  PyObject *waitq = NULL;
  Py_ssize_t size, align, capacity, stash = STASH_DEFAULT, max_request = 0;
  int fixed = 1, strict = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnnn|$ppnOOOO!n:LeasePool", kwlist, &token,
                                   &addr, &owner, &size, &align, &capacity, &fixed, &strict,
                                   &stash, &name, &slow, &notify, &PyList_Type, &waitq,
                                   &max_request))
    return -1;
  if (token != lease_token) {  // a raw address from anywhere else could point anywhere
    PyErr_SetString(PyExc_TypeError, "LeasePool is internal: use poolalloc.BufferPool or "
                    "poolalloc.Allocator");
    return -1;
  }
  if (p->owner != NULL) {
    PyErr_SetString(PyExc_TypeError, "LeasePool is already initialised");
    return -1;
  }
  if (size < 0 || align <= 0 || capacity < 0 || stash < 0 || max_request < 0 ||
      (fixed && size == 0))
    return lease_raise_rc(EINVAL, "LeasePool(): size, alignment, capacity and stash");
  p->pool = (pa_pool_t *)PyLong_AsVoidPtr(addr);
  if (p->pool == NULL) return PyErr_Occurred() ? -1 : lease_raise_rc(EINVAL, "LeasePool(): pool");
  p->stash = stash ? PyMem_Calloc((size_t)stash, sizeof(void *)) : NULL;
  if (stash && p->stash == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  p->tracked = PyDict_New();
  p->gc_leaks = PyList_New(0);
  if (p->tracked == NULL || p->gc_leaks == NULL) return -1;
  Py_INCREF(owner);
  p->owner = owner;
  Py_INCREF(name);
  p->name = name;
  p->slow = slow == Py_None ? NULL : Py_NewRef(slow);
  p->notify = notify == Py_None ? NULL : Py_NewRef(notify);
  p->waitq = waitq == NULL ? PyList_New(0) : Py_NewRef(waitq);
  if (p->waitq == NULL) return -1;
  p->size = (size_t)size;
  p->align = (size_t)align;
  p->capacity = capacity;
  p->max_request = max_request;
  p->fixed = fixed;
  p->strict = strict;
  p->stash_max = fixed ? stash : 0;
  p->stash_batch = stash / 2 > 0 ? stash / 2 : 1;
  return 0;
}

static int lp_traverse(LeasePoolObject *p, visitproc visit, void *arg) {
  Py_VISIT(p->owner);
  Py_VISIT(p->name);
  Py_VISIT(p->slow);
  Py_VISIT(p->notify);
  Py_VISIT(p->capture);
  Py_VISIT(p->tracked);
  Py_VISIT(p->gc_leaks);
  Py_VISIT(p->waitq);
  return 0;
}

static int lp_clear(LeasePoolObject *p) {
  Py_CLEAR(p->slow);
  Py_CLEAR(p->notify);
  Py_CLEAR(p->capture);
  Py_CLEAR(p->tracked);
  Py_CLEAR(p->gc_leaks);
  Py_CLEAR(p->waitq);
  Py_CLEAR(p->name);
  return 0;
}

/* The stash goes back to the core before the owner (and with it the core pool) may die. */
static void lp_dealloc(LeasePoolObject *p) {
  PyObject_GC_UnTrack(p);
  if (p->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)p);
  if (p->stash_n > 0 && stash_drain(p, p->stash_n) < 0) PyErr_WriteUnraisable(NULL);
  PyMem_Free(p->stash);
  lp_clear(p);
  Py_CLEAR(p->owner);
  Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef lp_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lp_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(timeout=None) -> Buffer"},
    {"try_acquire", (PyCFunction)lp_try_acquire, METH_NOARGS, "A Buffer, or None at capacity."},
    {"acquire_many", (PyCFunction)lp_acquire_many, METH_O,
     "acquire_many(n) -> list of n Buffers, or None when the capacity cannot cover n now."},
    {"alloc", (PyCFunction)(void (*)(void))lp_alloc, METH_VARARGS | METH_KEYWORDS,
     "alloc(nbytes, alignment=64, *, timeout=None) -> Buffer"},
    {"try_alloc", (PyCFunction)(void (*)(void))lp_try_alloc, METH_FASTCALL,
     "try_alloc(nbytes, alignment) -> Buffer, or None at capacity."},
    {"release", (PyCFunction)lp_release, METH_O, "release(buf): release a lease of this pool."},
    {"release_many", (PyCFunction)lp_release_many, METH_O, "release_many(bufs)"},
    {"drain", (PyCFunction)lp_drain, METH_NOARGS, "Free every stashed block; returns how many."},
    {"close", (PyCFunction)lp_close, METH_NOARGS, "Refuse new leases and drain the stash."},
    {"set_tracking", (PyCFunction)lp_set_tracking, METH_VARARGS,
     "set_tracking(mode, every, capture)"},
    {"counters", (PyCFunction)lp_counters, METH_NOARGS, "The lease counters as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lp_members[] = {
    {"name", T_OBJECT, offsetof(LeasePoolObject, name), READONLY, NULL},
    {"owner", T_OBJECT, offsetof(LeasePoolObject, owner), READONLY, NULL},
    {"tracked", T_OBJECT, offsetof(LeasePoolObject, tracked), READONLY, NULL},
    {"gc_leaks", T_OBJECT, offsetof(LeasePoolObject, gc_leaks), READONLY, NULL},
    {"capacity", T_PYSSIZET, offsetof(LeasePoolObject, capacity), READONLY, NULL},
    {"used", T_PYSSIZET, offsetof(LeasePoolObject, used), READONLY, NULL},
    {"live", T_PYSSIZET, offsetof(LeasePoolObject, live), READONLY, NULL},
    {"parked", T_PYSSIZET, offsetof(LeasePoolObject, parked), READONLY, NULL},
    {"closed", T_INT, offsetof(LeasePoolObject, closed), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef lp_getset[] = {
    {"available", (getter)lp_get_available, NULL, "True when a lease could be taken now.", NULL},
    {"waiters", (getter)lp_get_waiters, NULL, "Threads and tasks waiting for a lease.", NULL},
    {"held_by_caller", (getter)lp_get_held_by_caller, NULL,
     "True when every live and parked lease was acquired by the calling thread.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject LeasePoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._lease.LeasePool",
    .tp_basicsize = sizeof(LeasePoolObject),
    .tp_dealloc = (destructor)lp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The lease layer of one core pool (internal: use BufferPool or Allocator).",
    .tp_traverse = (traverseproc)lp_traverse,
    .tp_clear = (inquiry)lp_clear,
    .tp_weaklistoffset = offsetof(LeasePoolObject, weakreflist),
    .tp_methods = lp_methods,
    .tp_members = lp_members,
    .tp_getset = lp_getset,
    .tp_init = (initproc)lp_init,
    .tp_new = lp_new,
};
