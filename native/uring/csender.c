/* SPDX-License-Identifier: MIT */
/* --- csender.c: CopySender, the call that hands small bytes to the ring's copied sends ---------
 *
 * UringConnection.write gives `bytes` of at most 16 KiB to pa_uring_csend (uring.c), which
 * copies them and queues the send: one call per response. Through cffi that call released and
 * took back the GIL and converted its arguments generically (about 1,500 instructions, five
 * times the copy and the submission themselves). A CopySender holds the function's address and
 * the ring's, and makes the call straight: pa_uring_csend never blocks (a full submission queue
 * is submitted without waiting), so the GIL stays held. The ring replaces its CopySender when it
 * closes, before the ring's memory goes.
 * ------------------------------------------------------------------------------------------- */
#include "fastpath.h"

#include <stddef.h>
#include <stdint.h>

typedef int (*csend_fn)(void *ring, int fd, const void *data, size_t len, uint64_t ud);

typedef struct {
  PyObject_HEAD
  csend_fn fn;
  void *ring;
  vectorcallfunc vectorcall;
} CopySenderObject;

/* sender(fd, data, n, ud) -> errno code (0: copied and queued) */
static PyObject *sender_call(CopySenderObject *s, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames) {
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs != 4 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
    PyErr_SetString(PyExc_TypeError, "CopySender(fd, data, n, ud) takes 4 positional arguments");
    return NULL;
  }
  if (!PyBytes_Check(args[1])) {
    PyErr_Format(PyExc_TypeError, "CopySender: data must be bytes, not %.100s",
                 Py_TYPE(args[1])->tp_name);
    return NULL;
  }
  long fd = PyLong_AsLong(args[0]);
  if (fd == -1 && PyErr_Occurred()) return NULL;
  Py_ssize_t n = PyLong_AsSsize_t(args[2]);
  if (n == -1 && PyErr_Occurred()) return NULL;
  unsigned long long ud = PyLong_AsUnsignedLongLong(args[3]);
  if (ud == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  if (fd < INT32_MIN || fd > INT32_MAX || n < 0 || n > PyBytes_GET_SIZE(args[1])) {
    PyErr_SetString(PyExc_ValueError, "CopySender: fd out of range, or n not within data");
    return NULL;
  }
  return PyLong_FromLong(s->fn(s->ring, (int)fd, PyBytes_AS_STRING(args[1]), (size_t)n, ud));
}

/* CopySender(function_address, ring_address) */
static PyObject *sender_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  unsigned long long fn, ring;
  static char *kwlist[] = {"function_address", "ring_address", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KK:CopySender", kwlist, &fn, &ring))
    return NULL;
  if (fn == 0 || ring == 0) {
    PyErr_SetString(PyExc_ValueError, "CopySender: a null address");
    return NULL;
  }
  CopySenderObject *s = (CopySenderObject *)type->tp_alloc(type, 0);
  if (s == NULL) return NULL;
  s->fn = (csend_fn)(uintptr_t)fn;
  s->ring = (void *)(uintptr_t)ring;
  s->vectorcall = (vectorcallfunc)sender_call;
  return (PyObject *)s;
}

PyTypeObject CopySenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc.net.uring._fastpath.CopySender",
    .tp_basicsize = sizeof(CopySenderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(CopySenderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = sender_new,
    .tp_doc = "sender(fd, data, n, ud) -> errno: pa_uring_csend on one ring, called directly.",
};
