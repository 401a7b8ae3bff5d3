"""NUMA placement for pools: the topology, where a thread runs, where pages live.

A pool made with ``numa_node=N`` takes all its memory on node N (the C core binds each chunk
with ``mbind`` before touching it); ``numa_node='local'`` serves each thread from the node of the
CPU it runs on; ``numa_node=None`` (the default) places nothing. This module is the Python side:

- :func:`topology` reads the nodes, their CPUs, memory and distances from sysfs;
- :func:`available` says where that knowledge comes from (libnuma, sysfs or nothing);
- :func:`resolve_node` turns the user's ``numa_node`` into the C value, refusing a node that
  does not exist (or has no memory) with :class:`~poolalloc.errors.NumaError`;
- :func:`page_nodes` reports the node each page of a buffer actually lives on, so that placement
  is verified rather than believed; :func:`verify_placement` and :func:`report` use it;
- :func:`simulate` pretends to be a 2- or 4-node machine, for tests.

A machine with one node (most laptops, most containers) runs everything on node 0: ``0`` and
``'local'`` are accepted, ``available().note`` says so, and nothing is an error.

Floor 2: may import ``poolalloc._ffi`` and ``poolalloc.errors``; never the pools or above.
The package's modules: ``sysfs.py`` (the topology read from sysfs), ``kernel.py`` (the OS side:
libnuma or raw ``mbind``/``get_mempolicy``), ``machine.py`` (the NUMA view in use, real or
simulated) and ``testing.py`` (the simulated 2- or 4-node machine; loaded only by
:func:`simulate`, never by ``import poolalloc``).

Example:
    >>> from poolalloc import numa
    >>> info = numa.available()
    >>> info.source in ("libnuma", "sysfs", "none") and info.node_count >= 1
    True
    >>> numa.resolve_node(None) == numa.NUMA_ANY
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poolalloc import _ffi
from poolalloc.errors import PoolValueError
from poolalloc.numa.machine import (
    DEFAULT_SYSFS_ROOT,
    NUMA_ANY,
    NUMA_LOCAL,
    NumaInfo,
    NumaSpec,
    NumaSystem,
    system,
    using,
)
from poolalloc.numa.sysfs import NumaNode, Topology, format_list, read_topology, whole_machine

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from poolalloc.numa.testing import Simulation

__all__ = [
    "DEFAULT_SYSFS_ROOT",
    "NUMA_ANY",
    "NUMA_LOCAL",
    "NumaInfo",
    "NumaNode",
    "NumaSpec",
    "NumaSystem",
    "PlacementCheck",
    "Topology",
    "available",
    "current_node",
    "page_nodes",
    "report",
    "resolve_node",
    "simulate",
    "system",
    "topology",
    "using",
    "validate_node",
    "verify_placement",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def __getattr__(name: str) -> object:
    # ``numa.Simulation`` stays reachable without loading the fake topology on ``import``.
    if name == "Simulation":
        from poolalloc.numa.testing import Simulation  # noqa: PLC0415

        return Simulation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def topology(sysfs_root: str | os.PathLike[str] | None = None) -> Topology:
    """The nodes, their CPUs, memory (total and free, read now) and distances.

    Read from ``sysfs_root``, or by default from the tree of the system in use (the real
    machine, or the fake one inside :func:`simulate`).

    Example:
        >>> t = topology()
        >>> 0 in t.node_ids and t.distance(t.node_ids[0], t.node_ids[0]) == 10
        True
    """
    root = system().sysfs_root if sysfs_root is None else sysfs_root
    return read_topology(root) or whole_machine()


def available() -> NumaInfo:
    """Which source describes the nodes (libnuma / sysfs / none), how many, and a summary.

    Example:
        >>> available().node_count >= 1
        True
    """
    return system().info()


def current_node() -> int:
    """The node of the CPU the calling thread runs on now (``getcpu``).

    Example:
        >>> current_node() in topology().node_ids
        True
    """
    return system().current_node()


def validate_node(node: int) -> int:
    """Return ``node`` when a pool may bind to it.

    :raises NumaError: it does not exist or has no memory (the message names those that do).

    Example:
        >>> validate_node(0)
        0
    """
    return system().validate_node(node)


def resolve_node(spec: int | str | None) -> int:
    """Turn a pool's ``numa_node`` (None, ``'local'`` or a node) into the C core's value.

    :raises NumaError: a node that does not exist or has no memory.
    :raises PoolValueError: a string other than ``'local'``, or another type.

    Example:
        >>> resolve_node("local") == NUMA_LOCAL, resolve_node(0)
        (True, 0)
    """
    return system().resolve_node(spec)


def page_nodes(memory: Buffer | int, nbytes: int | None = None) -> list[int]:
    """The node each page of ``memory`` lives on now, asked of the kernel page by page.

    ``memory`` is a buffer (a memoryview, bytearray, numpy array...) or an address; ``nbytes``
    defaults to the buffer's length and is required with an address. Query pages after writing
    them: for a page never touched the kernel faults one in to answer. Under :func:`simulate`
    the answer is the node the core recorded for the page's chunk.

    :raises PoolValueError: an address without ``nbytes``, or ``nbytes`` past the buffer.
    :raises OSError: the kernel refused (``EFAULT``: not mapped).

    Example:
        >>> buf = bytearray(3 * 4096)
        >>> set(page_nodes(buf)) <= set(topology().node_ids)
        True
    """
    if isinstance(memory, int):
        if nbytes is None:
            raise PoolValueError("page_nodes(address, nbytes): nbytes is required with an address")
        address, size = memory, nbytes
    else:
        address, length = _buffer_span(memory)
        size = length if nbytes is None else nbytes
        if not 0 <= size <= length:
            raise PoolValueError(f"nbytes {size} is outside the buffer's {length} bytes")
    if size <= 0:
        return []
    first = address - address % _PAGE
    return [_ffi.numa_page_node(page) for page in range(first, address + size, _PAGE)]


def _buffer_span(memory: Buffer) -> tuple[int, int]:
    # Imported here: numpy costs more to import than all of poolalloc, and only this needs it.
    import numpy as np  # noqa: PLC0415

    try:
        view = np.frombuffer(memoryview(memory), dtype=np.uint8)
    except (TypeError, ValueError, BufferError) as exc:
        raise PoolValueError(f"page_nodes needs a contiguous buffer: {exc}") from exc
    return int(view.__array_interface__["data"][0]), int(view.nbytes)


def simulate(sysfs_root: str | os.PathLike[str]) -> Simulation:
    """Pretend, inside a ``with`` block, to be the machine the sysfs tree at ``sysfs_root`` shows.

    For tests of NUMA-aware code on a one-node machine: the C core records ``mbind`` instead of
    calling it, and :meth:`Simulation.set_cpu` moves the calling thread between fake CPUs.

    :raises PoolValueError: the tree is unusable or a simulation is already active.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for n in (0, 1):
        ...         node = pathlib.Path(d, f"node{n}")
        ...         node.mkdir()
        ...         _ = (node / "cpulist").write_text(str(n))
        ...         _ = (node / "meminfo").write_text(f"Node {n} MemTotal: 1024 kB")
        ...     with simulate(d) as machine:
        ...         machine.set_cpu(1)
        ...         available().node_count, current_node()
        (2, 1)
    """
    from poolalloc.numa.testing import Simulation  # noqa: PLC0415 (tests only: loaded on use)

    return Simulation(sysfs_root)


@dataclass(frozen=True)
class PlacementCheck:
    """What :func:`verify_placement` found: pages asked about, pages on the node, and whether
    the pool reported its memory as bound.

    Example:
        >>> PlacementCheck(0, 256, 256, True).verified
        True
    """

    node: int
    pages: int
    pages_on_node: int
    pool_says_bound: bool

    @property
    def verified(self) -> bool:
        """Every page is on the node the pool was bound to."""
        return self.pages > 0 and self.pages_on_node == self.pages


def verify_placement(node: int, nbytes: int = 1 << 20) -> PlacementCheck:
    """Bind a scratch pool to ``node``, write ``nbytes`` and ask the kernel where they landed.

    :raises NumaError: the node does not exist or has no memory.

    Example:
        >>> verify_placement(0).verified
        True
    """
    handle = _ffi.pool_create(numa_node=validate_node(node))
    try:
        address = _ffi.alloc(handle, nbytes, _PAGE)
        try:
            _ffi.write(address, bytes(nbytes))  # first touch, after binding
            placed = page_nodes(address, nbytes)
            bound = _ffi.pool_stats(handle)["numa_bound"] == 1
        finally:
            _ffi.free(address)
    finally:
        _ffi.pool_destroy(handle)
    return PlacementCheck(node, len(placed), placed.count(node), bound)


def report() -> str:
    """Several lines for humans (``poolalloc info``): the source, each node, a placement check.

    Example:
        >>> "NUMA source:" in report()
        True
    """
    info, topo = available(), topology()
    lines = [f"NUMA source: {info.source}; {info.note}"]
    for n in topo.nodes:
        cpus = format_list(n.cpus) or "none"
        lines.append(
            f"  node {n.id}: cpus {cpus}; memory {n.memory_total >> 20} MiB "
            f"({n.memory_free >> 20} MiB free); distances {list(n.distances)}"
        )
    for node in topo.nodes_with_memory:
        check = verify_placement(node)
        state = "bound" if check.pool_says_bound else "UNBOUND (mbind refused)"
        lines.append(
            f"  placement on node {node}: {check.pages_on_node}/{check.pages} pages there, "
            f"pool reports {state}"
        )
    return "\n".join(lines)
