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

const pa_api_t *lease_api;
PyObject *LeaseExc_LeaseReleased, *LeaseExc_DoubleRelease, *LeaseExc_Foreign, *LeaseExc_Busy,
    *LeaseExc_Closed, *LeaseExc_Exhausted, *LeaseExc_Value, *LeaseExc_Memory, *LeaseExc_Overflow;
PyObject *lease_token;
static int token_claimed;
static PyObject *error_for;

// ---- errors ----

int lease_raise_rc(int rc, const char *context) {
  PyObject *exc = PyObject_CallFunction(error_for, "is", rc, context);
  if (exc != NULL) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
  return -1;
}

int lease_raise_code(PyObject *cls, int code, const char *fmt, ...) {
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
  lease_api = (const pa_api_t *)PyLong_AsVoidPtr(addr);
  Py_DECREF(addr);
  if (lease_api == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ImportError, "poolalloc._ffi gave no API table");
    return -1;
  }
  if (lease_api->version != PA_API_VERSION) {
    PyErr_Format(PyExc_ImportError, "poolalloc._native API version %u, _lease expects %u",
                 lease_api->version, PA_API_VERSION);
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
      {&LeaseExc_LeaseReleased, "LeaseReleasedError"}, {&LeaseExc_DoubleRelease, "DoubleReleaseError"},
      {&LeaseExc_Foreign, "ForeignBufferError"},       {&LeaseExc_Busy, "LeaseBusyError"},
      {&LeaseExc_Closed, "PoolClosedError"},           {&LeaseExc_Exhausted, "PoolExhausted"},
      {&LeaseExc_Value, "PoolValueError"},             {&LeaseExc_Memory, "PoolMemoryError"},
      {&LeaseExc_Overflow, "PoolOverflowError"},       {&error_for, "error_for"},
  };
  int rc = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && rc == 0; i++) {
    *names[i].slot = PyObject_GetAttrString(errors, names[i].name);
    if (*names[i].slot == NULL) rc = -1;
  }
  Py_DECREF(errors);
  return rc;
}

/* The key to LeasePool(): handed out once, to poolalloc.buffers at its import, so that nothing
 * else can build a lease layer over a raw (possibly bogus) core pool address. */
static PyObject *claim_token(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (token_claimed) {
    PyErr_SetString(PyExc_RuntimeError, "the LeasePool token was claimed already");
    return NULL;
  }
  token_claimed = 1;
  return Py_NewRef(lease_token);
}

static PyMethodDef lease_functions[] = {
    {"_claim_token", claim_token, METH_NOARGS, "Internal: the key to LeasePool (once)."},
    {"window_view", (PyCFunction)(void (*)(void))lease_window_view, METH_FASTCALL,
     "window_view(address, nbytes): a memoryview of those bytes exported by a new Window."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lease_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "poolalloc._lease",
    .m_doc = "Buffer leases over the poolalloc core (internal; use poolalloc.BufferPool).",
    .m_size = -1,
    .m_methods = lease_functions,
};

PyMODINIT_FUNC PyInit__lease(void) {
  if (load_api() < 0 || load_errors() < 0) return NULL;
  if (lease_buffer_type_ready() < 0 || PyType_Ready(&LeasePoolType) < 0 ||
      PyType_Ready(&LeasePinType) < 0 || lease_objlease_type_ready() < 0 ||
      PyType_Ready(&LeaseViewBaseType) < 0 || PyType_Ready(&LeaseWindowType) < 0)
    return NULL;
  static int token_target;
  lease_token = PyCapsule_New(&token_target, "poolalloc._lease.token", NULL);
  if (lease_token == NULL) return NULL;
  static const pa_lease_capi_t c_api = {PA_LEASE_CAPI_VERSION, lease_window_new_view,
                                        lease_view_swap, &LeaseViewBaseType};
  PyObject *capi = PyCapsule_New((void *)&c_api, PA_LEASE_CAPI_NAME, NULL);
  if (capi == NULL) return NULL;
  PyObject *m = PyModule_Create(&lease_module);
  if (m == NULL) {
    Py_DECREF(capi);
    return NULL;
  }
  if (PyModule_AddObject(m, "_c_api", capi) < 0) {
    Py_DECREF(capi);
    Py_DECREF(m);
    return NULL;
  }
  Py_INCREF(&LeaseBufferType);
  Py_INCREF(&LeasePoolType);
  Py_INCREF(&LeasePinType);
  Py_INCREF(&LeaseObjBaseType);
  Py_INCREF(&LeaseViewBaseType);
  Py_INCREF(&LeaseWindowType);
  if (PyModule_AddObject(m, "Buffer", (PyObject *)&LeaseBufferType) < 0 ||
      PyModule_AddObject(m, "BufferPin", (PyObject *)&LeasePinType) < 0 ||
      PyModule_AddObject(m, "LeasePool", (PyObject *)&LeasePoolType) < 0 ||
      PyModule_AddObject(m, "ObjectLeaseBase", (PyObject *)&LeaseObjBaseType) < 0 ||
      PyModule_AddObject(m, "ViewLeaseBase", (PyObject *)&LeaseViewBaseType) < 0 ||
      PyModule_AddObject(m, "Window", (PyObject *)&LeaseWindowType) < 0 ||
      PyModule_AddIntConstant(m, "API_VERSION", PA_API_VERSION) < 0 ||
      PyModule_AddIntConstant(m, "MAX_REQUEST", (long)PA_MAX_REQUEST) < 0 ||
      PyModule_AddIntConstant(m, "GC_LEAKS_KEPT", LEASE_GC_LEAKS_KEPT) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
