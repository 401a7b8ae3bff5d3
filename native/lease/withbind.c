/* SPDX-License-Identifier: MIT */
/* --- withbind.c: __enter__ and __exit__ of the lease types, bound without allocating -----------
 *
 * CPython 3.11-3.13 look __enter__ and __exit__ up on the type for each `with` and bind them to
 * the object; a plain method descriptor allocates a GC-tracked builtin method object for each
 * (two per `with`). Buffer and the C base of ObjectPool leases both get their two methods from
 * here instead: descriptors (LeaseWithDescr, one per method and type, static) that bind to a
 * small untracked object taken from a freelist, called through vectorcall straight into the
 * type's own function. The interpreter's calls (no argument for __enter__, three positional
 * ones for __exit__) go straight there; any other call has its arguments checked first. A bound
 * object holds a strong reference to its lease, as a bound method does: a lease that is only
 * referenced by the interpreter's stack during its `with` lives until its __exit__ has run.
 *
 * Cheaper bindings exist only for bound objects that do not own their lease (an INCREF of one
 * cached per lease), which a lease freed while its __exit__ waits on the stack would leave
 * dangling: docs/benchmarks.md, "The `with` form's floor", measures how close this comes. The
 * GIL guards the freelist.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <stddef.h>

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  LeaseWithDescr *descr; /* borrowed: the descriptors are static */
  PyObject *lease;
} WithBound;

#define WITH_FREELIST_MAX 16
static WithBound *with_freelist[WITH_FREELIST_MAX];
static int with_freelist_n;

static int check_args(const LeaseWithDescr *d, Py_ssize_t nargs, PyObject *kwnames) {
  if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
    PyErr_Format(PyExc_TypeError, "%s.%s() takes no keyword arguments", d->owner, d->name);
    return -1;
  }
  if (nargs != d->nargs) {
    PyErr_Format(PyExc_TypeError, "%s.%s() takes exactly %zd argument(s) (%zd given)", d->owner,
                 d->name, d->nargs, nargs);
    return -1;
  }
  return 0;
}

static PyObject *bound_checked(WithBound *m, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
  (void)args;
  if (check_args(m->descr, PyVectorcall_NARGS(nargsf), kwnames) < 0) return NULL;
  return m->descr->impl(m->lease);
}

static PyObject *bound_enter(WithBound *m, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames) {
  if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL)
    return bound_checked(m, args, nargsf, kwnames);
  return m->descr->impl(m->lease);
}

static PyObject *bound_exit(WithBound *m, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames) {
  if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL)
    return bound_checked(m, args, nargsf, kwnames);
  return m->descr->impl(m->lease);
}

static void bound_dealloc(WithBound *m) {
  PyObject *lease = m->lease;
  if (with_freelist_n < WITH_FREELIST_MAX)
    with_freelist[with_freelist_n++] = m;
  else
    PyObject_Free(m);
  Py_DECREF(lease);
}

static PyObject *bound_repr(WithBound *m) {
  return PyUnicode_FromFormat("<bound method %s.%s of %R>", m->descr->owner, m->descr->name,
                              m->lease);
}

static PyTypeObject WithBoundType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._LeaseWithMethod",
    .tp_basicsize = sizeof(WithBound),
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_repr = (reprfunc)bound_repr,
    .tp_vectorcall_offset = offsetof(WithBound, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A lease's __enter__ or __exit__ bound to it.",
};

static PyObject *descr_get(LeaseWithDescr *d, PyObject *obj, PyObject *type) {
  (void)type;
  if (obj == NULL || obj == Py_None) return Py_NewRef(d);
  if (!PyObject_TypeCheck(obj, d->type)) {
    PyErr_Format(PyExc_TypeError, "%s.%s needs %s, not %.100s", d->owner, d->name, d->what,
                 Py_TYPE(obj)->tp_name);
    return NULL;
  }
  WithBound *m;
  if (with_freelist_n > 0) {
    m = with_freelist[--with_freelist_n];
#if PY_VERSION_HEX < 0x030D0000 && !defined(Py_REF_DEBUG)
    /* The type is still set; all PyObject_Init adds in 3.11-3.12 release builds is two calls
     * and tracemalloc's note of where the object was made, which for this object nobody asks.
     * Debug builds (Py_REF_DEBUG, implied by Py_TRACE_REFS) also count references in total,
     * and 3.13 tells a reference tracer of the creation, whose destruction _Py_Dealloc
     * reports: the full init there. */
    Py_SET_REFCNT(m, 1);
#else
    (void)PyObject_Init((PyObject *)m, &WithBoundType);
#endif
  } else {
    m = PyObject_New(WithBound, &WithBoundType);
    if (m == NULL) return NULL;
  }
  m->vectorcall = d->nargs == 0 ? (vectorcallfunc)bound_enter : (vectorcallfunc)bound_exit;
  m->descr = d;
  m->lease = Py_NewRef(obj);
  return (PyObject *)m;
}

/* Owner.__exit__(lease, None, None, None): the unbound form */
PyObject *lease_with_descr_call(PyObject *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames) {
  LeaseWithDescr *d = (LeaseWithDescr *)self;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs < 1 || !PyObject_TypeCheck(args[0], d->type)) {
    PyErr_Format(PyExc_TypeError, "%s.%s needs %s as its first argument", d->owner, d->name,
                 d->what);
    return NULL;
  }
  if (check_args(d, nargs - 1, kwnames) < 0) return NULL;
  return d->impl(args[0]);
}

static PyObject *descr_repr(LeaseWithDescr *d) {
  return PyUnicode_FromFormat("<method '%s' of '%s' objects>", d->name, d->qualname);
}

PyTypeObject LeaseWithDescrType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._LeaseWithDescriptor",
    .tp_basicsize = sizeof(LeaseWithDescr),
    .tp_repr = (reprfunc)descr_repr,
    .tp_vectorcall_offset = offsetof(LeaseWithDescr, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = (descrgetfunc)descr_get,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A lease type's __enter__ or __exit__ (see poolalloc.Buffer).",
};

int lease_with_type_ready(PyTypeObject *type, LeaseWithDescr *enter, LeaseWithDescr *exit) {
  if (PyType_Ready(&LeaseWithDescrType) < 0 || PyType_Ready(&WithBoundType) < 0) return -1;
  // a dict given before PyType_Ready keeps its entries (documented for tp_dict)
  PyObject *dict = PyDict_New();
  if (dict == NULL) return -1;
  if (PyDict_SetItemString(dict, "__enter__", (PyObject *)enter) < 0 ||
      PyDict_SetItemString(dict, "__exit__", (PyObject *)exit) < 0) {
    Py_DECREF(dict);
    return -1;
  }
  type->tp_dict = dict;
  return PyType_Ready(type);
}
