/* SPDX-License-Identifier: MIT */
/* --- fastpath.c: the module poolalloc.net.uring._fastpath (see fastpath.h) -------------------- */
#include "fastpath.h"

static PyMethodDef methods[] = {
    {"complete", (PyCFunction)(void (*)(void))fastpath_complete, METH_FASTCALL,
     "complete(cqes, targets, handle_one, failed, rest, now) -> int\n\n"
     "Walk a batch of completions: the common receive in C, the rest through handle_one."},
    {"receive", (PyCFunction)(void (*)(void))fastpath_receive, METH_FASTCALL,
     "receive(ring, bid, nbytes, flags, protocol) -> None\n\n"
     "PoolRing.receive: lend a receive's bytes to protocol.buffer_received and take them back."},
    {"setup_ring", fastpath_setup_ring, METH_VARARGS,
     "setup_ring(released, CQE_F_BUF_MORE, ring_class, lease_class): what a lend needs."},
    {"setup", fastpath_setup, METH_VARARGS,
     "setup(recv_handler, connection_class): what the walk needs besides setup_ring's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "poolalloc.net.uring._fastpath",
    "The io_uring engine's per-request paths in C: the walk of a completion batch (walk.c) "
    "and the copied-send call (csender.c).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
  if (fastpath_walk_init() < 0 || PyType_Ready(&CopySenderType) < 0) return NULL;
  PyObject *m = PyModule_Create(&module_def);
  if (m == NULL) return NULL;
  Py_INCREF(&CopySenderType);
  if (PyModule_AddObject(m, "CopySender", (PyObject *)&CopySenderType) < 0) {
    Py_DECREF(&CopySenderType);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
