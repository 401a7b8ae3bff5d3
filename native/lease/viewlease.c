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

static PyBufferProcs viewlease_as_buffer = {
    .bf_getbuffer = (getbufferproc)viewlease_getbuffer,
};

static PyMemberDef viewlease_members[] = {
    {"view", T_OBJECT_EX, offsetof(ViewLeaseObject, view), 0,
     "The lease's bytes (a memoryview), also what the buffer protocol exports."},
    {NULL, 0, 0, 0, NULL},
};

/* lease._drop_view(released): show `released` from now on. Returns the view shown until now if
 * a buffer-protocol export of it is still alive (memoryview(lease) kept past the lease's
 * return: the caller keeps the bytes' block out until that export is gone), else None. One C
 * call where a Python `view.release()` in a try block cost about 40 ns per receive. */
static PyObject *viewlease_drop_view(ViewLeaseObject *l, PyObject *released) {
  PyObject *old = l->view;
  l->view = Py_NewRef(released);
  if (old != NULL && PyMemoryView_Check(old) && ((PyMemoryViewObject *)old)->exports > 0)
    return old; /* the reference the lease held goes to the caller */
  Py_XDECREF(old);
  Py_RETURN_NONE;
}

static PyMethodDef viewlease_methods[] = {
    {"_drop_view", (PyCFunction)viewlease_drop_view, METH_O,
     "Show `released` from now on; return the old view if it is still exported, else None."},
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
