/* SPDX-License-Identifier: MIT */
/* --- fastpath.h: poolalloc.net.uring._fastpath, the io_uring engine's per-request paths in C ---
 *
 * A CPython-API extension beside the lease type. It links nothing of ours: the ring's C
 * functions it calls are reached through addresses that Python hands it (from the cffi module),
 * the lease type's through its capsule (pa_lease_capi.h), and the Python objects it reads
 * through their slots' member descriptors.
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_FASTPATH_H
#define PA_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pa_lease_capi.h"

/* walk.c: complete(cqes, targets, handle_one, failed, rest, now), receive(ring, bid, nbytes,
 * flags, protocol), setup_ring(...) and setup(...) */
PyObject *fastpath_complete(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fastpath_receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fastpath_setup_ring(PyObject *module, PyObject *args);
PyObject *fastpath_setup(PyObject *module, PyObject *args);
int fastpath_walk_init(void);

/* csender.c: CopySender, the call that hands small bytes to the ring's copied sends */
extern PyTypeObject CopySenderType;

#endif /* PA_FASTPATH_H */
