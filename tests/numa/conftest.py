"""Fake NUMA machines for the tests: a sysfs node tree written under tmp_path."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FakeTree = Callable[..., Path]


def _cpulist(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def write_tree(
    root: Path,
    nodes: int,
    cpus_per_node: int = 2,
    *,
    memoryless: frozenset[int] = frozenset(),
    node_ids: list[int] | None = None,
    list_files: bool = True,
) -> Path:
    """A sysfs-like tree: node k holds CPUs k*cpus_per_node.., 10 locally and 21 remotely."""
    ids = node_ids if node_ids is not None else list(range(nodes))
    root.mkdir(parents=True, exist_ok=True)
    for k, node in enumerate(ids):
        d = root / f"node{node}"
        d.mkdir()
        cpus = list(range(k * cpus_per_node, (k + 1) * cpus_per_node))
        (d / "cpulist").write_text(_cpulist(cpus) + "\n")
        total = 0 if node in memoryless else (k + 1) * 1024 * 1024
        free = total // 2
        (d / "meminfo").write_text(
            f"Node {node} MemTotal:       {total} kB\n"
            f"Node {node} MemFree:        {free} kB\n"
            f"Node {node} MemUsed:        {total - free} kB\n"
        )
        row = " ".join("10" if other == node else "21" for other in ids)
        (d / "distance").write_text(row + "\n")
    if list_files:
        (root / "online").write_text(_cpulist(ids) + "\n")
        (root / "has_memory").write_text(_cpulist([n for n in ids if n not in memoryless]) + "\n")
    return root


@pytest.fixture
def fake_tree(tmp_path: Path) -> FakeTree:
    """Factory: fake_tree(nodes, cpus_per_node=2, memoryless=..., ...) -> the tree's root."""
    made = itertools.count()

    def make(nodes: int, cpus_per_node: int = 2, **options: Any) -> Path:
        return write_tree(tmp_path / f"node-tree-{next(made)}", nodes, cpus_per_node, **options)

    return make
