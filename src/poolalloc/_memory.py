"""How much memory a request for blocks can ever have: the machine's memory and swap, a
cgroup's limit, the address space. Chunks are mapped without reserving memory, so a request
over these would be handed out and the process killed when it used it; they are refused at
once instead. Lowest layer: imports nothing from poolalloc but the errors.

Example:
    >>> check_holdable(4096, "a block of 4096 bytes is")
    >>> check_holdable(1 << 60, "a block of 2**60 bytes is")
    Traceback (most recent call last):
    ...
    poolalloc.errors.PoolOverflowError: a block of 2**60 bytes is more than an address space holds
"""

from __future__ import annotations

import errno
import functools
import resource

from poolalloc._lease import MAX_REQUEST
from poolalloc.errors import PoolMemoryError, PoolOverflowError

__all__ = ["ADDRESS_SPACE", "check_holdable", "machine_memory", "memory_limit"]

#: bytes of user address space on 64-bit Linux (47 bits), the core's largest request: no
#: batch of blocks can be larger
ADDRESS_SPACE = MAX_REQUEST


@functools.cache
def machine_memory() -> int:
    """The machine's memory and swap, or the cgroup's memory limit when that is lower:
    what no batch of blocks can be larger than. Read once: neither moves under a process."""
    limit = ADDRESS_SPACE
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        limit = (int(fields["MemTotal"].split()[0]) + int(fields["SwapTotal"].split()[0])) * 1024
    except (OSError, KeyError, ValueError):  # no /proc: the address space bounds it alone
        pass
    for cgroup_limit in _cgroup_limit_files():
        try:
            with open(cgroup_limit, encoding="ascii") as f:
                text = f.read().strip()
            if text != "max":
                limit = min(limit, int(text))
        except (OSError, ValueError):  # not there, or no limit
            pass
    return limit


def _cgroup_limit_files() -> list[str]:
    """The memory-limit files of this process's cgroup: v2 (``memory.max``) and v1
    (``memory.limit_in_bytes``), where ``/proc/self/cgroup`` names them."""
    files = []
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            for line in f:
                _, controllers, path = line.strip().split(":", 2)
                if controllers == "":
                    files.append(f"/sys/fs/cgroup{path}/memory.max")
                elif "memory" in controllers.split(","):
                    files.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    return files


def memory_limit() -> int:
    """The most bytes of blocks this process can hold at once: :func:`machine_memory`, or the
    address-space limit (``RLIMIT_AS``, read each time: a process may lower it) when lower. A
    batch over it can never be had, and finding that out block by block maps and touches
    memory for seconds first."""
    limit = machine_memory()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    return limit


def check_holdable(nbytes: int, what: str) -> None:
    """Refuse at once ``nbytes`` of blocks that no process here can hold: more than an address
    space (PoolOverflowError) or than :func:`memory_limit` (PoolMemoryError). Chunks are
    mapped without reserving memory, so a single such block was handed out and the process
    was killed when it used it; a batch found out block by block, seconds later."""
    if nbytes > ADDRESS_SPACE:
        raise PoolOverflowError(f"{what} more than an address space holds", errno.EOVERFLOW)
    limit = memory_limit()
    if nbytes > limit:
        raise PoolMemoryError(
            f"{what} more than this machine's memory and swap (or this process's memory "
            f"limit, {limit} bytes) can hold",
            errno.ENOMEM,
        )
