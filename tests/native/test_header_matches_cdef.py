"""The structs the C core shares with Python are written once, in native/include/poolalloc.h.

The cffi cdef takes them from the header at build time; these tests compare, field by field,
the header's text, the compiled ``ffi`` types and the Python snapshot classes, and check that
each entry of the ``pa_api_t`` table has the signature of the function it stands for.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from poolalloc import _ffi
from poolalloc.stats import ClassStats, PoolStats

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "native" / "include" / "poolalloc.h"
SHARED = ("pa_config_t", "pa_stats_t", "pa_class_stats_t", "pa_api_t")

pytestmark = pytest.mark.skipif(not HEADER.exists(), reason="needs the source tree (not an sdist)")


def _header_text() -> str:
    return re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.DOTALL)


def header_fields(name: str) -> list[tuple[str, str]]:
    """``(field, C type)`` of struct ``name`` as the header writes it (function pointers as
    ``ret(*)(args)``), whitespace normalised."""
    match = re.search(r"typedef struct \w+ \{([^}]*)\} " + name + ";", _header_text())
    assert match, f"{name} not in {HEADER}"
    fields = []
    for decl in filter(None, (d.strip() for d in match.group(1).split(";"))):
        pointer = re.fullmatch(r"(.+?)\(\*(\w+)\)\((.*)\)", decl, flags=re.DOTALL)
        if pointer:
            ret, field, args = pointer.groups()
            fields.append((field, f"{ret.strip()}(*)({_norm(args)})"))
        else:
            ctype, field = decl.rsplit(None, 1)
            fields.append((field, _norm(ctype)))
    return fields


def _norm(ctype: str) -> str:
    text = re.sub(r"\s*([*,()])\s*", r"\1", " ".join(ctype.split()))
    text = re.sub(r"\bstruct (\w+)_s\b", r"\1_t", text)  # cffi names the struct, C the typedef
    return re.sub(r"\bunsigned\b(?! int)", "unsigned int", text)


def _unqualified(ctype: str) -> str:
    # cffi's type names carry no const (a qualifier changes no layout)
    return re.sub(r"\bconst\s*", "", ctype)


def compiled_fields(name: str) -> list[tuple[str, str]]:
    ffi = _ffi.ffi
    return [(field, _norm(ffi.getctype(ft.type))) for field, ft in ffi.typeof(name).fields]


@pytest.mark.parametrize("name", SHARED)
def test_compiled_struct_is_the_headers(name: str) -> None:
    header = header_fields(name)
    assert header, name
    assert compiled_fields(name) == [(field, _unqualified(ctype)) for field, ctype in header]


@pytest.mark.parametrize(
    ("snapshot", "struct"), [(PoolStats, "pa_stats_t"), (ClassStats, "pa_class_stats_t")]
)
def test_python_snapshot_has_every_field_in_order(snapshot: type, struct: str) -> None:
    python = [f.name for f in dataclasses.fields(snapshot)]
    assert python == [field for field, _ in header_fields(struct)]


def test_api_table_entries_have_the_functions_signatures() -> None:
    prototypes = {
        name: f"{_norm(ret)}(*)({','.join(_norm(_drop_name(a)) for a in args.split(','))})"
        for ret, name, args in re.findall(
            r"^(\w[\w\s*]*?)\s*\bpa_(\w+)\(([^)]*)\);", _header_text(), flags=re.M
        )
    }
    entries = [(field, ctype) for field, ctype in header_fields("pa_api_t") if field != "version"]
    assert len(entries) >= 7
    for field, ctype in entries:
        assert prototypes[field] == ctype, field  # entry `x` stands for pa_x


def _drop_name(parameter: str) -> str:
    return re.sub(r"\w+\s*$", "", parameter.strip())
