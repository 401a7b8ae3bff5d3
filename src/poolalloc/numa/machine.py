"""The machine as poolalloc sees it: a sysfs tree, an optional libnuma, an OS layer.

:class:`NumaSystem` bundles the three and answers the questions pools ask (which nodes exist,
which have memory, what ``numa_node=...`` means in C). The process has one system in use: the
real machine, or one installed by :func:`using` (tests, :class:`poolalloc.numa.simulate`).
The public entry points are in :mod:`poolalloc.numa`.

Example:
    >>> system().resolve_node(None) == NUMA_ANY
    True
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from poolalloc import _ffi
from poolalloc.errors import NumaError, PoolValueError
from poolalloc.numa.kernel import Libnuma, LinuxNumaOs, NumaOs
from poolalloc.numa.sysfs import Topology, read_topology, whole_machine

#: Where the kernel publishes the nodes.
DEFAULT_SYSFS_ROOT = "/sys/devices/system/node"
#: The C values of ``numa_node=None`` and ``numa_node='local'`` (PA_NUMA_ANY, PA_NUMA_LOCAL).
NUMA_ANY = _ffi.NUMA_ANY
NUMA_LOCAL = _ffi.NUMA_LOCAL

#: The forms ``numa_node`` takes (constructors type it ``int | str | None`` and check strings).
NumaSpec = int | Literal["local"] | None
Source = Literal["libnuma", "sysfs", "none"]


@dataclass(frozen=True)
class NumaInfo:
    """Which source describes the nodes, how many there are, and a sentence for humans.

    Example:
        >>> NumaInfo("sysfs", 1, (0,), None, "one node").is_single_node
        True
    """

    source: Source
    node_count: int
    nodes_with_memory: tuple[int, ...]
    libnuma: str | None
    note: str

    @property
    def is_single_node(self) -> bool:
        """True when every pool's memory is on node 0 whatever ``numa_node`` says."""
        return self.node_count == 1


class NumaSystem:
    """One view of the machine: a sysfs tree, an optional libnuma, and an OS layer.

    The default system reads the real machine. Tests build one over a fake sysfs tree (and a
    fake OS layer) and install it with :func:`using`.

    Example:
        >>> s = NumaSystem(libnuma_name=None)
        >>> s.info().source in ("sysfs", "none")
        True
    """

    def __init__(
        self,
        sysfs_root: str | os.PathLike[str] = DEFAULT_SYSFS_ROOT,
        *,
        libnuma_name: str | None = "libnuma.so.1",
        os_layer: NumaOs | None = None,
    ) -> None:
        self.sysfs_root = os.fspath(sysfs_root)
        self._libnuma_name = libnuma_name
        self._os = os_layer
        self._cached: Topology | None = None
        self._lock = threading.Lock()

    def topology(self, *, refresh: bool = False) -> Topology:
        """The nodes as read now (``refresh``) or at first use (memory figures then age)."""
        with self._lock:
            if refresh or self._cached is None:
                self._cached = read_topology(self.sysfs_root) or whole_machine()
            return self._cached

    def info(self) -> NumaInfo:
        """Which source is in use: libnuma (agreeing with sysfs), sysfs alone, or none."""
        topo = self.topology()
        lib = Libnuma.load(self._libnuma_name) if self._libnuma_name else None
        problem = lib.disagreement(topo) if lib is not None and topo.source == "sysfs" else None
        source: Source = "libnuma" if lib is not None and problem is None else "sysfs"
        if topo.source == "none":
            source = "none"
        return NumaInfo(
            source,
            len(topo.nodes),
            topo.nodes_with_memory,
            lib.name if lib is not None else None,
            _describe(topo, source, problem),
        )

    def validate_node(self, node: int) -> int:
        """Return ``node`` if a pool may bind to it.

        :raises NumaError: the node does not exist or has no memory; the message names the
            nodes that do.
        :raises PoolValueError: ``node`` is not an int (bool included).
        """
        if isinstance(node, bool) or not isinstance(node, int):
            raise PoolValueError(f"a NUMA node is an int, not {type(node).__name__}", errno.EINVAL)
        topo = self.topology()
        if node in topo.has_memory:
            return node
        if node >= 0 and node not in topo.node_ids and self._core_has_its_own_topology(topo):
            return node  # the C core decides, and refuses with ENODEV (NumaError) if it must
        usable = list(topo.nodes_with_memory)
        why = "has no memory" if node in topo.node_ids else "does not exist"
        raise NumaError(f"NUMA node {node} {why}; nodes with memory: {usable}", errno.ENODEV)

    def _core_has_its_own_topology(self, topo: Topology) -> bool:
        """True when ``pa_numa_fake`` gave the C core nodes that this (real) view lacks.

        Tests of the core fake the C side alone; the core is the authority on its nodes then.
        A system over another tree is a deliberate Python-side view and is never overruled.
        """
        if os.fspath(self.sysfs_root) != DEFAULT_SYSFS_ROOT:
            return False
        return _ffi.numa_node_count() != max(topo.node_ids) + 1

    def resolve_node(self, spec: int | str | None) -> int:
        """The C value for ``numa_node=spec``: NUMA_ANY, NUMA_LOCAL or a checked node number.

        :raises NumaError: a node number that does not exist or has no memory.
        :raises PoolValueError: a string other than ``'local'``, or another type.
        """
        if spec is None:
            return NUMA_ANY
        if isinstance(spec, str):
            if spec == "local":
                return NUMA_LOCAL
            raise PoolValueError(
                f"numa_node must be None, 'local' or a node number, not {spec!r}", errno.EINVAL
            )
        return self.validate_node(spec)

    def current_node(self) -> int:
        """The node of the CPU the calling thread runs on now (may change at any moment)."""
        if self._os is None:
            self._os = LinuxNumaOs()
        return self._os.getcpu()[1]


def _describe(topo: Topology, source: Source, problem: str | None) -> str:
    where = {
        "libnuma": "libnuma (agrees with sysfs)",
        "sysfs": "sysfs",
        "none": "no NUMA information (no sysfs node tree, no libnuma)",
    }[source]
    if problem is not None:
        where += f"; libnuma ignored: {problem}"
    if len(topo.nodes) == 1:
        return (
            f"one NUMA node (node {topo.nodes[0].id}): all memory is local, pools run on it "
            f"whatever numa_node says; source: {where}"
        )
    return f"{len(topo.nodes)} NUMA nodes {list(topo.node_ids)}; source: {where}"


class _InUse:
    """The process-wide choice of system (a holder, so no ``global`` statement is needed)."""

    lock = threading.Lock()
    default: NumaSystem | None = None
    replacement: NumaSystem | None = None


def system() -> NumaSystem:
    """The system in use: the real machine, or the one installed by :func:`using`.

    Example:
        >>> system().sysfs_root
        '/sys/devices/system/node'
    """
    with _InUse.lock:
        if _InUse.replacement is not None:
            return _InUse.replacement
        if _InUse.default is None:
            _InUse.default = NumaSystem()
        return _InUse.default


@contextmanager
def using(replacement: NumaSystem) -> Iterator[NumaSystem]:
    """Make ``replacement`` the system of the whole process inside the ``with`` block (tests).

    Example:
        >>> with using(NumaSystem("/nonexistent", libnuma_name=None)):
        ...     system().info().source
        'none'
    """
    with _InUse.lock:
        previous, _InUse.replacement = _InUse.replacement, replacement
    try:
        yield replacement
    finally:
        with _InUse.lock:
            _InUse.replacement = previous
