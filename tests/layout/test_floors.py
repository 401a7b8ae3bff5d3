"""The package's floors (``docs/design.md`` ## Layers): every import goes down, never up.

Each module's imports are read from its source (``ast``, no execution), function-level ones
included, and each must name a module on the same floor or a lower one. ``import poolalloc``
must not load the NUMA simulation, the network layer or the CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import poolalloc

PACKAGE = Path(poolalloc.__file__).parent

#: module prefix -> floor (the longest matching prefix wins)
FLOORS = {
    "poolalloc._native": 0,
    "poolalloc._lease": 0,
    "poolalloc._ffi": 1,
    "poolalloc.errors": 1,
    "poolalloc._closing": 1,
    "poolalloc._moved": 1,
    "poolalloc.settings": 1,
    "poolalloc._version": 1,
    "poolalloc._ints": 1,
    "poolalloc": 2,
    "poolalloc.net": 3,
    "poolalloc.net.epoll": 4,
    "poolalloc.net.uring": 4,
    "poolalloc.net.http": 5,
    "poolalloc.net.asgi": 5,
    "poolalloc.cli": 6,
    "poolalloc.__main__": 6,  # `python -m poolalloc` is the command line
}


def floor_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise AssertionError(f"{module} is on no floor")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from poolalloc.net import http`` imports the submodule poolalloc.net.http
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "poolalloc"]


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_imports_only_go_down(path: Path) -> None:
    here = module_name(path)
    mine = floor_of(here)
    upward = [
        f"line {line}: {name} (floor {floor_of(name)})"
        for line, name in imports_of(path)
        if floor_of(name) > mine and not name.startswith(here + ".")
    ]
    assert not upward, f"{here} (floor {mine}) imports upward: {upward}"


def loaded_by(statement: str) -> list[str]:
    """The poolalloc modules that ``statement`` loads in a fresh interpreter."""
    code = f"{statement}; import sys; print(*(m for m in sys.modules if m.startswith('poolalloc')))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_import_poolalloc_loads_no_simulation_network_or_cli() -> None:
    loaded = loaded_by("import poolalloc")
    assert "poolalloc.slab" in loaded  # the check sees what it should
    unwanted = [
        m
        for m in loaded
        if m.startswith(("poolalloc.numa.testing", "poolalloc.net", "poolalloc.cli"))
    ]
    assert not unwanted, unwanted


def test_import_poolalloc_net_loads_neither_engine_nor_http() -> None:
    loaded = loaded_by("import poolalloc.net")
    assert "poolalloc.net.sockets" in loaded
    above = [
        m
        for m in loaded
        if m.startswith(("poolalloc.net.epoll", "poolalloc.net.uring", "poolalloc.net.http"))
    ]
    assert not above, above
