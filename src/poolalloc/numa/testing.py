"""A fake NUMA machine for tests: one sysfs tree drives both the Python side and the C core.

The Python side reads the tree through a :class:`~poolalloc.numa.NumaSystem`; the C core is
told the same topology with ``pa_numa_fake`` (after which it records ``mbind`` instead of
calling it, and ``pa_numa_page_node`` answers from that record). ``set_cpu`` moves the calling
thread to a CPU on both sides at once (``pa_numa_fake_set_cpu`` is per thread in C; the Python
side keeps a thread-local too), so a test can walk a thread across nodes and watch its
allocations follow.

Only one simulation may be active at a time, and no pool made before it may be used inside it
(the core's fake topology is process-wide).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for n in (0, 1):
    ...         (Path(d) / f"node{n}").mkdir()
    ...         _ = (Path(d) / f"node{n}" / "cpulist").write_text(f"{2 * n}-{2 * n + 1}")
    ...         _ = (Path(d) / f"node{n}" / "meminfo").write_text(f"Node {n} MemTotal: 1024 kB")
    ...     with Simulation(d) as sim:
    ...         sim.set_cpu(3)
    ...         sim.current_node()
    1
"""

from __future__ import annotations

import os
import threading
from contextlib import ExitStack
from typing import ClassVar

from poolalloc import _ffi
from poolalloc._closing import ExcInfo
from poolalloc.errors import PoolValueError
from poolalloc.numa.machine import NumaSystem, using
from poolalloc.numa.sysfs import Topology, read_topology

_active_lock = threading.Lock()


class SimulatedNumaOs:
    """getcpu answered from a per-thread fake CPU and the simulated topology.

    Example:
        >>> from poolalloc.numa.sysfs import NumaNode
        >>> t = Topology((NumaNode(0, (0,), 1, 1, (10,)),), frozenset({0}), "sysfs")
        >>> SimulatedNumaOs(t).getcpu()
        (0, 0)
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._local = threading.local()

    def set_cpu(self, cpu: int) -> None:
        """Make the calling thread appear to run on ``cpu`` (Python side only)."""
        self._local.cpu = cpu

    def getcpu(self) -> tuple[int, int]:
        """(cpu, node) of the calling thread; a thread never moved is on CPU 0."""
        cpu: int = getattr(self._local, "cpu", 0)
        node = self._topology.node_of_cpu(cpu)
        return cpu, 0 if node is None else node


class Simulation:
    """Context manager: the process sees the machine described by the sysfs tree at ``root``.

    Inside the block, :func:`poolalloc.numa.available`, :func:`~poolalloc.numa.resolve_node`
    and :func:`~poolalloc.numa.current_node` answer for the fake machine, and pools bind (on
    paper) to its nodes. libnuma is not consulted: it would describe the real machine.

    :raises PoolValueError: the tree is missing, its nodes are not numbered 0..n-1, a CPU is on
        no node, or another simulation is active.

    Example:
        >>> Simulation.active is None  # none outside a ``with`` block (see ``simulate``)
        True
    """

    #: The simulation in force, if any (the core's fake topology is process-wide).
    active: ClassVar[Simulation | None] = None

    def __init__(self, root: str | os.PathLike[str]) -> None:
        topology = read_topology(root)
        if topology is None:
            raise PoolValueError(f"no NUMA node tree at {os.fspath(root)!r}")
        if topology.node_ids != tuple(range(len(topology.nodes))):
            raise PoolValueError(f"fake nodes must be numbered 0..n-1, not {topology.node_ids}")
        if -1 in topology.cpu_to_node():
            raise PoolValueError("every fake CPU from 0 up must belong to a node")
        self.topology = topology
        self.os = SimulatedNumaOs(topology)
        self._root = os.fspath(root)
        self._swap = ExitStack()

    def __enter__(self) -> Simulation:
        with _active_lock:
            if Simulation.active is not None:
                raise PoolValueError("a NUMA simulation is already active")
            _ffi.numa_fake(len(self.topology.nodes), list(self.topology.cpu_to_node()))
            Simulation.active = self
        self._swap.enter_context(using(NumaSystem(self._root, libnuma_name=None, os_layer=self.os)))
        return self

    def __exit__(self, *exc_info: *ExcInfo) -> None:
        try:
            self._swap.close()
        finally:
            with _active_lock:
                _ffi.numa_fake_set_cpu(0)  # the C fake CPU is per thread and outlives the fake
                _ffi.numa_fake(0, [])
                Simulation.active = None

    def set_cpu(self, cpu: int) -> None:
        """Make the calling thread appear to run on ``cpu``, for the C core and for Python.

        :raises PoolValueError: ``cpu`` is not a CPU of the fake machine.
        """
        _ffi.numa_fake_set_cpu(cpu)
        self.os.set_cpu(cpu)

    def current_node(self) -> int:
        """The fake node of the calling thread."""
        return self.os.getcpu()[1]
