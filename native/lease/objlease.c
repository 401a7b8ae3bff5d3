/* SPDX-License-Identifier: MIT */
/* --- objlease.c: the C base of poolalloc.objects.Lease (its fields and its `with` methods) -------
 *
 * ObjectPool is pure Python, and so is its lease, except for what `with pool.acquire() as obj:`
 * costs. CPython 3.11-3.13 call __enter__ and __exit__ from C: two Python methods there cost two
 * interpreter entries, about twice an explicit `lease.release()` called from bytecode. This base
 * type holds the lease's two fields (`_pool`, `_slot`, read and written by the Python subclass as
 * ordinary slots) and gives it __enter__ and __exit__ written in C, bound without allocating
 * and called by vectorcall (withbind.c, as Buffer's).
 *
 * __enter__ returns `_slot.obj`; __exit__ marks the lease released (`_slot = None`) and hands the
 * slot to `_pool._put(slot, lease)`, the same call `Lease.release()` makes, so the return logic
 * (stash, reset, lifetime, waiters) stays in one place, in Python.
 *
 * A lease collected unreleased: its C finalizer (no Python call, so a released lease is freed
 * for a few ns, not a Python __del__'s ~70) drops the slot, whose own finalizer gives the object
 * back (poolalloc/objects/lease.py, Slot). In a cycle through the object (obj.lease = lease)
 * the object's return brings the lease back to life; it is released (`_slot` None) by then.
 * The GIL serialises everything here.
 * ------------------------------------------------------------------------------------------- */
#include "lease.h"

#include <stddef.h>
#include <structmember.h>

typedef struct {
  PyObject_HEAD
  PyObject *pool; /* the ObjectPool; NULL until the pool fills it in */
  PyObject *slot; /* the Slot while leased; None once released (NULL until filled in) */
} ObjLeaseObject;

static PyObject *str_obj, *str_put;

static int objlease_traverse(ObjLeaseObject *l, visitproc visit, void *arg) {
  Py_VISIT(l->pool);
  Py_VISIT(l->slot);
  return 0;
}

static int objlease_clear(ObjLeaseObject *l) {
  Py_CLEAR(l->pool);
  Py_CLEAR(l->slot);
  return 0;
}

static void objlease_dealloc(ObjLeaseObject *l) {
  PyObject_GC_UnTrack(l);
  objlease_clear(l);
  Py_TYPE(l)->tp_free((PyObject *)l);
}

static void objlease_finalize(ObjLeaseObject *l) {
  PyObject *slot = l->slot;
  if (slot == NULL || slot == Py_None) return;
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  l->slot = Py_NewRef(Py_None);
  Py_DECREF(slot); /* the last reference, unless the slot is in a cycle too: then the GC's */
  if (PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)l);
  PyErr_Restore(et, ev, tb);
}

/* Two lookups cached per type and type version, as the interpreter's inline caches do for
 * bytecode: `slot.obj` (a __slots__ member: read at its offset) and `type(pool)._put` (a
 * function, called with the pool first). A type changed since gets a new version tag, and a
 * tag is never reused, so a stale entry is never taken; anything else takes the generic path.
 * `_put` is private: an instance attribute of that name on a pool is not looked at. */
static PyTypeObject *obj_type, *put_type; /* compared only, never dereferenced when stale */
static unsigned int obj_version, put_version;
static Py_ssize_t obj_offset;
static PyObject *put_func;

/* A type's version tag is valid when nonzero (3.13 dropped the flag; 3.11-3.12 clear both) */
static int version_valid(PyTypeObject *t) {
#if PY_VERSION_HEX < 0x030D0000
  if (!PyType_HasFeature(t, Py_TPFLAGS_VALID_VERSION_TAG)) return 0;
#endif
  return t->tp_version_tag != 0;
}

static int cache_valid(PyTypeObject *t, PyTypeObject *cached, unsigned int version) {
  return t == cached && version_valid(t) && t->tp_version_tag == version;
}

static PyObject *slot_obj(PyObject *slot) {
  PyTypeObject *t = Py_TYPE(slot);
  if (cache_valid(t, obj_type, obj_version)) {
    PyObject *v = *(PyObject **)((char *)slot + obj_offset);
    if (v != NULL) return Py_NewRef(v);
  } else {
    PyObject *d = _PyType_Lookup(t, str_obj); /* borrowed; assigns the version tag */
    if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
        ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX && version_valid(t)) {
      obj_type = t;
      obj_version = t->tp_version_tag;
      obj_offset = ((PyMemberDescrObject *)d)->d_member->offset;
    }
  }
  return PyObject_GetAttr(slot, str_obj); /* raises what Python would */
}

static PyObject *pool_put(PyObject *pool, PyObject *slot, PyObject *lease) {
  PyObject *args[] = {NULL, pool, slot, lease}; /* args[0]: room the callee may use */
  size_t nargsf = 3 | PY_VECTORCALL_ARGUMENTS_OFFSET;
  PyTypeObject *t = Py_TYPE(pool);
  if (!cache_valid(t, put_type, put_version)) {
    PyObject *f = _PyType_Lookup(t, str_put);
    if (f == NULL || !PyFunction_Check(f) || !version_valid(t))
      return PyObject_VectorcallMethod(str_put, args + 1, nargsf, NULL);
    Py_XSETREF(put_func, Py_NewRef(f));
    put_type = t;
    put_version = t->tp_version_tag;
  }
  PyObject *f = Py_NewRef(put_func); /* a nested `with` may replace the cached one meanwhile */
  PyObject *res = PyObject_Vectorcall(f, args + 1, nargsf, NULL);
  Py_DECREF(f);
  return res;
}

static PyObject *objlease_enter(PyObject *self) {
  ObjLeaseObject *l = (ObjLeaseObject *)self;
  PyObject *slot = l->slot;
  if (slot == NULL || slot == Py_None) {
    PyErr_SetString(LeaseExc_LeaseReleased, "lease already released");
    return NULL;
  }
  return slot_obj(slot);
}

static PyObject *objlease_exit(PyObject *self) {
  ObjLeaseObject *l = (ObjLeaseObject *)self;
  PyObject *slot = l->slot;
  if (slot == NULL || slot == Py_None) {
    PyErr_SetString(LeaseExc_DoubleRelease, "lease already released");
    return NULL;
  }
  if (l->pool == NULL) {
    PyErr_SetString(PyExc_TypeError, "lease has no pool");
    return NULL;
  }
  l->slot = Py_NewRef(Py_None); /* released before the pool sees it, as in Lease.release() */
  PyObject *pool = Py_NewRef(l->pool); /* `_put` may run code that deletes `lease._pool` */
  PyObject *res = pool_put(pool, slot, (PyObject *)l);
  Py_DECREF(pool);
  Py_DECREF(slot); /* the reference the lease held */
  if (res == NULL) return NULL;
  Py_DECREF(res);
  Py_RETURN_NONE; /* never swallows the exception of the block */
}

// ---- __enter__ / __exit__: bound without allocating (withbind.c) ----

PyTypeObject LeaseObjBaseType;

static LeaseWithDescr objwith_enter_descr = LEASE_WITH_DESCR(
    &LeaseObjBaseType, "Lease", "poolalloc.objects.Lease", "an ObjectPool lease", "__enter__", 0,
    objlease_enter);
static LeaseWithDescr objwith_exit_descr = LEASE_WITH_DESCR(
    &LeaseObjBaseType, "Lease", "poolalloc.objects.Lease", "an ObjectPool lease", "__exit__", 3,
    objlease_exit);

// T_OBJECT_EX: the interpreter specialises attribute access to these (LOAD_ATTR_SLOT)
static PyMemberDef objlease_members[] = {
    {"_pool", T_OBJECT_EX, offsetof(ObjLeaseObject, pool), 0, "the pool that leased it"},
    {"_slot", T_OBJECT_EX, offsetof(ObjLeaseObject, slot), 0, "the Slot, None once released"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject LeaseObjBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolalloc._lease.ObjectLeaseBase",
    .tp_basicsize = sizeof(ObjLeaseObject),
    .tp_dealloc = (destructor)objlease_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)objlease_traverse,
    .tp_clear = (inquiry)objlease_clear,
    .tp_finalize = (destructor)objlease_finalize,
    .tp_members = objlease_members,
    .tp_new = PyType_GenericNew,
    .tp_doc = "Internal: fields and `with` methods of poolalloc.objects.Lease (its subclass).",
};

int lease_objlease_type_ready(void) {
  str_obj = PyUnicode_InternFromString("obj");
  str_put = PyUnicode_InternFromString("_put");
  if (str_obj == NULL || str_put == NULL) return -1;
  return lease_with_type_ready(&LeaseObjBaseType, &objwith_enter_descr, &objwith_exit_descr);
}
