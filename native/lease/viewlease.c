/* SPDX-License-Identifier: MIT */
/* --- viewlease.c: the C base of the leases that only wrap a view (ViewLeaseBase) ----------------
 *
 * Some leases handed to protocols are not pool Buffers: the bytes one receive put into a block
 * of an incremental io_uring ring (poolalloc/net/uring/_buffers.py, _Slice) and input held back
 * by backpressure (poolalloc/net/transport.py, HeldBytes). They are Python classes around one
 * memoryview, `view`. The lease contract (LeaseLike) says they export their bytes through the
 * buffer protocol, as a Buffer does (`memoryview(lease)`, `sock.send(lease)`, `bytes(lease)`),
 * but a Python class can only do that from 3.12 on (`__buffer__`, PEP 688). This base holds
 * `view` and exports it on every version: bf_getbuffer asks the view itself, so the export's
 * owner is the view and its release is the view's (no bf_releasebuffer here). Once the subclass
 * sets `view` to a released memoryview, exporting raises ValueError, as using the view does.
 * The GIL serialises everything here.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

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

static int viewlease_getbuffer(ViewLeaseObject *l, Py_buffer *buf, int flags) {
  if (l->view == NULL) {
    PyErr_SetString(PyExc_ValueError, "this lease has no view yet");
    return -1;
  }
  return PyObject_GetBuffer(l->view, buf, flags);
}

static PyBufferProcs viewlease_as_buffer = {
    .bf_getbuffer = (getbufferproc)viewlease_getbuffer,
};

static PyMemberDef viewlease_members[] = {
    {"view", T_OBJECT_EX, offsetof(ViewLeaseObject, view), 0, "The lease's bytes."},
    {NULL, 0, 0, 0, NULL},
};

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
    .tp_new = PyType_GenericNew,
};
