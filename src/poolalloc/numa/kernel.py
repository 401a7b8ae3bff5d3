"""The operating-system side of NUMA for Python: libnuma when it loads, raw calls otherwise.

Facts this module is built on:

- libnuma (``libnuma.so.1``) is optional. It is opened at run time with ``ctypes`` so that
  building and importing poolalloc never need it; a missing or broken library is simply absent.
  ``numa_available()`` returns -1 on a kernel without NUMA support, and then no other libnuma
  function may be called.
- libnuma describes the same kernel state as sysfs. We use it as an independent cross-check of
  the sysfs reading (node count, node of each CPU); when both agree, ``available()`` reports
  libnuma as the source.
- The CPU and node a thread runs on come from ``getcpu`` (glibc's wrapper since 2.29, the raw
  syscall otherwise). The answer may be stale the moment it returns (the scheduler may move the
  thread), which is acceptable for placement: a stale answer costs one remote access.

The layer is a small class so that tests can hand :mod:`poolalloc.numa` a fake one.

Example:
    >>> lib = Libnuma.load("libnuma-that-does-not-exist.so.0")
    >>> lib is None
    True
"""

from __future__ import annotations

import ctypes
import platform
from typing import Protocol

from poolalloc.numa.sysfs import Topology

#: getcpu(2) numbers for the raw-syscall fallback (glibc older than 2.29).
_SYS_GETCPU = {"x86_64": 309, "aarch64": 168, "ppc64le": 302, "s390x": 311, "riscv64": 168}


class NumaOs(Protocol):
    """What :mod:`poolalloc.numa` asks of the operating system; tests pass a fake.

    Example:
        >>> class OnCpu3:
        ...     def getcpu(self) -> tuple[int, int]:
        ...         return 3, 1
        >>> isinstance(OnCpu3().getcpu(), tuple)
        True
    """

    def getcpu(self) -> tuple[int, int]:
        """The (cpu, node) the calling thread runs on now."""
        ...


class LinuxNumaOs:
    """getcpu through glibc, or through the raw syscall when glibc lacks the wrapper.

    Example:
        >>> cpu, node = LinuxNumaOs().getcpu()
        >>> cpu >= 0 and node >= 0
        True
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._wrapper = getattr(libc, "getcpu", None)
        self._syscall = libc.syscall
        self._number = _SYS_GETCPU.get(platform.machine())

    def getcpu(self) -> tuple[int, int]:
        """The (cpu, node) of the calling thread; :raises OSError: when the kernel refuses."""
        cpu, node = ctypes.c_uint(), ctypes.c_uint()
        refs = (ctypes.byref(cpu), ctypes.byref(node))
        if self._wrapper is not None:
            rc = int(self._wrapper(*refs))
        elif self._number is not None:
            rc = int(self._syscall(ctypes.c_long(self._number), *refs, None))
        else:
            raise OSError(38, f"getcpu: no syscall number known for {platform.machine()}")
        if rc != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"getcpu failed (errno {code})")
        return cpu.value, node.value


class Libnuma:
    """The few libnuma functions poolalloc uses, bound from a library opened at run time.

    Example:
        >>> lib = Libnuma.load()
        >>> lib is None or lib.max_node() >= 0
        True
    """

    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self._lib = lib
        self.name = name
        for fn in ("numa_available", "numa_max_node", "numa_node_of_cpu"):
            getattr(lib, fn).restype = ctypes.c_int
            getattr(lib, fn).argtypes = [ctypes.c_int] if fn == "numa_node_of_cpu" else []

    @classmethod
    def load(cls, name: str = "libnuma.so.1") -> Libnuma | None:
        """Open ``name``; None when it is missing, lacks a symbol, or the kernel has no NUMA."""
        try:
            lib = cls(ctypes.CDLL(name), name)
        except (OSError, AttributeError):
            return None
        return lib if lib.available() else None

    def available(self) -> bool:
        """libnuma's ``numa_available() >= 0``: the kernel supports the NUMA calls."""
        return int(self._lib.numa_available()) >= 0

    def max_node(self) -> int:
        """libnuma's ``numa_max_node()``: the highest node number."""
        return int(self._lib.numa_max_node())

    def node_of_cpu(self, cpu: int) -> int:
        """libnuma's ``numa_node_of_cpu(cpu)``: -1 for a CPU it does not know."""
        return int(self._lib.numa_node_of_cpu(cpu))

    def disagreement(self, topology: Topology) -> str | None:
        """Compare with a sysfs reading; None when they agree, else what differs.

        Example:
            >>> from poolalloc.numa.sysfs import read_topology
            >>> lib, topo = Libnuma.load(), read_topology("/sys/devices/system/node")
            >>> lib is None or topo is None or lib.disagreement(topo) is None
            True
        """
        if self.max_node() != max(topology.node_ids):
            return f"libnuma max node {self.max_node()} != sysfs {max(topology.node_ids)}"
        for node in topology.nodes:
            for cpu in node.cpus:
                if (seen := self.node_of_cpu(cpu)) != node.id:
                    return f"libnuma puts cpu {cpu} on node {seen}, sysfs on node {node.id}"
        return None
