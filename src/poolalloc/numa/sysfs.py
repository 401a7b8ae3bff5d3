"""The NUMA topology as the kernel publishes it under ``/sys/devices/system/node``.

Why sysfs and not libnuma: libnuma reads these same files, the files exist on every Linux kernel
built with NUMA support, and a test can write a fake tree in a temporary directory to describe a
2- or 4-node machine. libnuma, when present, only cross-checks the result (see
:mod:`poolalloc.numa.kernel`).

Files read, per node directory ``nodeN``: ``cpulist`` ("0-3,8-11"), ``meminfo`` ("Node 0
MemTotal: 4417740 kB"), ``distance`` (one figure per online node, in node order). At the root:
``online`` and ``has_memory`` (node lists); a missing list file is derived from the node
directories instead, as older kernels lack ``has_memory``.

Example:
    >>> parse_list("0-2,5")
    (0, 1, 2, 5)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_NODE_DIR = re.compile(r"node(\d+)")
_MEMINFO_LINE = re.compile(r"Node\s+\d+\s+(\w+):\s+(\d+)\s*kB")


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs, its memory, and its distance to every node of the topology.

    ``distances[i]`` is the distance to ``Topology.node_ids[i]`` (10 means local, by the ACPI
    SLIT convention; 20 or more is typically another socket).

    Example:
        >>> n = NumaNode(0, (0, 1), 4 << 30, 1 << 30, (10,))
        >>> n.has_memory, n.cpus
        (True, (0, 1))
    """

    id: int
    cpus: tuple[int, ...]
    memory_total: int
    memory_free: int
    distances: tuple[int, ...]

    @property
    def has_memory(self) -> bool:
        """Whether pools may bind to this node (it has memory of its own)."""
        return self.memory_total > 0


@dataclass(frozen=True)
class Topology:
    """The machine's NUMA nodes, where they came from, and which of them have memory.

    ``source`` is ``"sysfs"`` when read from the kernel's tree, ``"none"`` when the tree is
    missing and one node 0 holding every CPU stands for the whole machine.

    Example:
        >>> t = Topology((NumaNode(0, (0, 1), 1 << 30, 1 << 29, (10,)),), frozenset({0}), "sysfs")
        >>> t.node_ids, t.node_of_cpu(1), t.distance(0, 0)
        ((0,), 0, 10)
    """

    nodes: tuple[NumaNode, ...]
    has_memory: frozenset[int]
    source: str

    @property
    def node_ids(self) -> tuple[int, ...]:
        """The node numbers, ascending (they need not be contiguous)."""
        return tuple(n.id for n in self.nodes)

    @property
    def nodes_with_memory(self) -> tuple[int, ...]:
        """The node numbers a pool may bind to, ascending."""
        return tuple(sorted(self.has_memory))

    def node(self, node_id: int) -> NumaNode:
        """The node numbered ``node_id``; :raises KeyError: when there is none."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def node_of_cpu(self, cpu: int) -> int | None:
        """The node holding ``cpu``, or None for a CPU that no node lists (offline)."""
        for n in self.nodes:
            if cpu in n.cpus:
                return n.id
        return None

    def distance(self, a: int, b: int) -> int:
        """The distance from node ``a`` to node ``b``; :raises KeyError: for unknown nodes."""
        row = self.node(a).distances
        index = self.node_ids.index(b) if b in self.node_ids else -1
        if index < 0 or index >= len(row):
            raise KeyError(b)
        return row[index]

    def cpu_to_node(self) -> tuple[int, ...]:
        """Node of each CPU 0..max, -1 for a CPU that no node lists (the core's fake table)."""
        top = max((c for n in self.nodes for c in n.cpus), default=-1)
        return tuple(
            -1 if (node := self.node_of_cpu(cpu)) is None else node for cpu in range(top + 1)
        )


def parse_list(text: str) -> tuple[int, ...]:
    """Parse a kernel list such as ``"0-3,8,10-11"`` (empty text is the empty list).

    Example:
        >>> parse_list("") , parse_list("7")
        ((), (7,))
    """
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return tuple(out)


def format_list(values: tuple[int, ...] | list[int]) -> str:
    """The kernel's list notation for ``values``, the inverse of :func:`parse_list`.

    Example:
        >>> format_list([0, 1, 2, 3, 8, 10, 11])
        '0-3,8,10-11'
    """
    parts: list[str] = []
    ordered = sorted(set(values))
    start = 0
    for i, value in enumerate(ordered):
        if i + 1 == len(ordered) or ordered[i + 1] != value + 1:
            low = ordered[start]
            parts.append(str(low) if low == value else f"{low}-{value}")
            start = i + 1
    return ",".join(parts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _meminfo(node_dir: Path) -> tuple[int, int]:
    fields = {
        m[1]: int(m[2]) * 1024 for m in _MEMINFO_LINE.finditer(_read(node_dir / "meminfo") or "")
    }
    return fields.get("MemTotal", 0), fields.get("MemFree", 0)


def _read_node(root: Path, node_id: int) -> NumaNode:
    node_dir = root / f"node{node_id}"
    total, free = _meminfo(node_dir)
    distances = tuple(int(x) for x in (_read(node_dir / "distance") or "").split())
    return NumaNode(node_id, parse_list(_read(node_dir / "cpulist") or ""), total, free, distances)


def _node_dirs(root: Path) -> list[int]:
    found = (_NODE_DIR.fullmatch(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m[1]) for m in found if m)


def read_topology(root: str | os.PathLike[str]) -> Topology | None:
    """Read the tree at ``root``; None when it does not exist or lists no node.

    Example:
        >>> read_topology("/nonexistent/node/tree") is None
        True
    """
    base = Path(root)
    if not base.is_dir():
        return None
    online = _read(base / "online")
    ids = list(parse_list(online)) if online is not None else _node_dirs(base)
    nodes = tuple(_read_node(base, i) for i in ids if (base / f"node{i}").is_dir())
    if not nodes:
        return None
    listed = _read(base / "has_memory")
    with_memory = (
        parse_list(listed) if listed is not None else [n.id for n in nodes if n.has_memory]
    )
    present = {n.id for n in nodes}
    return Topology(nodes, frozenset(i for i in with_memory if i in present), "sysfs")


def whole_machine() -> Topology:
    """One node 0 holding every CPU and all memory: the machine without a NUMA tree.

    Example:
        >>> whole_machine().node_ids
        (0,)
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    cpus = tuple(range(os.cpu_count() or 1))
    return Topology((NumaNode(0, cpus, total, free, (10,)),), frozenset({0}), "none")
