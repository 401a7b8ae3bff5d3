"""cffi builder of ``poolalloc._native`` (out-of-line API mode), run by setuptools at install.

Every ``native/core/*.c`` (the allocator) and ``native/uring/*.c`` (the io_uring bindings) is
compiled in (sorted), and the cdef is every ``native/ffi/*.cdef.h`` (sorted), so a later part
joins without editing this file.
Paths are relative to this file so that builds from an sdist work too.
"""

from __future__ import annotations

import importlib.util
import os
import re
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


HEADER_TYPES = re.compile(r"/\* @header-types ([\w ]+)\n.*?\*/", re.DOTALL)


def header_structs(header: Path) -> dict[str, str]:
    """Every ``typedef struct ... { ... } name;`` of ``header``, comments removed, by name."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.DOTALL)
    found = re.finditer(r"typedef struct \w+ \{[^}]*\} (\w+);", text)
    return {m.group(1): m.group(0) for m in found}


def _with_header_types(cdef: str) -> str:
    # A cdef marker names structs the public header defines: they are copied from there at build
    # time, so a field is written once and the cdef can never disagree with the compiled layout.
    structs = header_structs(NATIVE / "include" / "poolalloc.h")

    def fill(match: re.Match[str]) -> str:
        return "\n\n".join(structs[name] for name in match.group(1).split())

    return HEADER_TYPES.sub(fill, cdef)


def _cdef_text() -> str:
    return _with_header_types("\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef.h"))))


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
