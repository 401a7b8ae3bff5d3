/* SPDX-License-Identifier: MIT */
/* --- window.c: bytes of a pooled block shown through the buffer protocol (Window) ---------------
 *
 * The io_uring receive path (poolalloc/net/uring/_buffers.py) hands protocols the bytes one
 * receive put into a block of an incremental ring, while other receives go on filling the rest
 * of the block. The block may go back into the ring only once nothing shows those bytes any
 * more: not the lease handed over, and not a view, a slice of a view, a numpy array or any other
 * export made from it, exactly as a pool Buffer keeps its block while any export lives.
 *
 * window_view(address, nbytes) returns a memoryview whose exporter is a fresh Window over those
 * bytes. Every view derived from it, slices included, holds the memoryview's managed buffer,
 * which holds the Window: so the Window dies exactly when the last of them does, and the ring
 * learns it with weakref.finalize on the Window (`memoryview.obj`). `exports` says whether any
 * export is alive right now. A Window never owns the memory: its creator keeps the block out of
 * every pool and ring until the Window is gone. The GIL serialises everything here.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

typedef struct {
  PyObject_HEAD
  char *buf;
  Py_ssize_t len;
  Py_ssize_t exports;
  PyObject *weakrefs;
} WindowObject;

static int window_getbuffer(WindowObject *w, Py_buffer *view, int flags) {
  if (PyBuffer_FillInfo(view, (PyObject *)w, w->buf, w->len, 0, flags) < 0) return -1;
  w->exports++;
  return 0;
}

static void window_releasebuffer(WindowObject *w, Py_buffer *view) {
  (void)view;
  w->exports--;
}

static PyBufferProcs window_as_buffer = {
    .bf_getbuffer = (getbufferproc)window_getbuffer,
    .bf_releasebuffer = (releasebufferproc)window_releasebuffer,
};

static void window_dealloc(WindowObject *w) {
  if (w->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)w);
  Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *window_get_exports(WindowObject *w, void *closure) {
  (void)closure;
  return PyLong_FromSsize_t(w->exports);
}

static PyGetSetDef window_getset[] = {
    {"exports", (getter)window_get_exports, NULL, "Live buffer-protocol exports.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject LeaseWindowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._lease.Window",
    .tp_basicsize = sizeof(WindowObject),
    .tp_dealloc = (destructor)window_dealloc,
    .tp_as_buffer = &window_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes of a pooled block shown through the buffer protocol (see window_view).",
    .tp_weaklistoffset = offsetof(WindowObject, weakrefs),
    .tp_getset = window_getset,
};

/* The exporter is read from the view's managed buffer, not from the view's own Py_buffer: a
 * released memoryview keeps a stale copy of `obj` there while its managed buffer, once no
 * slice holds it either, has let the exporter go (master.obj is NULL then). */
PyObject *lease_window_of(PyObject *view) {
  if (!PyMemoryView_Check(view)) return NULL;
  _PyManagedBufferObject *mbuf = ((PyMemoryViewObject *)view)->mbuf;
  PyObject *exporter = mbuf != NULL ? mbuf->master.obj : NULL;
  if (exporter == NULL || !Py_IS_TYPE(exporter, &LeaseWindowType)) return NULL;
  return exporter;
}

Py_ssize_t lease_window_exports(PyObject *window) { return ((WindowObject *)window)->exports; }

/* A writable memoryview of nbytes at address, exported by a new Window (its `obj`): one per
 * receive on the io_uring path, called through the capsule (pa_lease_capi.h) or window_view. */
PyObject *lease_window_new_view(void *address, Py_ssize_t nbytes) {
  if (nbytes < 0 || (address == NULL && nbytes > 0)) {
    PyErr_Format(PyExc_ValueError, "window_view(): no %zd bytes at address %p", nbytes, address);
    return NULL;
  }
  WindowObject *w = PyObject_New(WindowObject, &LeaseWindowType);
  if (w == NULL) return NULL;
  w->buf = address;
  w->len = nbytes;
  w->exports = 0;
  w->weakrefs = NULL;
  PyObject *view = PyMemoryView_FromObject((PyObject *)w);
  Py_DECREF(w); /* the view's managed buffer holds it from here on */
  return view;
}

/* window_view(address, nbytes): lease_window_new_view from Python. */
PyObject *lease_window_view(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "window_view() takes 2 arguments (%zd given)", nargs);
    return NULL;
  }
  void *address = PyLong_AsVoidPtr(args[0]);
  if (address == NULL && PyErr_Occurred()) return NULL;
  Py_ssize_t nbytes = PyLong_AsSsize_t(args[1]);
  if (nbytes == -1 && PyErr_Occurred()) return NULL;
  return lease_window_new_view(address, nbytes);
}
