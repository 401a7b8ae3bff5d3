"""Pooled buffers: :class:`BufferPool` (fixed size), :class:`Allocator` (any size), leases.

A lease (:class:`Buffer`) owns one block of pooled memory and exports it through the buffer
protocol, so ``sock.recv_into(buf)``, ``memoryview(buf)`` and ``np.frombuffer(buf)`` work on it
directly. The block goes back to the pool only when the lease is released **and** no memoryview,
slice or numpy array made from it is alive any more; until then it is *parked*.

The hot path (``acquire``, ``buf[i] = v``, ``release``) runs in C (``poolalloc._lease``), with a
stash of ready blocks in front of the core; this module only sets pools up and waits at capacity.

Example:
    >>> from poolalloc import BufferPool
    >>> with BufferPool(4096, capacity=8) as pool:
    ...     with pool.acquire() as buf:
    ...         buf[0] = 7
    ...         view = buf.view
    ...         print(buf.nbytes, view[0], view.format)
    ...         view.release()
    4096 7 B
"""

from __future__ import annotations

import errno
import sys
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from poolalloc import _async_backends, _ffi, _lease, leaks, settings
from poolalloc._closing import warn_at_user
from poolalloc._ints import integer as _integer
from poolalloc._ints import shown as _shown
from poolalloc._lease import Buffer, BufferPin, LeasePool
from poolalloc._memory import ADDRESS_SPACE as _ADDRESS_SPACE
from poolalloc._memory import check_holdable as _check_holdable
from poolalloc._memory import machine_memory as _machine_memory
from poolalloc._not_copyable import NotCopyable
from poolalloc._waiting import (
    DEFAULT_TIMEOUT,
    Waiters,
    batch_exhausted,
    check_timeout,
    retry_for,
)
from poolalloc.errors import PoolExhausted, PoolMemoryError, PoolOverflowError, PoolValueError
from poolalloc.slab import SlabPool
from poolalloc.stats import PoolStats

__all__ = [
    "DEFAULT_TIMEOUT",
    "Allocator",
    "Buffer",
    "BufferPin",
    "BufferPool",
    "CloseReport",
    "LeaseStats",
    "live_lease_layers",
]

# The key to LeasePool(): the lease extension hands it out once, here, so that its internal class
# cannot be built from anywhere else with a raw (possibly bogus) core pool address.
_TOKEN = _lease._claim_token()

#: most blocks kept ready in front of the core (refilled and drained half of it at a time)
STASH_BLOCKS = 64
#: ...and, in an unbounded pool, at most this many bytes of them, so that big buffers do not sit
#: idle by the dozen (a bounded pool may stash up to its capacity: that memory was promised)
STASH_BYTES = 8 << 20
_DEBUG_FLAGS = _ffi.DEBUG_CANARY | _ffi.DEBUG_UNPOOLED
_MAX_ALIGN = _ffi.MAX_ALIGN

# Every lease layer alive, for the test-wide check that nothing is outstanding. Leases hold their
# layer, so a layer with an outstanding lease stays listed even after its pool object is gone.
_LIVE: weakref.WeakSet[LeasePool] = weakref.WeakSet()


def live_lease_layers() -> list[LeasePool]:
    """Every lease layer still alive (the pool, or one of its leases, is still referenced).

    Example:
        >>> all(hasattr(layer, "counters") for layer in live_lease_layers())
        True
    """
    return list(_LIVE)


def forget_lease_layer(layer: LeasePool) -> None:
    """Stop listing ``layer`` in :func:`live_lease_layers` (after its leak was reported).

    Example:
        >>> pool = BufferPool(64)
        >>> forget_lease_layer(pool._leases)
        >>> pool._leases in live_lease_layers()
        False
    """
    _LIVE.discard(layer)


@dataclass(frozen=True)
class LeaseStats:
    """A snapshot of one pool's lease counters (``pool.stats()``).

    ``acquires - releases - gc_returns == live`` and ``outstanding == live + parked`` always
    hold (``gc_returns``: leases collected without ``release()``; their blocks came back).

    Example:
        >>> with BufferPool(64) as pool:
        ...     pool.acquire().release()
        ...     s = pool.stats()
        >>> (s.acquires, s.releases, s.outstanding)
        (1, 1, 0)
    """

    name: str | None
    block_size: int  #: BufferPool: bytes per buffer; Allocator: 0
    capacity: int | None  #: buffers (BufferPool) or bytes (Allocator); None: unbounded
    used: int  #: buffers or bytes counted against the capacity (live + parked)
    peak: int  #: high-water mark of used
    outstanding: int  #: leases whose block is not back yet (live + parked)
    live: int  #: leases handed out and not released
    parked: int  #: released leases whose block waits for its last view to die
    stashed: int  #: ready blocks held in front of the core
    waiters: int
    acquires: int
    releases: int
    gc_returns: int  #: leases garbage-collected without release() (their block came back)
    refills: int  #: batches taken from the core
    drains: int  #: batches given back to the core
    closed: bool
    core: PoolStats  #: the core pool's statistics (``SlabPool.stats()``)


def _env_debug() -> bool:
    return settings.flag("POOLALLOC_DEBUG")


def _stash_for(size: int, capacity: int) -> int:
    if capacity:
        return STASH_BLOCKS  # the C layer keeps used + stashed <= capacity
    return max(2, min(STASH_BLOCKS, STASH_BYTES // max(size, 1)))


def _check_alignment(alignment: int) -> int:
    alignment = _integer(alignment, "alignment")
    if alignment < 1 or alignment & (alignment - 1) or alignment > _MAX_ALIGN:
        raise PoolValueError(
            f"alignment must be a power of two <= {_MAX_ALIGN}, not {alignment}", errno.EINVAL
        )
    return alignment


def _check_capacity(capacity: int | None) -> int:
    if capacity is None:
        return 0
    capacity = _integer(capacity, "capacity")
    if capacity < 1:
        raise PoolValueError(f"capacity must be >= 1 or None, not {_shown(capacity)}", errno.EINVAL)
    if capacity > sys.maxsize:  # the C pool counts in a ssize_t
        raise PoolOverflowError(
            f"capacity must be <= {sys.maxsize}, not {_shown(capacity)}", errno.EOVERFLOW
        )
    return capacity


def _check_decay_ms(decay_ms: int | None) -> int | None:
    if decay_ms is None:
        return None
    decay_ms = _integer(decay_ms, "decay_ms")
    if decay_ms < 0:
        raise PoolValueError(
            f"decay_ms must be >= 0 (0 or None: off), not {decay_ms}", errno.EINVAL
        )
    return decay_ms


class _LeasingPool(NotCopyable):
    """What BufferPool and Allocator share: the core pool, the lease layer, waiting, closing."""

    _not_copyable_why = "it owns a native pool"

    _leases: LeasePool

    def _open(
        self,
        *,
        size: int,
        alignment: int,
        capacity: int,
        fixed: bool,
        numa_node: int | str | None,
        name: str | None,
        debug: bool,
        strict: bool,
        leak_level: str | None,
        timeout: float | None,
        decay_ms: int | None = None,
    ) -> None:
        wait = check_timeout(timeout)
        self._debug = debug or _env_debug()
        self._slab = SlabPool(
            numa_node=numa_node, debug=_DEBUG_FLAGS if self._debug else 0, decay_ms=decay_ms
        )
        # the lease layer calls the core through pa_api_t with this pool's raw address
        address = _ffi.pool_address(self._slab._handle)
        self._waiters = Waiters(DEFAULT_TIMEOUT if wait is None else wait)
        self._leases = LeasePool(
            _TOKEN, address, self._slab, size, alignment, capacity,
            fixed=fixed, strict=strict, stash=0 if self._debug else _stash_for(size, capacity),
            name=name, slow=self._waiters.wait_sync, notify=self._waiters.notify,
            waitq=self._waiters.queue, max_request=min(_machine_memory(), _ADDRESS_SPACE),
        )  # fmt: skip
        self._decay_seen = (-1, -1)  # (acquires, releases) at the previous decay()
        self._leak_level = leak_level or leaks.level()
        mode, every = leaks.mode_of(self._leak_level)
        self._leases.set_tracking(mode, every, leaks.capture)
        _LIVE.add(self._leases)

    def decay(self, max_age_ms: int = 0) -> int:
        """Give back to the OS what has been idle for ``decay_ms`` (else ``max_age_ms``).

        Call it from a timer to let an idle pool shrink (there is no background thread). The
        released buffers a BufferPool keeps ready for the next ``acquire`` go back to the core
        when no buffer was acquired or released since the previous call; the core then unmaps
        what has been unused for the decay time (:meth:`SlabPool.decay`). Returns the bytes
        unmapped. ``BufferPool`` and ``Allocator`` both have it.

        :raises PoolValueError: ``max_age_ms`` is negative or not an int.

        Example:
            >>> import time
            >>> pool = BufferPool(65536, decay_ms=20)
            >>> pool.release_many(pool.acquire_many(64))
            >>> _ = pool.decay(); time.sleep(0.05); _ = pool.decay(); time.sleep(0.05)
            >>> pool.decay() > 0, pool.stats().core.mapped_bytes
            (True, 0)
            >>> _ = pool.close()
        """
        counters = self._leases.counters()
        seen = (counters["acquires"], counters["releases"])
        # as in trim(): what the drain's frees unmap went back during this call too
        before = self._slab.stats().trimmed_bytes
        if seen == self._decay_seen and counters["stashed"]:
            self._leases.drain()
        self._decay_seen = seen
        self._slab.decay(max_age_ms)
        return self._slab.stats().trimmed_bytes - before

    @property
    def name(self) -> str | None:
        """The name given at creation (used in reports).

        Example:
            >>> BufferPool(64, name="rx").name
            'rx'
        """
        return self._leases.name

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran.

        Example:
            >>> pool = BufferPool(64); _ = pool.close(); pool.closed
            True
        """
        return bool(self._leases.closed)

    def release(self, buf: Buffer) -> None:
        """Release ``buf``, checking that it came from this pool (``buf.release()`` does not).

        :raises ForeignBufferError: ``buf`` came from another pool.
        :raises DoubleReleaseError: ``buf`` was already released.

        Example:
            >>> with BufferPool(64) as pool:
            ...     pool.release(pool.acquire())
        """
        self._leases.release(buf)

    def release_many(self, bufs: Iterable[Buffer]) -> None:
        """Release many leases in one call; every one is checked first, so none is released
        when one is foreign, already released or (strict) still viewed.

        :raises ForeignBufferError: one of them came from another pool.
        :raises DoubleReleaseError: one of them was already released.
        :raises LeaseBusyError: strict pool, one of them still has views.

        Example:
            >>> with BufferPool(64) as pool:
            ...     pool.release_many(pool.acquire_many(3))
        """
        self._leases.release_many(bufs)

    def outstanding(self) -> int:
        """Leases whose block has not come back: not released, or released but still viewed.

        Example:
            >>> with BufferPool(64) as pool:
            ...     buf = pool.acquire(); view = buf.view; buf.release()
            ...     pool.outstanding()  # parked until `view` dies
            1
        """
        counters = self._leases.counters()
        return int(counters["live"] + counters["parked"])

    def stats(self) -> LeaseStats:
        """The lease counters and the core pool's statistics.

        Example:
            >>> with BufferPool(64, capacity=4) as pool:
            ...     buf = pool.acquire()
            ...     s = pool.stats()
            ...     buf.release()
            >>> (s.live, s.used, s.capacity, s.core.in_use_blocks >= 1)
            (1, 1, 4, True)
        """
        c = self._leases.counters()
        return LeaseStats(
            name=self.name, block_size=c["block_size"], capacity=c["capacity"] or None,
            used=c["used"], peak=c["peak"], outstanding=c["live"] + c["parked"], live=c["live"],
            parked=c["parked"], stashed=c["stashed"], waiters=c["waiters"],
            acquires=c["acquires"], releases=c["releases"], gc_returns=c["gc_returns"],
            refills=c["refills"], drains=c["drains"], closed=bool(c["closed"]),
            core=self._slab.stats(),
        )  # fmt: skip

    def leak_report(self) -> str:
        """Outstanding and collected-unreleased leases, with their stacks when tracked.

        Example:
            >>> with BufferPool(64, leaks="all") as pool:
            ...     buf = pool.acquire()
            ...     "1 lease(s) outstanding" in pool.leak_report()
            ...     buf.release()
            True
        """
        return leaks.report(self._leases)

    def trim(self) -> int:
        """Give the ready blocks back to the core and free memory to the OS; returns bytes.

        What other live threads' caches in the core hold stays mapped until :meth:`decay`,
        :meth:`close` or their exit (see :meth:`SlabPool.trim`).

        Example:
            >>> with BufferPool(4096) as pool:
            ...     pool.release_many(pool.acquire_many(10))
            ...     released = pool.trim()
            ...     pool.stats().stashed
            0
        """
        # the drain's frees may unmap slabs past the retention bound before the trim runs:
        # those bytes went back too (another thread's unmaps meanwhile are counted with them)
        before = self._slab.stats().trimmed_bytes
        self._leases.drain()
        self._slab.trim()
        return self._slab.stats().trimmed_bytes - before

    def close(self) -> CloseReport:
        """Refuse new leases, wake waiters (they get PoolClosedError), free what is free.

        Returns a :class:`CloseReport` of the leases still out (live, or released but held by a
        view). Those stay valid and return their memory when released. When there are any, a
        warning says so: with leak tracking on, a :class:`~poolalloc.leaks.LeakWarning` naming
        each one and where it was acquired; with it off, a ``ResourceWarning`` (shown under
        ``python -X dev`` or ``-W default``, like an unclosed file's).
        Closing again returns the current report and warns no more.

        Example:
            >>> import warnings
            >>> pool = BufferPool(64)
            >>> buf = pool.acquire()
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     report = pool.close()
            >>> report.outstanding, report.is_clean
            (1, False)
            >>> buf[0] = 1; buf.release()  # still valid after close
        """
        if self._leases.closed:
            return self._report()
        self._leases.close()
        self._waiters.notify_all()
        report = self._report()
        if self._leak_level != "off":  # the LeakWarning names each lease and its stack
            text = leaks.report(self._leases)
            if text:
                warn_at_user(text, leaks.LeakWarning)
        elif not report.is_clean:
            warn_at_user(
                f"{self!r} closed with {report.live} lease(s) live and {report.parked} released"
                " but held by views (leaks='all' shows where they were acquired)",
                ResourceWarning,
            )
        self._slab.close()
        return report

    def _report(self) -> CloseReport:
        c = self._leases.counters()
        stacks = tuple("".join(s.format()) for s in self._leases.tracked.values())
        return CloseReport(live=c["live"], parked=c["parked"], stacks=stacks)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CloseReport:
    """What ``close()`` of a BufferPool or Allocator found still out.

    Example:
        >>> CloseReport(live=0, parked=0, stacks=()).is_clean
        True
    """

    live: int  #: leases not released
    parked: int  #: released leases whose block a view (memoryview, array, pin) still holds
    #: one formatted acquisition stack per tracked live lease (leak tracking on)
    stacks: tuple[str, ...]

    @property
    def outstanding(self) -> int:
        """Leases whose block has not come back (live + parked)."""
        return self.live + self.parked

    @property
    def is_clean(self) -> bool:
        """True when nothing was out at close."""
        return self.outstanding == 0


class BufferPool(_LeasingPool):
    """A pool of fixed-size, aligned buffers handed out as :class:`Buffer` leases.

    :param size: bytes per buffer.
    :param capacity: most buffers out at once (None: unbounded). At capacity ``acquire`` waits
        up to its ``timeout``.
    :param timeout: how long ``acquire()`` waits at capacity when the call gives no timeout:
        ``DEFAULT_TIMEOUT`` (30 s) unless set; ``math.inf`` waits without limit, 0 not at all.
    :param alignment: power of two up to 4096 (blocks of 4 KiB and more are page aligned).
    :param numa_node: NUMA node to place the memory on, "local" (each thread's node) or None.
    :param debug: unpooled mode (one real allocation per acquire, canaries checked on release),
        also on with ``POOLALLOC_DEBUG=1``; memory profilers then see every buffer.
    :param strict: ``release()`` with views alive raises ``LeaseBusyError`` instead of parking.
    :param leaks: leak tracking level (``off``, ``sampled``, ``all``); default from
        :func:`poolalloc.leaks.level`.
    :param decay_ms: give memory idle this many milliseconds back to the OS (None or 0: keep
        it for reuse, the default); checked by the allocator's slow paths and :meth:`decay`,
        which a timer may call (there is no background thread). See ``SlabPool(decay_ms=)``.
    :raises PoolValueError: bad size, capacity, alignment or decay_ms.
    :raises TypeError: a size, capacity, alignment or decay_ms that is not an int.

    Example:
        >>> pool = BufferPool(256, capacity=2)
        >>> a, b = pool.acquire_many(2)
        >>> pool.acquire(timeout=0)
        Traceback (most recent call last):
        ...
        poolalloc.errors.PoolExhausted: acquire(): pool is at its capacity (2), without waiting
        >>> pool.release_many([a, b]); _ = pool.close()
    """

    def __init__(
        self, size: int, *, capacity: int | None = None, alignment: int = 64,
        numa_node: int | str | None = None, name: str | None = None, debug: bool = False,
        strict: bool = False, leaks: str | None = None, timeout: float | None = None,
        decay_ms: int | None = None,
    ) -> None:  # fmt: skip
        size = _integer(size, "size")
        if size < 1:
            raise PoolValueError(f"size must be >= 1, not {_shown(size)}", errno.EINVAL)
        _check_holdable(size, f"BufferPool({_shown(size)}): a block of {_shown(size)} bytes is")
        alignment = _check_alignment(alignment)
        self._capacity = _check_capacity(capacity)
        decay_ms = _check_decay_ms(decay_ms)
        self._open(
            size=size, alignment=alignment, capacity=self._capacity, fixed=True,
            numa_node=numa_node, name=name, debug=debug, strict=strict, leak_level=leaks,
            timeout=timeout, decay_ms=decay_ms,
        )  # fmt: skip
        self.size = size
        # the C method itself: no Python frame on the fast path; it calls the slow path at capacity.
        # Not over a subclass's override, which the instance attribute would hide.
        cls = type(self)
        if cls.acquire is BufferPool.acquire:
            self.acquire = self._leases.acquire  # type: ignore[method-assign]
        if cls.try_acquire is BufferPool.try_acquire:
            self.try_acquire = self._leases.try_acquire  # type: ignore[method-assign]

    def acquire(self, timeout: float | None = None) -> Buffer:
        """Lease one buffer; at capacity wait up to ``timeout`` seconds (None: the pool's
        default, 30 s unless set; ``math.inf``: no limit).

        :raises PoolExhausted: still at capacity when the timeout ran out (0: at once).
        :raises PoolClosedError: the pool is closed.

        Example:
            >>> with BufferPool(1500) as pool, pool.acquire(timeout=1.0) as buf:
            ...     buf.nbytes
            1500
        """
        return self._leases.acquire(timeout)

    def try_acquire(self) -> Buffer | None:
        """Lease one buffer, or return None at once when the pool is at its capacity.

        The non-raising form for event loops: exhaustion is an ordinary outcome there, and
        ``except MemoryError`` around ``acquire(0)`` would also swallow a real out-of-memory.

        :raises PoolClosedError: the pool is closed.

        Example:
            >>> with BufferPool(64, capacity=1) as pool:
            ...     buf = pool.try_acquire()
            ...     pool.try_acquire() is None
            ...     buf.release()
            True
        """
        return self._leases.try_acquire()

    def acquire_many(self, n: int, timeout: float | None = None) -> list[Buffer]:
        """Lease ``n`` buffers at once (all or none), in one C call when the capacity allows.

        :raises PoolValueError: ``n`` is negative or more than the capacity.
        :raises PoolOverflowError: ``n`` blocks would be more bytes than an address space holds.
        :raises PoolMemoryError: ``n`` blocks are more bytes than this machine's memory and
            swap (or the address-space limit) hold, or the list of ``n`` leases cannot be had.
        :raises PoolExhausted: not all ``n`` could be had before the timeout; the ones that
            could went back first, and the message counts what is out after that.

        Example:
            >>> with BufferPool(64, capacity=8) as pool:
            ...     bufs = pool.acquire_many(8)
            ...     len({b.address for b in bufs})
            ...     pool.release_many(bufs)
            8
        """
        n = _integer(n, "n")
        wait = self._waiters.timeout_of(check_timeout(timeout))
        if n < 0:
            raise PoolValueError(f"acquire_many(): n must be >= 0, not {_shown(n)}", errno.EINVAL)
        if self._capacity and n > self._capacity:
            raise PoolValueError(f"acquire_many({_shown(n)}): more than the capacity", errno.EINVAL)
        _check_holdable(
            n * self.size, f"acquire_many({_shown(n)}): {_shown(n)} blocks of {self.size} bytes are"
        )
        try:
            bufs: list[Buffer] | None = self._leases.acquire_many(n)
        except MemoryError as exc:
            if isinstance(exc, PoolMemoryError):
                raise
            raise PoolMemoryError(
                f"acquire_many({n}): no memory for the list of leases", errno.ENOMEM
            ) from exc
        if bufs is not None:
            return bufs
        got: list[Buffer] = []
        deadline = time.monotonic() + wait
        try:
            for _ in range(n):
                got.append(self._leases.acquire(max(0.0, deadline - time.monotonic())))
        except PoolExhausted:
            self._leases.release_many(got)
            # the error of the last acquire counted the batch's own leases as live
            raise batch_exhausted(self._leases, n, len(got), wait) from None
        except BaseException:
            self._leases.release_many(got)
            raise
        return got

    async def acquire_async(self, timeout: float | None = None) -> Buffer:
        """Lease one buffer from asyncio code; waiting does not block the loop.

        Cancellation-safe: a cancelled or timed-out waiter never holds a buffer.

        :raises PoolExhausted: still at capacity when the timeout ran out.
        :raises PoolClosedError: the pool is (or got) closed.

        Example:
            >>> import asyncio
            >>> async def main() -> int:
            ...     with BufferPool(64, capacity=1) as pool:
            ...         async_buf = await pool.acquire_async(timeout=1.0)
            ...         with async_buf:
            ...             return async_buf.nbytes
            >>> asyncio.run(main())
            64
        """
        wait = check_timeout(timeout)
        if _async_backends.not_asyncio():  # trio, or anyio on trio
            return await _async_backends.wait_lease(
                self._waiters, self._leases, wait, self._leases.try_acquire
            )
        return await self._waiters.wait_async(self._leases, wait, self._leases.try_acquire)

    def __repr__(self) -> str:
        cap = self._capacity or "unbounded"
        return f"<BufferPool size={self.size} capacity={cap} out={self.outstanding()}>"


class Allocator(_LeasingPool):
    """Leases of any size, served by the core's size classes, with a capacity in bytes.

    Each lease counts its block's real size (the size class, not the request) against the
    capacity, so ``capacity`` bounds the memory held by leases. ``decay_ms`` and :meth:`decay`
    work as for :class:`BufferPool`.

    Example:
        >>> with Allocator(capacity=1 << 20) as alloc:
        ...     buf = alloc.alloc(1000)
        ...     print(buf.nbytes, buf.address % 64)
        ...     buf.release()
        1000 0
    """

    def __init__(
        self, *, capacity: int | None = None, numa_node: int | str | None = None,
        debug: bool = False, name: str | None = None, strict: bool = False,
        leaks: str | None = None, timeout: float | None = None, decay_ms: int | None = None,
    ) -> None:  # fmt: skip
        self._capacity = _check_capacity(capacity)
        decay_ms = _check_decay_ms(decay_ms)
        self._open(
            size=0, alignment=64, capacity=self._capacity, fixed=False, numa_node=numa_node,
            name=name, debug=debug, strict=strict, leak_level=leaks, timeout=timeout,
            decay_ms=decay_ms,
        )  # fmt: skip
        if type(self).alloc is Allocator.alloc:  # a subclass's override stays in force
            self.alloc = self._leases.alloc  # type: ignore[method-assign]

    def alloc(self, nbytes: int, alignment: int = 64, *, timeout: float | None = None) -> Buffer:
        """Lease ``nbytes`` bytes aligned to ``alignment``; at capacity wait like ``acquire``.

        :raises PoolValueError: ``nbytes`` < 1, a bad alignment, or a request whose block (its
            size class) is larger than the whole capacity: it could never be served.
        :raises PoolExhausted: the capacity stayed too small until the timeout ran out.

        Example:
            >>> with Allocator() as alloc, alloc.alloc(10_000, 4096) as buf:
            ...     buf.address % 4096
            0
        """
        return self._leases.alloc(nbytes, alignment, timeout=timeout)

    async def alloc_async(
        self, nbytes: int, alignment: int = 64, timeout: float | None = None
    ) -> Buffer:
        """:meth:`alloc` for asyncio code; cancellation-safe like ``BufferPool.acquire_async``.

        Example:
            >>> import asyncio
            >>> async def main() -> int:
            ...     with Allocator(capacity=1 << 16) as alloc:
            ...         with await alloc.alloc_async(1000) as buf:
            ...             return buf.nbytes
            >>> asyncio.run(main())
            1000
        """
        nbytes = _integer(nbytes, "nbytes")  # numpy's integers too, as alloc() takes them
        alignment = _check_alignment(alignment)
        wait = check_timeout(timeout)
        lease = self._leases.try_alloc(nbytes, alignment)  # a request that never fits raises
        if lease is not None:
            return lease
        retry = retry_for(self._leases, nbytes, alignment)
        if _async_backends.not_asyncio():  # trio, or anyio on trio
            return await _async_backends.wait_lease(self._waiters, self._leases, wait, retry)
        return await self._waiters.wait_async(self._leases, wait, retry)

    def __repr__(self) -> str:
        cap = self._capacity or "unbounded"
        return f"<Allocator capacity={cap} out={self.outstanding()}>"
