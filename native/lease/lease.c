/* SPDX-License-Identifier: MIT */
/* --- lease.c: module poolalloc._lease (init, the core's function table, error helpers) ----------
 *
 * This extension does not link the allocator core. The core exists once, in poolalloc._native;
 * at import this module asks poolalloc._ffi.api_address() for the address of the core's pa_api_t
 * table and calls the core only through it, so there is one copy of the core's globals.
 *
 * Errors: C return codes become exceptions through poolalloc.errors.error_for, the project's one
 * translator; the lease-specific classes (LeaseReleasedError...) come from the same module.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <stdarg.h>

const pa_api_t *pa_lease_api;
PyObject *PaExc_LeaseReleased, *PaExc_DoubleRelease, *PaExc_Foreign, *PaExc_Busy, *PaExc_Closed,
    *PaExc_Exhausted;
static PyObject *error_for;

// ---- errors ----

int pa_raise_rc(int rc, const char *context) {
  PyObject *exc = PyObject_CallFunction(error_for, "is", rc, context);
  if (exc != NULL) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
  return -1;
}

int pa_raise_code(PyObject *cls, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
  va_end(ap);
  if (msg == NULL) return -1;
  PyObject *exc = code ? PyObject_CallFunction(cls, "Oi", msg, code)
                       : PyObject_CallOneArg(cls, msg);
  Py_DECREF(msg);
  if (exc != NULL) {
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
  }
  return -1;
}

// ---- init ----

static int load_api(void) {
  PyObject *ffi = PyImport_ImportModule("poolalloc._ffi");
  if (ffi == NULL) return -1;
  PyObject *addr = PyObject_CallMethod(ffi, "api_address", NULL);
  Py_DECREF(ffi);
  if (addr == NULL) return -1;
  pa_lease_api = (const pa_api_t *)PyLong_AsVoidPtr(addr);
  Py_DECREF(addr);
  if (pa_lease_api == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ImportError, "poolalloc._ffi gave no API table");
    return -1;
  }
  if (pa_lease_api->version != PA_API_VERSION) {
    PyErr_Format(PyExc_ImportError, "poolalloc._native API version %u, _lease expects %u",
                 pa_lease_api->version, PA_API_VERSION);
    return -1;
  }
  return 0;
}

static int load_errors(void) {
  PyObject *errors = PyImport_ImportModule("poolalloc.errors");
  if (errors == NULL) return -1;
  struct {
    PyObject **slot;
    const char *name;
  } names[] = {
      {&PaExc_LeaseReleased, "LeaseReleasedError"}, {&PaExc_DoubleRelease, "DoubleReleaseError"},
      {&PaExc_Foreign, "ForeignBufferError"},       {&PaExc_Busy, "LeaseBusyError"},
      {&PaExc_Closed, "PoolClosedError"},           {&PaExc_Exhausted, "PoolExhausted"},
      {&error_for, "error_for"},
  };
  int rc = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && rc == 0; i++) {
    *names[i].slot = PyObject_GetAttrString(errors, names[i].name);
    if (*names[i].slot == NULL) rc = -1;
  }
  Py_DECREF(errors);
  return rc;
}

static struct PyModuleDef lease_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "poolalloc._lease",
    .m_doc = "Buffer leases over the poolalloc core (internal; use poolalloc.BufferPool).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__lease(void) {
  if (load_api() < 0 || load_errors() < 0) return NULL;
  if (PyType_Ready(&PaBufferType) < 0 || PyType_Ready(&PaLeasePoolType) < 0) return NULL;
  PyObject *m = PyModule_Create(&lease_module);
  if (m == NULL) return NULL;
  Py_INCREF(&PaBufferType);
  Py_INCREF(&PaLeasePoolType);
  if (PyModule_AddObject(m, "Buffer", (PyObject *)&PaBufferType) < 0 ||
      PyModule_AddObject(m, "LeasePool", (PyObject *)&PaLeasePoolType) < 0 ||
      PyModule_AddIntConstant(m, "API_VERSION", PA_API_VERSION) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
