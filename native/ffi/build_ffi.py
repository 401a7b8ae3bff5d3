"""cffi builder of ``poolalloc._native`` (out-of-line API mode), run by setuptools at install.

Every ``native/core/*.c`` (the allocator) and ``native/uring/*.c`` (the io_uring bindings) is
compiled in (sorted), and the cdef is every ``native/ffi/*.cdef.h`` (sorted), so a later part
joins without editing this file.
Paths are relative to this file so that builds from an sdist work too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent  # native/ffi
NATIVE = HERE.parent
#: the C parts compiled into poolalloc._native
PARTS = ("core", "uring")


def _build_flags():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_pa_build_flags", HERE / "build_flags.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rel(path: Path) -> str:
    # setuptools wants source paths relative to the directory it runs in (the project root)
    return os.path.relpath(path)


def _cdef_text() -> str:
    return "\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef.h")))


def _prelude() -> str:
    return "\n".join(p.read_text() for p in sorted(HERE.glob("*.csrc.c")))


flags = _build_flags()
ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "poolalloc._native",
    _prelude(),
    sources=[_rel(p) for part in PARTS for p in sorted((NATIVE / part).glob("*.c"))],
    include_dirs=[_rel(NATIVE / "include"), _rel(NATIVE / "core")],
    extra_compile_args=flags.compile_args(),
    extra_link_args=flags.link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
