"""Build glue: setuptools runs cffi's builder, which compiles the C core into poolalloc._native.

poolalloc._lease (the Buffer lease type) is a small CPython-API extension beside it. It does not
link the core: it calls the core through the pa_api_t table whose address poolalloc._ffi hands it
at import, so the core's globals exist once.
"""

import os
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "native"))
from build_flags import compile_args, link_args  # noqa: E402

lease = Extension(
    "poolalloc._lease",
    sources=[f"native/lease/{name}.c" for name in ("lease", "buffer", "leasepool")],
    depends=["native/lease/lease.h", "native/include/poolalloc.h"],
    include_dirs=["native/include"],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

setup(cffi_modules=["native/build_ffi.py:ffibuilder"], ext_modules=[lease])
