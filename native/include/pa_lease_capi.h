/* SPDX-License-Identifier: MIT */
/* --- pa_lease_capi.h: the lease extension's C entry points for other extensions ------------------
 *
 * poolalloc._lease exports this table as the capsule "poolalloc._lease._c_api" so that another
 * extension of the package (the io_uring walk, poolalloc.net.uring._fastpath) can show and take
 * back a receive's bytes with a C call per receive, not a Python method call: the capsule is
 * the one door, as cffi's module is for the core. Functions follow the CPython convention
 * (NULL or -1 with an exception set).
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_LEASE_CAPI_H
#define PA_LEASE_CAPI_H

#include <Python.h>

#define PA_LEASE_CAPI_NAME "poolalloc._lease._c_api"
#define PA_LEASE_CAPI_VERSION 1

typedef struct {
  int version; /* PA_LEASE_CAPI_VERSION */
  /* window_view(address, nbytes) of poolalloc._lease: a new reference */
  PyObject *(*window_view)(void *address, Py_ssize_t nbytes);
  /* lease._swap_view(released) of a ViewLeaseBase (the caller checks the type): a new
   * reference, the old view's Window while its bytes are still viewed, else None */
  PyObject *(*swap_view)(PyObject *lease, PyObject *released);
  /* ViewLeaseBase: the type swap_view takes */
  PyTypeObject *view_lease_type;
} pa_lease_capi_t;

#endif /* PA_LEASE_CAPI_H */
