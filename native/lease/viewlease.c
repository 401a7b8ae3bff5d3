/* SPDX-License-Identifier: MIT */
/* --- viewlease.c: the C base of the leases that only wrap a view (ViewLeaseBase) ----------------
 *
 * Some leases handed to protocols are not pool Buffers: the bytes one receive put into a block
 * of an incremental io_uring ring (poolalloc/net/uring/_buffers.py, _Slice) and input held back
 * by backpressure (poolalloc/net/transport.py, HeldBytes). They are Python classes around one
 * memoryview, `view`. The lease contract (LeaseLike) says they export their bytes through the
 * buffer protocol, as a Buffer does (`memoryview(lease)`, `sock.send(lease)`, `bytes(lease)`),
 * but a Python class can only do that from 3.12 on (`__buffer__`, PEP 688). This base holds
 * `view` (a memoryview, nothing else) and exports it on every version: bf_getbuffer asks the
 * view itself, so the export's owner is the view and its release is the view's (no
 * bf_releasebuffer here). Once the subclass sets `view` to a released memoryview, exporting
 * raises ValueError, as using the view does. An export taken before that stays what the view's
 * own slices are: the holder's to drop when it gives the lease back (the lease contract).
 * The GIL serialises everything here.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <stddef.h>

typedef struct {
  PyObject_HEAD
  PyObject *view; /* set by the subclass; NULL until then */
} ViewLeaseObject;

static int viewlease_traverse(ViewLeaseObject *l, visitproc visit, void *arg) {
  Py_VISIT(l->view);
  return 0;
}

static int viewlease_clear(ViewLeaseObject *l) {
  Py_CLEAR(l->view);
  return 0;
}

static void viewlease_dealloc(ViewLeaseObject *l) {
  PyObject_GC_UnTrack(l);
  Py_CLEAR(l->view);
  Py_TYPE(l)->tp_free((PyObject *)l);
}

/* The view is held for the call: nothing the export runs may free it under us. */
static int viewlease_getbuffer(ViewLeaseObject *l, Py_buffer *buf, int flags) {
  PyObject *view = l->view;
  if (view == NULL) {
    PyErr_SetString(PyExc_ValueError, "this lease has no view");
    return -1;
  }
  Py_INCREF(view);
  int rc = PyObject_GetBuffer(view, buf, flags);
  Py_DECREF(view);
  return rc;
}

static PyBufferProcs viewlease_as_buffer = {
    .bf_getbuffer = (getbufferproc)viewlease_getbuffer,
};

/* Only a memoryview: its export runs no Python code and cannot lead back to a lease (a lease
 * whose view were itself, or another lease viewing it, would export in an endless loop). */
static int viewlease_set_view(ViewLeaseObject *l, PyObject *value, void *closure) {
  (void)closure;
  if (value == NULL) {
    Py_CLEAR(l->view);
    return 0;
  }
  if (!PyMemoryView_Check(value)) {
    PyErr_Format(PyExc_TypeError, "a lease's view must be a memoryview, not %.100s",
                 Py_TYPE(value)->tp_name);
    return -1;
  }
  Py_INCREF(value);
  Py_XSETREF(l->view, value);
  return 0;
}

static PyObject *viewlease_get_view(ViewLeaseObject *l, void *closure) {
  (void)closure;
  if (l->view == NULL) {
    PyErr_SetString(PyExc_AttributeError, "this lease has no view");
    return NULL;
  }
  return Py_NewRef(l->view);
}

static PyGetSetDef viewlease_getset[] = {
    {"view", (getter)viewlease_get_view, (setter)viewlease_set_view,
     "The lease's bytes (a memoryview), also what the buffer protocol exports.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ViewLeaseBase(view=None): a subclass that shows `view` its own way passes the exported one
 * here. */
static int viewlease_init(ViewLeaseObject *l, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"view", NULL};
  PyObject *view = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:ViewLeaseBase", kwlist, &view)) return -1;
  return view == NULL || view == Py_None ? 0 : viewlease_set_view(l, view, NULL);
}

PyTypeObject LeaseViewBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._lease.ViewLeaseBase",
    .tp_basicsize = sizeof(ViewLeaseObject),
    .tp_dealloc = (destructor)viewlease_dealloc,
    .tp_as_buffer = &viewlease_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C base of the leases that wrap one memoryview: exports it (buffer protocol).",
    .tp_traverse = (traverseproc)viewlease_traverse,
    .tp_clear = (inquiry)viewlease_clear,
    .tp_getset = viewlease_getset,
    .tp_init = (initproc)viewlease_init,
    .tp_new = PyType_GenericNew,
};
