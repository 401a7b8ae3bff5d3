"""The typed low-level allocator: :class:`SlabPool` hands out :class:`Block` objects.

This is the object the buffer layer stands on. It exposes no raw pointers: a block is read and
written through bounds-checked methods, and its ``address`` is informational only.

Example:
    >>> from poolalloc import SlabPool
    >>> with SlabPool(max_bytes=8 << 20) as pool:
    ...     block = pool.alloc(1000)
    ...     block.write(0, b"hello")
    ...     data = block.read(0, 5)
    ...     block.free()
    >>> data, block.block_size
    (b'hello', 1024)
"""

from __future__ import annotations

import errno
import weakref
from dataclasses import dataclass
from typing import Final

from poolalloc import _ffi, numa, settings
from poolalloc._closing import ClosesOnExit
from poolalloc._ints import integer, shown
from poolalloc._memory import check_holdable
from poolalloc._not_copyable import NotCopyable
from poolalloc.errors import DoubleReleaseError, NumaError, PoolValueError
from poolalloc.stats import ClassStats, PoolStats

#: Every SlabPool alive in this process (tests use it to check that nothing is outstanding).
live_pools: Final[weakref.WeakSet[SlabPool]] = weakref.WeakSet()

NUMA_LOCAL: Final[str] = "local"

#: Requests above this are checked against what the machine can hold (check_holdable)
_CHECKED_FROM = 1 << 30
#: The alignment the core's call takes as it is: ``alloc`` checks any other object (an
#: identity test, the one a call with the default pays).
_DEFAULT_ALIGN: Final = 64


def _numa_value(numa_node: int | str | None) -> int:
    return numa.resolve_node(numa_node)  # checks the node against the topology first


_DEBUG_FLAGS: Final = _ffi.DEBUG_POISON | _ffi.DEBUG_CANARY | _ffi.DEBUG_UNPOOLED


def _debug_value(debug: bool | int) -> int:
    if debug is True:
        return _ffi.DEBUG_POISON | _ffi.DEBUG_CANARY
    if debug is False:
        return 0
    flags = integer(debug, "debug")
    if flags < 0 or flags & ~_DEBUG_FLAGS:
        raise PoolValueError(
            f"debug must be True, False or PA_DEBUG_* flags (at most {_DEBUG_FLAGS}),"
            f" not {shown(flags)}",
            errno.EINVAL,
        )
    return flags


class Block(NotCopyable):
    """One block handed out by a :class:`SlabPool`; free it exactly once.

    Example:
        >>> with SlabPool() as pool:
        ...     b = pool.alloc(10)
        ...     b.write(2, b"ab")
        ...     got = b.read(2, 2)
        ...     b.free()
        >>> got, b.freed
        (b'ab', True)
    """

    __slots__ = ("__weakref__", "_address", "_freed", "_pool", "block_size", "nbytes")
    _not_copyable_why = "it stands for one allocation"

    def __init__(self, pool: SlabPool, address: int, nbytes: int, block_size: int) -> None:
        self._pool = pool
        self._address = address
        self._freed = False
        self.nbytes = nbytes
        self.block_size = block_size

    @property
    def address(self) -> int:
        """The block's address, for display and alignment checks only."""
        return self._address

    @property
    def freed(self) -> bool:
        """True once :meth:`free` ran."""
        return self._freed

    def _span(self, offset: int, n: int) -> int:
        # a float offset became a float address, which the copy truncated. Converted before the
        # check below: an __index__ is Python code, which may free the block. Plain ints in
        # range (the common call) need no call.
        if type(offset) is not int or type(n) is not int or offset < 0 or n < 0:
            offset, n = _ffi._size(offset, "offset"), _ffi._size(n, "n")
        if self._freed:
            raise DoubleReleaseError("block already freed", errno.EALREADY)
        if offset + n > self.nbytes:
            raise PoolValueError(
                f"range [{offset}, {offset + n}) outside the block's {self.nbytes} bytes",
                errno.EINVAL,
            )
        return self._address + offset

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the block at ``offset``.

        :raises PoolValueError: the range leaves the requested size, or ``offset`` is no int.
        :raises DoubleReleaseError: the block was freed.
        """
        # one export of `data`, measured and copied: a second export may be longer than the first
        with memoryview(data) as view, view.cast("B") as flat:
            _ffi.write(self._span(offset, flat.nbytes), flat)

    def read(self, offset: int, n: int) -> bytes:
        """Copy ``n`` bytes out of the block from ``offset``.

        :raises PoolValueError: the range leaves the requested size, or ``offset`` or ``n`` is
            no int.
        :raises DoubleReleaseError: the block was freed.
        """
        return _ffi.read(self._span(offset, n), n)

    def free(self) -> None:
        """Give the block back to its pool.

        :raises DoubleReleaseError: freed twice.
        :raises CorruptionError: debug mode found the canary after the block overwritten (the
            block is freed all the same).
        """
        if self._freed:
            raise DoubleReleaseError("block already freed", errno.EALREADY)
        self._freed = True
        self._pool._forget(self)
        _ffi.free(self._address)

    def __repr__(self) -> str:
        state = "freed" if self._freed else "live"
        return f"<Block {self.nbytes}/{self.block_size} bytes at {self._address:#x} {state}>"


@dataclass(frozen=True)
class CloseReport:
    """What :meth:`SlabPool.close` gave back and what it could not.

    ``caches_reclaimed``: caches of other live threads it emptied; ``caches_busy``: caches whose
    thread stayed inside an allocator call (their blocks come back at that thread's next call
    into the pool or its exit); ``reclaimed_bytes``: bytes taken from those caches;
    ``mapped_bytes``: still mapped after the close; ``in_use_bytes``: of which held by users.

    Example:
        >>> report = SlabPool().close_report()
        >>> report.mapped_bytes, report.caches_busy
        (0, 0)
    """

    caches_reclaimed: int
    caches_busy: int
    reclaimed_bytes: int
    mapped_bytes: int
    in_use_bytes: int


class SlabPool(ClosesOnExit, NotCopyable):
    """A pool of the native slab allocator, with its own capacity, stats and lifetime.

    ``max_bytes`` caps the memory mapped from the OS; ``retain_bytes`` bounds the empty memory
    kept for reuse per thread using the pool (None: 8 MiB; a pool that *n* threads allocate from
    keeps up to *n* times that, *n* at most the CPUs the process may run on, and what a
    thread's exit leaves over the smaller bound goes back at the exit); ``numa_node`` is None,
    a node number or ``"local"``; ``debug`` turns on poison and canaries (True) or takes
    ``PA_DEBUG_*`` flags. ``decay_ms`` (None or 0: off) gives back to the OS the empty slabs,
    retained chunks and idle threads' cached blocks unused for that long, checked on the
    allocator's slow paths and by :meth:`decay`.

    Example:
        >>> pool = SlabPool()
        >>> blocks = [pool.alloc(64) for _ in range(3)]
        >>> pool.stats().in_use_blocks
        3
        >>> for b in blocks:
        ...     b.free()
        >>> pool.close()

    :raises NumaError: the node does not exist.
    :raises PoolValueError: a bad argument.
    """

    _not_copyable_why = "it owns a native pool"

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        retain_bytes: int | None = None,
        numa_node: int | str | None = None,
        debug: bool | int = False,
        decay_ms: int | None = None,
    ) -> None:
        settings.flag("POOLALLOC_DEBUG")  # the core reads it too, and would take 'off' for on
        self._handle = _ffi.pool_create(
            max_bytes or 0, retain_bytes, _numa_value(numa_node), _debug_value(debug), decay_ms
        )
        self._closed = False
        self._destroyed = False
        # strong references: a block dropped without free() is still out, and still listed
        self._live: dict[int, Block] = {}
        live_pools.add(self)

    # ---- blocks ----

    def alloc(self, size: int, alignment: int = _DEFAULT_ALIGN) -> Block:
        """A block of at least ``size`` bytes aligned to ``alignment`` (a power of two <= 4096).

        :raises PoolValueError: size 0 or negative, alignment not a power of two or too large.
        :raises PoolOverflowError: the size does not fit.
        :raises PoolExhausted: ``max_bytes`` reached.
        :raises PoolMemoryError: the OS refused memory, or at once, ``size`` is more than the
            machine's memory and swap (or the process's limit) hold.
        :raises PoolClosedError: the pool is closed.
        :raises CorruptionError: debug mode found a write after free in the block it picked.
        """
        # Two compares on the common path; the type is looked at only above the bound or below
        # 2 (where True and False are). What cannot be compared (a str, None, an array) or is
        # no integer (a float) is left to the core's call, which refuses it by name; an integer
        # of numpy's is an int.
        try:
            odd = True if size > _CHECKED_FROM or size < 2 else False  # noqa: SIM210 (no bool())
        except (TypeError, ValueError):  # ValueError: an array's comparison has no one truth
            odd = False
        if odd:
            # refuses by name what is no int (True and numpy's True_, which the core's call
            # takes as 1 byte, too) or is negative
            n = _ffi._size(size)
            check_holdable(n, f"alloc({shown(n)}): a block of {shown(n)} bytes is")
        # True (which the core's call takes as 1) and an array are refused by name
        if alignment is not _DEFAULT_ALIGN:
            _ffi._size(alignment, "alignment")
        address, usable = _ffi.alloc_sized(self._handle, size, alignment)
        block = Block(self, address, size, usable)
        self._live[address] = block  # one dict operation: atomic, with or without the GIL
        return block

    def _forget(self, block: Block) -> None:
        self._live.pop(block._address, None)

    # ---- the pool ----

    def trim(self) -> int:
        """Give empty slabs and retained chunks back to the OS; returns the bytes released.

        Blocks that other live threads keep cached for this pool keep their slabs mapped: those
        go back at :meth:`decay` (once idle for the decay time), :meth:`close`, or the thread's
        exit. Only the calling thread's cache is emptied here.
        """
        return _ffi.pool_trim(self._handle)

    def decay(self, max_age_ms: int = 0) -> int:
        """Give back what has been idle for the pool's ``decay_ms`` (else ``max_age_ms``).

        Empty slabs, retained chunks, and the caches of threads that made no call into the
        pool since the previous :meth:`decay` at least that long ago. No background thread
        exists: call it from a timer to let an idle pool shrink. Returns the bytes unmapped.

        Example:
            >>> pool = SlabPool()
            >>> pool.alloc(64).free()
            >>> pool.decay() > 0
            True
            >>> pool.close_report().mapped_bytes
            0
        """
        return _ffi.pool_decay(self._handle, max_age_ms)

    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters."""
        return PoolStats.from_mapping(_ffi.pool_stats(self._handle))

    def node_stats(self, node: int) -> PoolStats:
        """The counters of one NUMA node's chunks (see ``pa_pool_node_stats``).

        :raises NumaError: the pool has no chunks set for that node.
        :raises TypeError: ``node`` is no int (True is no node).
        """
        node = integer(node, "node")
        if not 0 <= node < 1 << 31:  # past the C int: no node, not cffi's OverflowError
            raise NumaError(f"node_stats({shown(node)}): no such NUMA node", errno.ENODEV)
        return PoolStats.from_mapping(_ffi.pool_node_stats(self._handle, node))

    def class_stats(self) -> list[ClassStats]:
        """One snapshot per size class, smallest first."""
        return [
            ClassStats.from_mapping(_ffi.pool_class_stats(self._handle, c))
            for c in range(_ffi.class_count())
        ]

    def check(self) -> None:
        """Verify the pool's structures (and, in debug mode, poison and canaries).

        :raises CorruptionError: a write after free or past a block's end was found.
        :raises ForeignBufferError: the structures are inconsistent.
        """
        _ffi.pool_check(self._handle)

    def outstanding(self) -> list[Block]:
        """The blocks of this pool not freed yet (dropped ones included: their memory is out)."""
        return list(self._live.copy().values())

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Refuse new allocations and give free memory back; blocks still out stay valid.

        Also empties the caches that other live threads keep for this pool, unless such a
        thread is inside an allocator call at that moment (no thread is stopped); see
        :meth:`close_report`. Idempotent. The pool's memory returns to the OS when its last
        block is freed.
        """
        self.close_report()

    def close_report(self) -> CloseReport:
        """:meth:`close`, then say what it reclaimed and what stays mapped.

        Example:
            >>> pool = SlabPool()
            >>> block = pool.alloc(100)
            >>> report = pool.close_report()
            >>> report.in_use_bytes, report.mapped_bytes > 0
            (128, True)
            >>> block.free()
            >>> pool.stats().mapped_bytes
            0
        """
        self._closed = True
        return CloseReport(**_ffi.pool_close_report(self._handle))

    def __del__(self) -> None:
        if hasattr(self, "_handle") and not getattr(self, "_destroyed", True):
            self._destroyed = True
            _ffi.pool_destroy(self._handle)


def size_classes() -> list[tuple[int, int]]:
    """Every size class as (block_size, slab_bytes), smallest first.

    Example:
        >>> size_classes()[0]
        (64, 65536)
    """
    return [_ffi.class_info(c) for c in range(_ffi.class_count())]


def size_class_of(size: int, alignment: int = 64) -> int | None:
    """Index into :func:`size_classes` of the class that serves the request; None if huge.

    Example:
        >>> size_classes()[size_class_of(100)][0]
        128
        >>> size_class_of(2 << 20) is None
        True

    :raises PoolValueError: size 0 or a bad alignment.
    """
    return _ffi.size_class(size, alignment)
