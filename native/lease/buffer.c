/* SPDX-License-Identifier: MIT */
/* --- buffer.c: the lease type (poolalloc.Buffer) -----------------------------------------------
 *
 * A Buffer owns one block until it is released. It exports exactly `nbytes` writable bytes of
 * format 'B' and counts its live exports, which is what makes recycling safe: the block goes back
 * only once release() was called and the export count is 0. release() with exports alive parks
 * the block (or raises LeaseBusyError in strict mode); the last bf_releasebuffer then returns it.
 *
 * Lease objects are recycled through a small freelist (as CPython does for floats), so a steady
 * acquire/release loop allocates no Python memory at all. The GIL guards the freelist.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define FREELIST_MAX 256

static BufferObject *freelist[FREELIST_MAX];
static int freelist_n;

// ---- life cycle ----

BufferObject *lease_buffer_new(LeasePoolObject *p, void *ptr, Py_ssize_t nbytes, Py_ssize_t charge) {
  BufferObject *b;
  if (freelist_n > 0) {
    b = freelist[--freelist_n];
    (void)PyObject_Init((PyObject *)b, &LeaseBufferType);
  } else {
    b = PyObject_New(BufferObject, &LeaseBufferType);
    if (b == NULL) return NULL;
  }
  b->ptr = ptr;
  b->nbytes = nbytes;
  b->exports = 0;
  b->charge = charge;
  Py_INCREF(p);
  b->pool = p;
  b->origin = NULL;
  b->released = 0;
  return b;
}

/* The lease is gone while still holding its block: the block returns (nothing is lost) and the
 * collection is counted, with its origin when tracking recorded one. */
static void buffer_collect_unreleased(BufferObject *b) {
  LeasePoolObject *p = b->pool;
  p->gc_returns++;
  p->live--;
  b->released = 1;
  if (b->origin != NULL && p->gc_leaks != NULL &&
      PyList_GET_SIZE(p->gc_leaks) < LEASE_GC_LEAKS_KEPT &&
      PyList_Append(p->gc_leaks, b->origin) < 0)
    PyErr_WriteUnraisable(NULL);
  lease_pool_untrack(p, b);
  if (lease_pool_give_back(p, b) < 0) PyErr_WriteUnraisable((PyObject *)p);
}

static void buffer_dealloc(BufferObject *b) {
  if (b->pool != NULL) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (!b->released) buffer_collect_unreleased(b);
    Py_CLEAR(b->origin);
    Py_CLEAR(b->pool);
    PyErr_Restore(et, ev, tb);
  }
  if (freelist_n < FREELIST_MAX) {
    freelist[freelist_n++] = b;
  } else {
    PyObject_Free(b);
  }
}

// ---- the buffer protocol ----

static int buffer_getbuffer(BufferObject *b, Py_buffer *view, int flags) {
  if (b->released) {
    view->obj = NULL;
    return lease_raise_code(LeaseExc_LeaseReleased, 0, "this Buffer was released; acquire a new one");
  }
  if (PyBuffer_FillInfo(view, (PyObject *)b, b->ptr, b->nbytes, 0, flags) < 0) return -1;
  b->exports++;
  return 0;
}

/* One export (view or pin) ended: a parked block goes back with the last one. */
static void buffer_unexport(BufferObject *b) {
  b->exports--;
  if (b->exports == 0 && b->released && b->ptr != NULL) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    b->pool->parked--;
    if (lease_pool_give_back(b->pool, b) < 0) PyErr_WriteUnraisable((PyObject *)b);
    PyErr_Restore(et, ev, tb);
  }
}

static void buffer_releasebuffer(BufferObject *b, Py_buffer *view) {
  (void)view;
  buffer_unexport(b);
}

static PyBufferProcs buffer_as_buffer = {
    (getbufferproc)buffer_getbuffer,
    (releasebufferproc)buffer_releasebuffer,
};

// ---- release ----

static int check_live(BufferObject *b) {
  if (!b->released) return 0;
  return lease_raise_code(LeaseExc_LeaseReleased, 0, "this Buffer was released; acquire a new one");
}

/* index < 0: a single release; else the position in a release_many() batch. */
int lease_buffer_check_release(BufferObject *b, Py_ssize_t index) {
  if (b->released) {
    if (index < 0)
      return lease_raise_code(LeaseExc_DoubleRelease, EALREADY,
                              "this Buffer was already released");
    return lease_raise_code(LeaseExc_DoubleRelease, EALREADY,
                            "release_many(): item %zd was already released (or is listed twice)",
                            index);
  }
  if (b->exports > 0 && b->pool->strict && index >= 0)
    return lease_raise_code(LeaseExc_Busy, EBUSY, "release_many(): item %zd has %zd view(s) alive",
                            index, b->exports);
  if (b->exports > 0 && b->pool->strict)
    return lease_raise_code(LeaseExc_Busy, EBUSY,
                            "release(): %zd view(s) of this Buffer (memoryview, slice, numpy "
                            "array or pin) are still alive; drop or release them first",
                            b->exports);
  return 0;
}

int lease_buffer_release(BufferObject *b) {
  LeasePoolObject *p = b->pool;
  if (lease_buffer_check_release(b, -1) < 0) return -1;
  b->released = 1;
  p->live--;
  p->releases++;
  lease_pool_untrack(p, b);
  if (b->exports > 0) {
    p->parked++;  // the last bf_releasebuffer gives the block back
    return 0;
  }
  return lease_pool_give_back(p, b);
}

static PyObject *buffer_release(BufferObject *b, PyObject *unused) {
  (void)unused;
  if (lease_buffer_release(b) < 0) return NULL;
  Py_RETURN_NONE;
}

/* `with` calls these two, bound without allocating (withbind.c). */
static PyObject *with_enter(PyObject *self) {
  BufferObject *b = (BufferObject *)self;
  if (check_live(b) < 0) return NULL;
  return Py_NewRef(self);
}

static PyObject *with_exit(PyObject *self) {
  BufferObject *b = (BufferObject *)self;
  // released inside the block already: nothing left to do. Never swallows the exception.
  if (!b->released && lease_buffer_release(b) < 0) return NULL;
  Py_RETURN_FALSE;
}

/* static: the type dict holds them for the life of the process (static types are never freed) */
static LeaseWithDescr with_enter_descr = LEASE_WITH_DESCR(
    &LeaseBufferType, "Buffer", "poolalloc.Buffer", "a poolalloc.Buffer", "__enter__", 0,
    with_enter);
static LeaseWithDescr with_exit_descr = LEASE_WITH_DESCR(
    &LeaseBufferType, "Buffer", "poolalloc.Buffer", "a poolalloc.Buffer", "__exit__", 3,
    with_exit);

int lease_buffer_type_ready(void) {
  return lease_with_type_ready(&LeaseBufferType, &with_enter_descr, &with_exit_descr);
}

// ---- pins ----

static PyObject *pin_new(BufferObject *b) {
  if (check_live(b) < 0) return NULL;
  PinObject *pin = PyObject_New(PinObject, &LeasePinType);
  if (pin == NULL) return NULL;
  Py_INCREF(b);
  pin->lease = b;
  pin->ptr = b->ptr;
  pin->nbytes = b->nbytes;
  b->exports++;
  return (PyObject *)pin;
}

static PyObject *buffer_pin(BufferObject *b, PyObject *unused) {
  (void)unused;
  return pin_new(b);
}

static void pin_dealloc(PinObject *pin) {
  BufferObject *b = pin->lease;
  buffer_unexport(b);
  Py_DECREF(b);
  PyObject_Free(pin);
}

/* Exports stay valid for as long as the pin lives, and every export holds the pin (view->obj),
 * so the pin needs no count of its own and no bf_releasebuffer. */
static int pin_getbuffer(PinObject *pin, Py_buffer *view, int flags) {
  return PyBuffer_FillInfo(view, (PyObject *)pin, pin->ptr, pin->nbytes, 0, flags);
}

static PyBufferProcs pin_as_buffer = {(getbufferproc)pin_getbuffer, NULL};

static Py_ssize_t pin_length(PinObject *pin) { return pin->nbytes; }

static PyMappingMethods pin_as_mapping = {(lenfunc)pin_length, NULL, NULL};

static PyObject *pin_get_lease(PinObject *pin, void *closure) {
  (void)closure;
  return Py_NewRef(pin->lease);
}

static PyObject *pin_get_address(PinObject *pin, void *closure) {
  (void)closure;
  return PyLong_FromVoidPtr(pin->ptr);
}

static PyGetSetDef pin_getset[] = {
    {"lease", (getter)pin_get_lease, NULL, "The lease whose block this pin holds.", NULL},
    {"address", (getter)pin_get_address, NULL, "Address of the block (int).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *pin_repr(PinObject *pin) {
  return PyUnicode_FromFormat("<poolalloc.BufferPin nbytes=%zd address=%p>", pin->nbytes,
                              pin->ptr);
}

PyDoc_STRVAR(pin_doc,
             "A pin on a lease's block: exports the block and keeps it from going back to the\n"
             "pool for as long as this object is alive, whatever else is released meanwhile.\n\n"
             "Obtained from Buffer.pin(); Buffer.as_array() builds its arrays on one, so the\n"
             "array's `.base` is the pin (there is no memoryview to release early).\n\n"
             "Example:\n"
             "    >>> from poolalloc import BufferPool\n"
             "    >>> with BufferPool(16) as pool:\n"
             "    ...     buf = pool.acquire()\n"
             "    ...     pin = buf.pin()\n"
             "    ...     buf.release()  # parked: the pin still holds the block\n"
             "    ...     memoryview(pin)[0] = 1\n"
             "    ...     parked = pool.stats().parked\n"
             "    ...     del pin\n"
             "    ...     parked, pool.stats().parked\n"
             "    (1, 0)");

PyTypeObject LeasePinType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc.BufferPin",
    .tp_basicsize = sizeof(PinObject),
    .tp_dealloc = (destructor)pin_dealloc,
    .tp_repr = (reprfunc)pin_repr,
    .tp_as_mapping = &pin_as_mapping,
    .tp_as_buffer = &pin_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = pin_doc,
    .tp_getset = pin_getset,
};

// ---- item access: the cheap path for one byte ----

static int index_of(BufferObject *b, PyObject *key, Py_ssize_t *out) {
  Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
  if (i == -1 && PyErr_Occurred()) return -1;
  if (i < 0) i += b->nbytes;
  if (i < 0 || i >= b->nbytes) {
    PyErr_SetString(PyExc_IndexError, "Buffer index out of range");
    return -1;
  }
  *out = i;
  return 0;
}

static PyObject *buffer_subscript(BufferObject *b, PyObject *key) {
  if (check_live(b) < 0) return NULL;
  if (PyIndex_Check(key)) {
    Py_ssize_t i;
    // a key's __index__ is Python code, which may have released this lease: look again
    if (index_of(b, key, &i) < 0 || check_live(b) < 0) return NULL;
    return PyLong_FromLong(((unsigned char *)b->ptr)[i]);
  }
  PyObject *mv = PyMemoryView_FromObject((PyObject *)b);
  if (mv == NULL) return NULL;
  PyObject *item = PyObject_GetItem(mv, key);
  Py_DECREF(mv);
  return item;
}

static int buffer_ass_subscript(BufferObject *b, PyObject *key, PyObject *value) {
  if (check_live(b) < 0) return -1;
  if (value == NULL) {
    PyErr_SetString(PyExc_TypeError, "cannot delete Buffer items");
    return -1;
  }
  if (PyIndex_Check(key)) {
    Py_ssize_t i;
    if (index_of(b, key, &i) < 0) return -1;
    long v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > 255) {
      PyErr_SetString(PyExc_ValueError, "byte must be in range(0, 256)");
      return -1;
    }
    // the key's or the value's __index__ may have released this lease (Python code ran)
    if (check_live(b) < 0) return -1;
    ((unsigned char *)b->ptr)[i] = (unsigned char)v;
    return 0;
  }
  PyObject *mv = PyMemoryView_FromObject((PyObject *)b);
  if (mv == NULL) return -1;
  int rc = PyObject_SetItem(mv, key, value);
  Py_DECREF(mv);
  return rc;
}

static Py_ssize_t buffer_length(BufferObject *b) { return b->nbytes; }

static PyMappingMethods buffer_as_mapping = {
    (lenfunc)buffer_length,
    (binaryfunc)buffer_subscript,
    (objobjargproc)buffer_ass_subscript,
};

// ---- attributes ----

static PyObject *buffer_get_view(BufferObject *b, void *closure) {
  (void)closure;
  if (check_live(b) < 0) return NULL;
  return PyMemoryView_FromObject((PyObject *)b);
}

static PyObject *buffer_get_address(BufferObject *b, void *closure) {
  (void)closure;
  if (check_live(b) < 0) return NULL;
  return PyLong_FromVoidPtr(b->ptr);
}

static PyObject *buffer_get_nbytes(BufferObject *b, void *closure) {
  (void)closure;
  return PyLong_FromSsize_t(b->nbytes);
}

static PyObject *buffer_get_released(BufferObject *b, void *closure) {
  (void)closure;
  return PyBool_FromLong(b->released);
}

static PyObject *buffer_get_exports(BufferObject *b, void *closure) {
  (void)closure;
  return PyLong_FromSsize_t(b->exports);
}

static PyObject *buffer_get_pool(BufferObject *b, void *closure) {
  (void)closure;
  if (b->pool == NULL) Py_RETURN_NONE;
  Py_INCREF(b->pool);
  return (PyObject *)b->pool;
}

static PyGetSetDef buffer_getset[] = {
    {"view", (getter)buffer_get_view, NULL, "A fresh writable memoryview of the block.", NULL},
    {"address", (getter)buffer_get_address, NULL, "Address of the block (int).", NULL},
    {"nbytes", (getter)buffer_get_nbytes, NULL, "Number of bytes exported.", NULL},
    {"released", (getter)buffer_get_released, NULL, "True once release() was called.", NULL},
    {"exports", (getter)buffer_get_exports, NULL, "Live exports (views) of the block.", NULL},
    {"pool", (getter)buffer_get_pool, NULL, "The lease layer this lease came from.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

// ---- as_array: numpy view, no copy ----

static PyObject *frombuffer;

static PyObject *buffer_as_array(BufferObject *b, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"dtype", "shape", NULL};
  PyObject *dtype = NULL, *shape = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:as_array", kwlist, &dtype, &shape))
    return NULL;
  if (check_live(b) < 0) return NULL;
  if (frombuffer == NULL) {
    PyObject *np = PyImport_ImportModule("numpy");
    if (np == NULL) return NULL;
    frombuffer = PyObject_GetAttrString(np, "frombuffer");
    Py_DECREF(np);
    if (frombuffer == NULL) return NULL;
  }
  // built on a pin: numpy keeps the pin as `.base`, and the block stays while any array lives
  PyObject *pin = pin_new(b);
  if (pin == NULL) return NULL;
  PyObject *arr = dtype == NULL ? PyObject_CallFunction(frombuffer, "Os", pin, "uint8")
                                : PyObject_CallFunctionObjArgs(frombuffer, pin, dtype, NULL);
  Py_DECREF(pin);
  if (arr == NULL || shape == Py_None) return arr;
  PyObject *shaped = PyObject_CallMethod(arr, "reshape", "(O)", shape);
  Py_DECREF(arr);
  return shaped;
}

static PyObject *buffer_repr(BufferObject *b) {
  const char *state = !b->released ? "live" : (b->ptr != NULL ? "parked" : "released");
  return PyUnicode_FromFormat("<poolalloc.Buffer nbytes=%zd address=%p %s>", b->nbytes, b->ptr,
                              state);
}

static PyMethodDef buffer_methods[] = {
    {"release", (PyCFunction)buffer_release, METH_NOARGS,
     "Give the block back (parked until its last view dies)."},
    {"as_array", (PyCFunction)(void (*)(void))buffer_as_array, METH_VARARGS | METH_KEYWORDS,
     "as_array(dtype='uint8', shape=None): a numpy array over the block, no copy.\n"
     "The array (and every array derived from it) keeps the block until it is gone."},
    {"pin", (PyCFunction)buffer_pin, METH_NOARGS,
     "A BufferPin: exports the block and keeps it from going back while the pin lives."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(buffer_doc,
             "A lease on one pooled block, exported through the buffer protocol.\n\n"
             "Obtained from BufferPool.acquire() or Allocator.alloc(); never built directly.\n"
             "The block returns to its pool when release() was called and no memoryview,\n"
             "slice or numpy array of it is alive.\n\n"
             "Example:\n"
             "    >>> from poolalloc import BufferPool\n"
             "    >>> with BufferPool(16) as pool, pool.acquire() as buf:\n"
             "    ...     buf[0:2] = b'hi'\n"
             "    ...     bytes(buf.view[:2]), buf.nbytes\n"
             "    (b'hi', 16)");

PyTypeObject LeaseBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc.Buffer",
    .tp_basicsize = sizeof(BufferObject),
    .tp_dealloc = (destructor)buffer_dealloc,
    .tp_repr = (reprfunc)buffer_repr,
    .tp_as_mapping = &buffer_as_mapping,
    .tp_as_buffer = &buffer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = buffer_doc,
    .tp_methods = buffer_methods,
    .tp_getset = buffer_getset,
};
