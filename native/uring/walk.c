/* SPDX-License-Identifier: MIT */
/* --- walk.c: the io_uring Proactor's completion batch, walked in C ------------------------------
 *
 * poolalloc.net.uring._fastpath.complete() walks the completions one io_uring_enter reaped.
 * Most of them, in a server, are a multishot receive's bytes landing in an incremental buffer
 * ring (IOU_PBUF_RING_INC) for an open connection whose protocol keeps nothing: the bytes go to
 * protocol.buffer_received as the ring's one reusable slice (PoolRing._lent), shown through a
 * Window, and come back. In Python that hand-off was three frames and some sixty bytecodes of
 * bookkeeping per request (Proactor._complete, UringConnection._on_recv, PoolRing.receive); here
 * it is the protocol's call and a few attribute reads.
 *
 * Only that case is taken here, and only when nothing about it is unusual: a receive completion
 * (kind RECV) with bytes (res > 0) that keeps its multishot receive armed (CQE_F_MORE) and leaves
 * the block in the kernel's hands (CQE_F_BUF_MORE), for a connection whose class routes RECV to
 * UringConnection._on_recv, that is open, not paused, not lingering, and whose ring is
 * incremental with a block behind the bid. Everything else (sends, accepts, errors, EOF, the end
 * of a block, a paused or closing connection, a subclass with its own receive handler) goes to
 * `handle_one(ud, res, flags)`, the Python path, unchanged. So the state lives where it always
 * did (the connection's and the ring's Python attributes and lists). The lend itself (the
 * ring's bookkeeping around the protocol's call, and taking the slice back) is one function,
 * ring_lend, that the walk and PoolRing.receive (through receive()) both call: the rule lives
 * here once, and the Python path differs from the walk only in routing and the connection's
 * own stores (UringConnection._on_recv).
 *
 * Attribute traffic was most of what was left: the attributes read per receive are slots
 * (BaseConnection, UringConnection, PoolRing, the lease base's `view`), and setup() hands this
 * file their member descriptors (setup_ring() the ring's and the lease's, at the import of the
 * ring's module; setup() the connection's), so a read is a load at a fixed offset, not a dictionary
 * lookup. A connection that is not a UringConnection, or a slot that holds anything unexpected
 * (unset, not a bool), sends the completion down the Python path.
 *
 * Exceptions mirror the Python path: an Exception from the protocol gives the slice back and
 * goes to `failed(exc, conn)` (report, then abort), and the walk goes on; any exception that
 * escapes `handle_one` or `failed` (KeyboardInterrupt, SystemExit), or a BaseException from the
 * protocol (the slice is the protocol's then: it may hold it), ends the walk with the
 * completions not yet handled appended to `rest` as (ud, res, flags), for the next pass.
 * ------------------------------------------------------------------------------------------- */
#include "fastpath.h"

#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* struct io_uring_cqe without big-CQE extras, as pa_uring_enter copies them out ("=QiI") */
typedef struct {
  uint64_t user_data;
  int32_t res;
  uint32_t flags;
} cqe_t;

#define KIND_BITS 8
#define KIND_RECV 1
#define CQE_F_BUFFER 1u
#define CQE_F_MORE 2u
#define CQE_BUFFER_SHIFT 16

/* set once by setup(): the lease type's C entry points (the Window factory, the view swap), the
 * released view a returned slice shows, the kernel's CQE_F_BUF_MORE, the function a fast-path
 * connection routes RECV to, the classes whose slots are read here and the offsets of those
 * slots */
static const pa_lease_capi_t *lease_capi;
static PyObject *released_view, *recv_handler;
static PyTypeObject *conn_type, *ring_type, *lease_type;
static uint32_t cqe_f_buf_more;

enum { PAUSED, CLOSED, LINGERING, RECV_ARMED, POOL_RING, PROTOCOL, BYTES_IN, LAST_ACTIVE, LENT,
       VIEW, NSLOTS };
static const char *const slot_names[NSLOTS] = {"paused",    "closed",      "_lingering",
                                               "recv_armed", "pool_ring",   "protocol",
                                               "bytes_in",   "last_active", "_lent",
                                               "view"};
static Py_ssize_t slot_at[NSLOTS];
#define SLOT(obj, which) (*(PyObject **)((char *)(obj) + slot_at[which]))

/* Store `value` (a new reference, stolen) in a slot, dropping what it held. */
static void slot_set(PyObject *obj, int which, PyObject *value) {
  PyObject *old = SLOT(obj, which);
  SLOT(obj, which) = value;
  Py_XDECREF(old);
}

static PyObject *s_handlers, *s_in_ring, *s_incremental, *s_addresses, *s_offsets, *s_refs, *s_in_kernel,
    *s_buffer_received, *s_lent_kept, *s_lent_outlived, *s_back, *s_abort;

/* What one walk remembers about the last type and ring it saw: a batch is mostly one kind of
 * connection on one ring. Strong references, dropped at the end of the walk. */
typedef struct {
  PyTypeObject *type;
  int type_fast;
  PyObject *ring, *addresses, *offsets, *refs, *in_kernel;
} walk_t;

static void ring_clear(walk_t *w) {
  Py_CLEAR(w->ring);
  Py_CLEAR(w->addresses);
  Py_CLEAR(w->offsets);
  Py_CLEAR(w->refs);
  Py_CLEAR(w->in_kernel);
}

static void walk_clear(walk_t *w) {
  Py_CLEAR(w->type);
  ring_clear(w);
}

/* Whether connections of `type` route RECV to recv_handler (a subclass may have its own). */
static int type_is_fast(walk_t *w, PyTypeObject *type) {
  if (w->type == type) return w->type_fast;
  Py_XSETREF(w->type, (PyTypeObject *)Py_NewRef(type));
  w->type_fast = 0;
  if (!PyType_IsSubtype(type, conn_type)) return 0; /* the slots are UringConnection's */
  PyObject *handlers = PyObject_GetAttr((PyObject *)type, s_handlers);
  if (handlers == NULL) {
    PyErr_Clear();
    return 0;
  }
  w->type_fast = PyTuple_Check(handlers) && PyTuple_GET_SIZE(handlers) > KIND_RECV &&
                 PyTuple_GET_ITEM(handlers, KIND_RECV) == recv_handler;
  Py_DECREF(handlers);
  return w->type_fast;
}

/* Load the bookkeeping lists of `ring` (a PoolRing) into w: 1 when loaded, 0 when it is not
 * an incremental ring or its lists are not what this file expects (nothing set then). */
static int ring_load(walk_t *w, PyObject *ring) {
  ring_clear(w);
  w->ring = Py_NewRef(ring);
  PyObject *inc = PyObject_GetAttr(ring, s_incremental);
  Py_XDECREF(inc);
  if (inc != Py_True) {
    PyErr_Clear();
    return 0;
  }
  if ((w->addresses = PyObject_GetAttr(ring, s_addresses)) == NULL ||
      (w->offsets = PyObject_GetAttr(ring, s_offsets)) == NULL ||
      (w->refs = PyObject_GetAttr(ring, s_refs)) == NULL ||
      (w->in_kernel = PyObject_GetAttr(ring, s_in_kernel)) == NULL ||
      !PyList_CheckExact(w->addresses) || !PyList_CheckExact(w->offsets) ||
      !PyList_CheckExact(w->refs) || !PyByteArray_CheckExact(w->in_kernel)) {
    PyErr_Clear();
    Py_CLEAR(w->addresses);
    return 0;
  }
  return 1;
}

/* Whether the walk may take a receive into `ring` (its lists then loaded): an incremental
 * PoolRing itself (a subclass may receive its own way). */
static int ring_is_fast(walk_t *w, PyObject *ring) {
  if (w->ring == ring) return w->addresses != NULL;
  if (!Py_IS_TYPE(ring, ring_type)) {
    ring_clear(w);
    w->ring = Py_NewRef(ring);
    return 0;
  }
  return ring_load(w, ring);
}

/* The list item at i as a Py_ssize_t, or -1 when it is not one (nothing left set). */
static Py_ssize_t list_ssize(PyObject *list, Py_ssize_t i) {
  if (i >= PyList_GET_SIZE(list)) return -1;
  Py_ssize_t v = PyLong_AsSsize_t(PyList_GET_ITEM(list, i));
  if (v == -1 && PyErr_Occurred()) PyErr_Clear();
  return v;
}

static int list_store(PyObject *list, Py_ssize_t i, Py_ssize_t v) {
  PyObject *o = PyLong_FromSsize_t(v);
  if (o == NULL) return -1;
  return PyList_SetItem(list, i, o); /* steals o; i was checked by list_ssize */
}

/* The slice came back unkept: it shows nothing again, and its block goes back when nothing
 * holds it (the finally of PoolRing.receive). */
static int lent_returned(walk_t *w, PyObject *lent, Py_ssize_t bid) {
  PyObject *window = lease_capi->swap_view(lent, released_view);
  if (window == NULL) return -1;
  PyObject *r = NULL;
  if (window != Py_None) { /* a view of the bytes outlives the call */
    PyObject *b = PyLong_FromSsize_t(bid);
    if (b != NULL) r = PyObject_CallMethodObjArgs(w->ring, s_lent_outlived, window, b, NULL);
    Py_XDECREF(b);
    Py_DECREF(window);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
  }
  Py_DECREF(window);
  Py_ssize_t left = list_ssize(w->refs, bid) - 1;
  if (left < 0 || list_store(w->refs, bid, left) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ring refcount underflow");
    return -1;
  }
  if (left == 0 && bid < PyByteArray_GET_SIZE(w->in_kernel) &&
      !PyByteArray_AS_STRING(w->in_kernel)[bid]) {
    PyObject *b = PyLong_FromSsize_t(bid);
    if (b != NULL) r = PyObject_CallMethodOneArg(w->ring, s_back, b);
    Py_XDECREF(b);
    if (r == NULL) return -1;
    Py_DECREF(r);
  }
  return 0;
}

/* The protocol kept the slice (or a BaseException left it holding it): it is an ordinary
 * slice of the ring's from now on, and the ring lends a fresh one next time. */
static int lent_kept(walk_t *w, PyObject *lent, Py_ssize_t bid) {
  PyObject *b = PyLong_FromSsize_t(bid);
  PyObject *r = b != NULL ? PyObject_CallMethodObjArgs(w->ring, s_lent_kept, lent, b, NULL) : NULL;
  Py_XDECREF(b);
  if (r == NULL) return -1;
  Py_DECREF(r);
  return 0;
}

/* Append completions [from, n) to `rest` as tuples; -1 on an error. */
static int save_rest(PyObject *rest, const cqe_t *cqes, Py_ssize_t from, Py_ssize_t n) {
  for (Py_ssize_t i = from; i < n; i++) {
    PyObject *t = Py_BuildValue("(KiI)", (unsigned long long)cqes[i].user_data, cqes[i].res,
                                (unsigned int)cqes[i].flags);
    if (t == NULL || PyList_Append(rest, t) < 0) {
      Py_XDECREF(t);
      return -1;
    }
    Py_DECREF(t);
  }
  return 0;
}

/* Make `ev` the exception being handled, as the interpreter does in an `except` or `finally`
 * block, so that one raised meanwhile is chained to it (`__context__`) exactly as in Python;
 * returns what was handled before, for handling_done(). */
static PyObject *handling(PyObject *ev) {
  PyObject *before = PyErr_GetHandledException();
  PyErr_SetHandledException(ev);
  return before;
}

static void handling_done(PyObject *before) {
  PyErr_SetHandledException(before);
  Py_XDECREF(before);
}

/* An exception raised while handling `ev` (an Exception, owned; see handling()): it takes ev's
 * place. Returns the new one (owned, nothing set) when it is an Exception too, else NULL with
 * it set; ev is released either way. */
static PyObject *replaced(PyObject *ev) {
  PyObject *et, *nv, *tb;
  PyErr_Fetch(&et, &nv, &tb);
  if (et == NULL) return ev; /* nothing raised after all */
  PyErr_NormalizeException(&et, &nv, &tb);
  if (tb != NULL && nv != NULL) PyException_SetTraceback(nv, tb);
  Py_DECREF(ev);
  if (nv != NULL && PyObject_TypeCheck(nv, (PyTypeObject *)PyExc_Exception)) {
    Py_XDECREF(et);
    Py_XDECREF(tb);
    return nv;
  }
  PyErr_Restore(et, nv, tb);
  return NULL;
}

/* Lend the `c->res` bytes a receive put at `offset` in block `bid` of w's ring (the block at
 * `address`) to protocol.buffer_received as the ring's one reusable
 * slice, and take it back: PoolRing.receive (its docstring says the rule), for the walk and
 * for that method alike. 0 when done; -1 with the exception set: an Exception leaves the slice
 * back with the ring (an exception raised while giving it back takes its place, chained to
 * it); anything else (KeyboardInterrupt, SystemExit) leaves it kept, as the protocol may hold
 * it. */
static int ring_lend(walk_t *w, const cqe_t *c, Py_ssize_t bid, Py_ssize_t address,
                     Py_ssize_t offset, PyObject *nbytes, PyObject *protocol) {
  PyObject *lent = SLOT(w->ring, LENT);
  if (lent == NULL || !PyObject_TypeCheck(lent, lease_type)) {
    PyErr_SetString(PyExc_RuntimeError, "the ring has no slice to lend");
    return -1;
  }
  Py_INCREF(lent); /* the protocol may make the ring lend a fresh one meanwhile */
  Py_INCREF(protocol);
  PyObject *result = NULL;
  int rc = -1, lent_out = 0;
  if (c->flags & cqe_f_buf_more) {
    if (list_store(w->offsets, bid, offset + c->res) < 0) goto raised;
  } else { /* the kernel is done with the block: it comes back once no slice holds it */
    if (bid >= PyByteArray_GET_SIZE(w->in_kernel)) {
      PyErr_SetString(PyExc_RuntimeError, "ring bookkeeping is shorter than its bids");
      goto raised;
    }
    PyByteArray_AS_STRING(w->in_kernel)[bid] = 0;
    PyObject *in_ring = PyObject_GetAttr(w->ring, s_in_ring);
    Py_ssize_t count = in_ring != NULL ? PyLong_AsSsize_t(in_ring) : -1;
    Py_XDECREF(in_ring);
    if (count == -1 && PyErr_Occurred()) goto raised;
    PyObject *less = PyLong_FromSsize_t(count - 1);
    int set = less != NULL ? PyObject_SetAttr(w->ring, s_in_ring, less) : -1;
    Py_XDECREF(less);
    if (set < 0) goto raised;
  }
  /* counted before the protocol runs: one that releases an earlier slice of this block
   * meanwhile must not send the block back under this one */
  Py_ssize_t refs = list_ssize(w->refs, bid); /* read now: what ran above may have moved it */
  if (refs < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "ring refcount unreadable");
    goto raised;
  }
  if (list_store(w->refs, bid, refs + 1) < 0) goto raised;
  lent_out = 1;
  PyObject *view = lease_capi->window_view((void *)(address + offset), c->res);
  if (view == NULL) goto raised;
  slot_set(lent, VIEW, view); /* the slice holds it: a reference here would count as a view */
  PyObject *call[3] = {protocol, lent, nbytes};
  result = PyObject_VectorcallMethod(s_buffer_received, call,
                                     3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
  if (result == NULL) goto raised;
  int kept = result == Py_False || result == Py_None ? 0 : PyObject_IsTrue(result);
  if (kept < 0) goto raised;
  lent_out = 0;
  rc = kept ? lent_kept(w, lent, bid) : lent_returned(w, lent, bid);
  goto done;
raised:
  if (lent_out) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL && ev != NULL) PyException_SetTraceback(ev, tb);
    if (ev != NULL && PyObject_TypeCheck(ev, (PyTypeObject *)PyExc_Exception)) {
      PyObject *before = handling(ev); /* PoolRing.receive's `finally` */
      int back = lent_returned(w, lent, bid);
      handling_done(before);
      if (back < 0) { /* raised giving the slice back: that one propagates, chained to ev */
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        PyErr_Fetch(&et, &ev, &tb);
      }
    } else if (lent_kept(w, lent, bid) < 0) {
      PyErr_WriteUnraisable(lent); /* the interrupt is what the caller must see */
    }
    PyErr_Restore(et, ev, tb);
  }
done:
  Py_XDECREF(result);
  Py_DECREF(protocol);
  Py_DECREF(lent);
  return rc;
}

/* The fast path for one completion. Returns 1 when handled, 0 when the Python path must take it
 * (nothing was changed then), -1 with an exception set when the walk must end. An Exception
 * raised once the completion is this path's (by the protocol, mostly) goes to `failed` as the
 * Python path's would (UringConnection._on_recv: abort, then the loop reports), and counts as
 * handled. */
static int recv_fast(walk_t *w, PyObject *conn, const cqe_t *c, PyObject *now, PyObject *failed) {
  if (!type_is_fast(w, Py_TYPE(conn))) return 0;
  if (SLOT(conn, PAUSED) != Py_False || SLOT(conn, CLOSED) != Py_False ||
      SLOT(conn, LINGERING) != Py_False || SLOT(conn, RECV_ARMED) != Py_True)
    return 0;
  PyObject *ring = SLOT(conn, POOL_RING);
  if (ring == NULL || ring == Py_None || !ring_is_fast(w, ring)) return 0;
  Py_ssize_t bid = (Py_ssize_t)(c->flags >> CQE_BUFFER_SHIFT);
  Py_ssize_t address = list_ssize(w->addresses, bid);
  Py_ssize_t offset = list_ssize(w->offsets, bid);
  Py_ssize_t refs = list_ssize(w->refs, bid);
  if (address <= 0 || offset < 0 || refs < 0) return 0; /* the Python path says what is wrong */
  PyObject *protocol = SLOT(conn, PROTOCOL);
  PyObject *lent = SLOT(w->ring, LENT);
  PyObject *bytes_in = SLOT(conn, BYTES_IN);
  if (protocol == NULL || protocol == Py_None || lent == NULL ||
      !PyObject_TypeCheck(lent, lease_type) || bytes_in == NULL || !PyLong_CheckExact(bytes_in))
    return 0;
  PyObject *nbytes = PyLong_FromLong(c->res);
  PyObject *more_in = nbytes != NULL ? PyNumber_Add(bytes_in, nbytes) : NULL;
  if (more_in == NULL) {
    PyErr_Clear();
    Py_XDECREF(nbytes);
    return 0;
  }
  /* from here on the completion is this path's: _on_recv's stores, then the lend */
  Py_INCREF(protocol); /* what the stores drop cannot take it from under the lend */
  slot_set(conn, BYTES_IN, more_in); /* the slot takes the reference */
  slot_set(conn, LAST_ACTIVE, Py_NewRef(now));
  int rc = 1;
  if (ring_lend(w, c, bid, address, offset, nbytes, protocol) < 0) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL && ev != NULL) PyException_SetTraceback(ev, tb);
    if (ev != NULL && PyObject_TypeCheck(ev, (PyTypeObject *)PyExc_Exception)) {
      /* A protocol bug: the slice is back; the connection is aborted and the loop reports it.
       * What raises on the way takes the place of the exception, chained to it, as in Python:
       * an Exception is reported instead, anything else ends the walk. */
      Py_XDECREF(et);
      Py_XDECREF(tb);
      PyObject *before = handling(ev); /* _on_recv's `except Exception` */
      PyObject *r1 = PyObject_CallMethodOneArg(conn, s_abort, ev);
      handling_done(before);
      if (r1 == NULL) ev = replaced(ev);
      Py_XDECREF(r1);
      if (ev != NULL) {
        PyObject *fargs[2] = {ev, conn};
        PyObject *r2 = PyObject_Vectorcall(failed, fargs, 2, NULL);
        Py_DECREF(ev);
        if (r2 == NULL) rc = -1;
        Py_XDECREF(r2);
      } else {
        rc = -1; /* a BaseException replaced it: set, it ends the walk */
      }
    } else {
      PyErr_Restore(et, ev, tb);
      rc = -1;
    }
  }
  Py_DECREF(protocol);
  Py_DECREF(nbytes);
  return rc;
}

/* receive(ring, bid, nbytes, flags, protocol): PoolRing.receive, the same lend as the walk's. */
PyObject *fastpath_receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
  if (nargs != 5) {
    PyErr_Format(PyExc_TypeError, "receive() takes 5 arguments (%zd given)", nargs);
    return NULL;
  }
  if (ring_type == NULL || lease_capi == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "receive(): setup_ring() was not called");
    return NULL;
  }
  PyObject *ring = args[0], *protocol = args[4];
  Py_ssize_t bid = PyLong_AsSsize_t(args[1]);
  if (bid == -1 && PyErr_Occurred()) return NULL;
  long n = PyLong_AsLong(args[2]);
  if (n == -1 && PyErr_Occurred()) return NULL;
  unsigned long flags = PyLong_AsUnsignedLong(args[3]);
  if (flags == (unsigned long)-1 && PyErr_Occurred()) return NULL;
  if (n <= 0 || n > INT32_MAX || flags > UINT32_MAX) {
    PyErr_Format(PyExc_ValueError, "receive(): %ld bytes, flags %lu", n, flags);
    return NULL;
  }
  if (!PyObject_TypeCheck(ring, ring_type)) {
    PyErr_SetString(PyExc_TypeError, "receive(): not a PoolRing");
    return NULL;
  }
  walk_t w = {0};
  PyObject *out = NULL;
  if (!ring_load(&w, ring)) {
    PyErr_SetString(PyExc_TypeError, "receive(): the ring is not an incremental one");
    goto end;
  }
  Py_ssize_t address = bid >= 0 ? list_ssize(w.addresses, bid) : -1;
  if (address <= 0) {
    PyObject *bgid = PyObject_GetAttrString(ring, "bgid");
    if (bgid != NULL)
      PyErr_Format(PyExc_LookupError, "buffer id %zd of group %S is not in the ring", bid, bgid);
    Py_XDECREF(bgid);
    goto end;
  }
  Py_ssize_t offset = list_ssize(w.offsets, bid);
  if (offset < 0) {
    PyErr_Format(PyExc_RuntimeError, "ring bookkeeping of buffer id %zd is broken", bid);
    goto end;
  }
  cqe_t c = {0, (int32_t)n, (uint32_t)flags};
  PyObject *nbytes = args[2];
  if (ring_lend(&w, &c, bid, address, offset, nbytes, protocol) == 0) out = Py_NewRef(Py_None);
end:
  walk_clear(&w);
  return out;
}

PyObject *fastpath_complete(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
  if (nargs != 6) {
    PyErr_Format(PyExc_TypeError, "complete() takes 6 arguments (%zd given)", nargs);
    return NULL;
  }
  PyObject *targets = args[1], *handle_one = args[2], *failed = args[3], *rest = args[4],
           *now = args[5];
  if (!PyDict_Check(targets) || !PyList_Check(rest)) {
    PyErr_SetString(PyExc_TypeError, "complete(cqes, targets: dict, handle_one, failed, "
                                     "rest: list, now)");
    return NULL;
  }
  if (conn_type == NULL || ring_type == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "complete(): setup() or setup_ring() was not called");
    return NULL;
  }
  Py_buffer buf;
  if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) return NULL;
  if (buf.len % (Py_ssize_t)sizeof(cqe_t)) {
    PyBuffer_Release(&buf);
    PyErr_SetString(PyExc_ValueError, "complete(): not a whole number of completions");
    return NULL;
  }
  /* copied: a handler may enter the ring again (a close draining it), which rewrites the
   * array the kernel's completions were reaped into */
  Py_ssize_t n = buf.len / (Py_ssize_t)sizeof(cqe_t);
  cqe_t small[64];
  cqe_t *cqes = n <= 64 ? small : PyMem_Malloc((size_t)n * sizeof(cqe_t));
  if (cqes == NULL) {
    PyBuffer_Release(&buf);
    return PyErr_NoMemory();
  }
  memcpy(cqes, buf.buf, (size_t)n * sizeof(cqe_t));
  PyBuffer_Release(&buf);
  walk_t w = {0};
  Py_ssize_t i = 0;
  PyObject *out = NULL;
  for (; i < n; i++) {
    const cqe_t *c = &cqes[i];
    if ((c->user_data & 0xFF) == KIND_RECV && c->res > 0 &&
        (c->flags & (CQE_F_BUFFER | CQE_F_MORE | cqe_f_buf_more)) ==
            (CQE_F_BUFFER | CQE_F_MORE | cqe_f_buf_more)) {
      PyObject *token = PyLong_FromUnsignedLongLong(c->user_data >> KIND_BITS);
      if (token == NULL) goto interrupted;
      PyObject *conn = PyDict_GetItemWithError(targets, token); /* borrowed */
      Py_DECREF(token);
      if (conn == NULL && PyErr_Occurred()) goto interrupted;
      if (conn != NULL) {
        Py_INCREF(conn);
        int r = recv_fast(&w, conn, c, now, failed);
        Py_DECREF(conn);
        if (r == 1) continue;
        if (r < 0) goto interrupted;
      }
    }
    PyObject *r = PyObject_CallFunction(handle_one, "KiI", (unsigned long long)c->user_data,
                                        c->res, (unsigned int)c->flags);
    if (r == NULL) goto interrupted;
    Py_DECREF(r);
  }
  out = PyLong_FromSsize_t(n);
  goto end;
interrupted : {
  /* the completion that raised is not repeated; the ones after it are the next pass's */
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  if (save_rest(rest, cqes, i + 1, n) < 0) PyErr_Clear();
  PyErr_Restore(et, ev, tb);
}
end:
  walk_clear(&w);
  if (cqes != small) PyMem_Free(cqes);
  return out;
}

/* The offset of the object slot a member descriptor stands for. */
static int member_offset(PyObject *descr, const char *name, Py_ssize_t *out) {
  if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
      ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
    PyErr_Format(PyExc_TypeError, "setup(): %s is not an object slot", name);
    return -1;
  }
  *out = ((PyMemberDescrObject *)descr)->d_member->offset;
  return 0;
}

static int slot_offsets(PyObject *owner, int from, int to, Py_ssize_t *at) {
  for (int i = from; i < to; i++) {
    PyObject *descr = PyObject_GetAttrString(owner, slot_names[i]);
    if (descr == NULL) return -1;
    int rc = member_offset(descr, slot_names[i], &at[i]);
    Py_DECREF(descr);
    if (rc < 0) return -1;
  }
  return 0;
}

/* setup_ring(released, CQE_F_BUF_MORE, ring_class, lease_class): what a lend needs. */
PyObject *fastpath_setup_ring(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *released, *rtype, *ltype;
  unsigned int buf_more;
  if (!PyArg_ParseTuple(args, "OIO!O!:setup_ring", &released, &buf_more, &PyType_Type, &rtype,
                        &PyType_Type, &ltype))
    return NULL;
  const pa_lease_capi_t *capi = PyCapsule_Import(PA_LEASE_CAPI_NAME, 0);
  if (capi == NULL) return NULL;
  if (capi->version != PA_LEASE_CAPI_VERSION) {
    PyErr_Format(PyExc_ImportError, "setup_ring(): %s is version %d, this file needs %d",
                 PA_LEASE_CAPI_NAME, capi->version, PA_LEASE_CAPI_VERSION);
    return NULL;
  }
  if (!PyType_IsSubtype((PyTypeObject *)ltype, capi->view_lease_type)) {
    PyErr_SetString(PyExc_TypeError, "setup_ring(): lease_class is not a ViewLeaseBase");
    return NULL;
  }
  Py_ssize_t at[NSLOTS];
  if (slot_offsets(rtype, LENT, LENT + 1, at) < 0 || slot_offsets(ltype, VIEW, VIEW + 1, at) < 0)
    return NULL;
  slot_at[LENT] = at[LENT];
  slot_at[VIEW] = at[VIEW];
  lease_capi = capi;
  Py_XSETREF(released_view, Py_NewRef(released));
  Py_XSETREF(ring_type, (PyTypeObject *)Py_NewRef(rtype));
  Py_XSETREF(lease_type, (PyTypeObject *)Py_NewRef(ltype));
  cqe_f_buf_more = buf_more;
  Py_RETURN_NONE;
}

/* setup(recv_handler, connection_class): what the walk needs besides setup_ring's. */
PyObject *fastpath_setup(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *handler, *ctype;
  if (!PyArg_ParseTuple(args, "OO!:setup", &handler, &PyType_Type, &ctype)) return NULL;
  Py_ssize_t at[NSLOTS];
  if (slot_offsets(ctype, 0, LENT, at) < 0) return NULL;
  memcpy(slot_at, at, LENT * sizeof at[0]);
  Py_XSETREF(recv_handler, Py_NewRef(handler));
  Py_XSETREF(conn_type, (PyTypeObject *)Py_NewRef(ctype));
  Py_RETURN_NONE;
}

int fastpath_walk_init(void) {
#define INTERN(var, text) \
  if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
  INTERN(s_handlers, "handlers");
  INTERN(s_in_ring, "in_ring");
  INTERN(s_incremental, "incremental");
  INTERN(s_addresses, "_addresses");
  INTERN(s_offsets, "_offsets");
  INTERN(s_refs, "_refs");
  INTERN(s_in_kernel, "_in_kernel");
  INTERN(s_buffer_received, "buffer_received");
  INTERN(s_lent_kept, "_lent_kept");
  INTERN(s_lent_outlived, "_lent_outlived");
  INTERN(s_back, "_back");
  INTERN(s_abort, "abort");
#undef INTERN
  return 0;
}
