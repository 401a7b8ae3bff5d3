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
 * view itself, so the export's owner is the view and its release is the view's (the
 * bf_releasebuffer here is an empty marker, see below). Once the subclass sets `view` to a
 * released memoryview, exporting raises ValueError, as using the view does. An export taken
 * before that lives on, as the view's own slices do: whoever lent the bytes keeps them from
 * being reused meanwhile (an io_uring slice's view is exported by a Window that dies with the
 * last of them, see window.c).
 * The GIL serialises everything here.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <stdbool.h>
#include <stddef.h>
#include <structmember.h>

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

/* True, with TypeError set, when `view` is anything but a memoryview. */
static bool not_a_memoryview(PyObject *view) {
  if (PyMemoryView_Check(view)) return false;
  PyErr_Format(PyExc_TypeError, "a lease's view must be a memoryview, not %.100s",
               Py_TYPE(view)->tp_name);
  return true;
}

/* Only a memoryview is exported: its export runs no Python code (an exporter written in Python
 * could free the view in the middle) and cannot lead back to a lease (a lease whose view were
 * itself, or another lease viewing it, would export in an endless loop). `view` itself is a
 * plain member, so that setting it per receive costs a slot store, not a setter call. The view
 * is held for the call all the same. */
static int viewlease_getbuffer(ViewLeaseObject *l, Py_buffer *buf, int flags) {
  PyObject *view = l->view;
  if (view == NULL) {
    PyErr_SetString(PyExc_ValueError, "this lease has no view");
    return -1;
  }
  if (not_a_memoryview(view)) return -1;
  Py_INCREF(view);
  int rc = PyObject_GetBuffer(view, buf, flags);
  Py_DECREF(view);
  return rc;
}

/* Never called: an export's `obj` is the view, so PyBuffer_Release goes to the view's own
 * releasebuffer. It is here because consumers look for it to decide how to keep the memory
 * alive: numpy.frombuffer holds an export (a memoryview of the lease) of an exporter that has
 * one, and only the exporter object otherwise, which would not keep the lent bytes from being
 * reused once the lease is given back. */
static void viewlease_releasebuffer(ViewLeaseObject *l, Py_buffer *buf) {
  (void)l;
  (void)buf;
}

static PyBufferProcs viewlease_as_buffer = {
    .bf_getbuffer = (getbufferproc)viewlease_getbuffer,
    .bf_releasebuffer = (releasebufferproc)viewlease_releasebuffer,
};

static PyMemberDef viewlease_members[] = {
    {"view", T_OBJECT_EX, offsetof(ViewLeaseObject, view), 0,
     "The lease's bytes (a memoryview), also what the buffer protocol exports."},
    {NULL, 0, 0, 0, NULL},
};


/* lease._swap_view(released): show `released` from now on, and say whether the bytes shown
 * until now are still viewed: the Window that exported the old view (window.c) when any view,
 * slice or export of them outlives this, else None. The old view is dropped first, so the
 * lease's own reference does not count. One C call per receive on the io_uring path (through
 * the capsule, pa_lease_capi.h). */
PyObject *lease_view_swap(PyObject *lease, PyObject *released) {
  ViewLeaseObject *l = (ViewLeaseObject *)lease;
  PyObject *old = l->view;
  l->view = Py_NewRef(released);
  if (old == NULL || old == released) {
    Py_XDECREF(old);
    Py_RETURN_NONE;
  }
  PyObject *window = lease_window_of(old);
  Py_XINCREF(window);
  Py_DECREF(old);
  if (window != NULL && lease_window_exports(window) > 0) return window;
  Py_XDECREF(window);
  Py_RETURN_NONE;
}

static PyMethodDef viewlease_methods[] = {
    {"_swap_view", (PyCFunction)lease_view_swap, METH_O,
     "Show `released`; return the old view's Window if its bytes are still viewed, else None."},
    {NULL, NULL, 0, NULL},
};

/* ViewLeaseBase(view=None): a subclass that shows `view` its own way passes the exported one
 * here (a memoryview). */
static int viewlease_init(ViewLeaseObject *l, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"view", NULL};
  PyObject *view = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:ViewLeaseBase", kwlist, &view)) return -1;
  if (view == NULL || view == Py_None) return 0;
  if (not_a_memoryview(view)) return -1;
  Py_XSETREF(l->view, Py_NewRef(view));
  return 0;
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
    .tp_members = viewlease_members,
    .tp_methods = viewlease_methods,
    .tp_init = (initproc)viewlease_init,
    .tp_new = PyType_GenericNew,
};
