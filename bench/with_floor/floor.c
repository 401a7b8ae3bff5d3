/* The cheapest `with` CPython 3.11-3.13 allow, for bench/with_floor/run.py.
 *
 * Each `with` looks __enter__ and __exit__ up on the type and binds both to the object, calls
 * the first with no argument and the second with three. Three context managers that do no work
 * at all, so that what a `with` costs over one method call is the interpreter's part alone:
 *   Cached: the type's __enter__/__exit__ are descriptors that hand back builtin methods made
 *           once per object (an INCREF per binding, no allocation; the bound __exit__ is a
 *           builtin, so the interpreter's call of it can be specialised);
 *   Vector: the same with a small vectorcall type of our own instead of builtins;
 *   Plain:  ordinary methods (a new builtin method object per binding).
 * `release()` is the one-method-call baseline. Cached's bound methods hold their owner (a cycle
 * the owner's reference count never undoes) and Vector's a borrowed reference to it: fine for a
 * benchmark that keeps its objects for the life of the process, not for a library (a lease
 * would never be freed, or could die while its bound __exit__ is still on the interpreter's
 * stack).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

static PyObject *noop(PyObject *self, PyObject *unused) {
  (void)self;
  (void)unused;
  Py_RETURN_NONE;
}

static PyObject *enter(PyObject *self, PyObject *unused) {
  (void)unused;
  Py_INCREF(self);
  return self;
}

static PyObject *exit_(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  (void)self;
  (void)args;
  (void)nargs;
  Py_RETURN_NONE;
}

static PyMethodDef enter_def = {"__enter__", enter, METH_NOARGS, NULL};
static PyMethodDef exit_def = {"__exit__", (PyCFunction)(void (*)(void))exit_, METH_FASTCALL, NULL};
static PyMethodDef release_only[] = {{"release", noop, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};

/* one object with its two bound methods, made at construction */
typedef struct {
  PyObject_HEAD
  PyObject *bound[2]; /* __enter__, __exit__ */
} Owner;

typedef struct {
  PyObject_HEAD
  int which;
} Descr;

static PyObject *descr_get(Descr *d, PyObject *obj, PyObject *type) {
  (void)type;
  PyObject *r = obj == NULL ? (PyObject *)d : ((Owner *)obj)->bound[d->which];
  Py_INCREF(r);
  return r;
}

static PyTypeObject DescrType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor.Descr",
    .tp_basicsize = sizeof(Descr),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_descr_get = (descrgetfunc)descr_get,
};

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *owner; /* borrowed */
  int which;
} Bound;

static PyObject *bound_call(Bound *b, PyObject *const *args, size_t nargsf, PyObject *kw) {
  (void)args;
  (void)nargsf;
  (void)kw;
  if (b->which) Py_RETURN_NONE;
  Py_INCREF(b->owner);
  return b->owner;
}

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor.Bound",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Bound, vectorcall),
};

static PyObject *builtin_bound(Owner *o, int which) {
  return PyCFunction_New(which ? &exit_def : &enter_def, (PyObject *)o);
}

static PyObject *vector_bound(Owner *o, int which) {
  Bound *b = PyObject_New(Bound, &BoundType);
  if (b == NULL) return NULL;
  b->vectorcall = (vectorcallfunc)bound_call;
  b->owner = (PyObject *)o;
  b->which = which;
  return (PyObject *)b;
}

/* an Owner of type t with its two bound methods made by `bind` */
static PyObject *owner_new(PyTypeObject *t, PyObject *(*bind)(Owner *, int)) {
  Owner *o = (Owner *)t->tp_alloc(t, 0);
  if (o == NULL) return NULL;
  for (int i = 0; i < 2; i++) {
    o->bound[i] = bind(o, i);
    if (o->bound[i] == NULL) return NULL; /* a benchmark: the half-made object leaks */
  }
  return (PyObject *)o;
}

static PyObject *cached_new(PyTypeObject *t, PyObject *a, PyObject *k) {
  (void)a;
  (void)k;
  return owner_new(t, builtin_bound);
}

static PyObject *vector_new(PyTypeObject *t, PyObject *a, PyObject *k) {
  (void)a;
  (void)k;
  return owner_new(t, vector_bound);
}

static PyTypeObject CachedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor.Cached",
    .tp_basicsize = sizeof(Owner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = cached_new,
    .tp_methods = release_only,
};

static PyTypeObject VectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor.Vector",
    .tp_basicsize = sizeof(Owner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = vector_new,
    .tp_methods = release_only,
};

static PyMethodDef plain_methods[] = {
    {"release", noop, METH_NOARGS, NULL},
    {"__enter__", enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))exit_, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlainType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor.Plain",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = plain_methods,
};

static Descr descrs[2] = {{PyObject_HEAD_INIT(&DescrType) 0}, {PyObject_HEAD_INIT(&DescrType) 1}};

static int add_with(PyTypeObject *t) {
  if (PyDict_SetItemString(t->tp_dict, "__enter__", (PyObject *)&descrs[0]) < 0 ||
      PyDict_SetItemString(t->tp_dict, "__exit__", (PyObject *)&descrs[1]) < 0)
    return -1;
  PyType_Modified(t);
  return 0;
}

static struct PyModuleDef floor_module = {PyModuleDef_HEAD_INIT, "floor", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_floor(void) {
  PyTypeObject *types[] = {&DescrType, &BoundType, &CachedType, &VectorType, &PlainType};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++)
    if (PyType_Ready(types[i]) < 0) return NULL;
  if (add_with(&CachedType) < 0 || add_with(&VectorType) < 0) return NULL;
  PyObject *m = PyModule_Create(&floor_module);
  if (m == NULL) return NULL;
  if (PyModule_AddObjectRef(m, "Cached", (PyObject *)&CachedType) < 0 ||
      PyModule_AddObjectRef(m, "Vector", (PyObject *)&VectorType) < 0 ||
      PyModule_AddObjectRef(m, "Plain", (PyObject *)&PlainType) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
