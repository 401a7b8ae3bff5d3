"""The typed stub of poolalloc._native names exactly the functions of the cdef files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import poolalloc

ROOT = Path(__file__).resolve().parents[2]
CDEF_DIR = ROOT / "native" / "ffi"
STUB = Path(poolalloc.__file__).with_name("_native.pyi")

FUNC = re.compile(r"^\s*[\w\s\*]+?\b(pa_\w+)\s*\(", re.MULTILINE)


def _cdef_functions() -> set[str]:
    names: set[str] = set()
    for path in sorted(CDEF_DIR.glob("*.cdef.h")):
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.DOTALL)
        names |= {m.group(1) for m in FUNC.finditer(text) if "(*" not in m.group(0)}
    return names


def _stub_functions() -> set[str]:
    tree = ast.parse(STUB.read_text())
    lib = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Lib")
    return {n.name for n in lib.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.skipif(not CDEF_DIR.exists(), reason="needs the source tree (not an sdist install)")
def test_stub_and_cdef_agree() -> None:
    # other parts (uring) add their own cdef files and stub entries; the core's must all be there
    cdef, stub = _cdef_functions(), _stub_functions()
    core = {n for n in cdef if not n.startswith("pa_uring")}
    assert core <= stub, f"missing from _native.pyi: {sorted(core - stub)}"
    assert {n for n in stub if not n.startswith("pa_uring")} <= cdef
    assert "pa_alloc" in cdef
