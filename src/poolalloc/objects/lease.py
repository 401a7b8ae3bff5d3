"""Leases of an ObjectPool and the two records behind them: a slot per object, a stash per thread.

A :class:`Slot` lives as long as its object and carries its birth time (for ``max_lifetime``).
A :class:`Lease` is new for every acquisition, so a stale reference to an old lease can never
release somebody else's later lease of the same object: it is already marked released and
raises :class:`~poolalloc.errors.DoubleReleaseError`. Leases have ``__slots__`` and no
``__init__`` (the pool fills them), which keeps the acquire path to one C-level allocation.

A lease's fields and its ``__enter__``/``__exit__`` live in a C base
(``poolalloc._lease.ObjectLeaseBase``, native/lease/objlease.c), which makes the ``with`` form
cost about what an explicit ``release()`` does. Its finalizer is C too: a lease collected
unreleased drops its slot, and the slot's finalizer gives the object back (counted in
``gc_returns``); a released lease is freed without a Python call. Only pools that track leaks
hand out :class:`TrackedLease`, whose Python finalizer also logs where the lost lease was
acquired.

Example:
    >>> from poolalloc.objects import ObjectPool
    >>> pool = ObjectPool(list)
    >>> with pool.acquire() as items:
    ...     items.append(1)
    >>> lease = pool.acquire()
    >>> lease.obj, lease.is_released
    ([1], False)
    >>> lease.release(); lease.is_released
    True
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from poolalloc._closing import ExcInfo
from poolalloc._lease import ObjectLeaseBase
from poolalloc._not_copyable import NotCopyable
from poolalloc.errors import DoubleReleaseError, LeaseReleasedError
from poolalloc.objects._finalizing import Returned

__all__ = ["AsyncAcquire", "Lease", "TrackedLease"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Slot(Returned, Generic[T]):
    """One pooled object, when it was made (``time.monotonic()``), and its pool.

    A slot is always somewhere the pool can see (idle list, a stash, a lease, a grant) except for
    the few bytecodes while it moves between two of them. An asynchronous exception landing
    there drops the last reference to it; its finalizer then gives the object back to ``home``
    (counted as a garbage-collected lease when ``out`` says it was leased), so no interrupt
    leaves the pool short. A lease collected unreleased goes the same way: its finalizer drops
    the slot. A disposed slot, and one whose object a finalizer gave back, has ``home = None``.
    """

    __slots__ = ("born", "obj", "out")  # and `home`, of Returned

    def __init__(self, obj: T, born: float, home: weakref.ref[Any] | None = None) -> None:
        self.obj = obj
        self.born = born
        self.home = home
        self.out = False  #: counted as leased (acquires) and not yet as released

    def _return_to(self, pool: Any) -> None:
        pool._slot_lost(self.obj, self.born, self.out)  # in a new slot


class Stash(list[Slot[T]]):
    """A thread's private LIFO of idle slots plus that thread's own counters.

    Only the owning thread appends to it; others may only ``pop()`` (steal), which is one atomic
    list operation. The counters are written by the owner alone, so they need no lock;
    ``ObjectPool.stats()`` sums them.
    """

    __slots__ = ("acquires", "fresh", "owner", "releases")

    # Identity, not list equality: two empty stashes are different stashes.
    __eq__ = object.__eq__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.acquires = 0
        self.fresh = 0  #: acquisitions that built their object
        self.releases = 0
        self.owner = weakref.ref(threading.current_thread())

    def is_orphaned(self) -> bool:
        """True when the owning thread has finished (its slots are anybody's)."""
        thread = self.owner()
        return thread is None or not thread.is_alive()


class LeaseOwner(Protocol[T]):
    """What a lease needs from its pool (ObjectPool implements it)."""

    _plain: bool  # no reset, lifetime or leak tracking: a return is just an append
    _contended: bool
    _stash_cap: int
    _local: threading.local

    def _put(self, slot: Slot[T], lease: Lease[T]) -> None: ...

    def _collected(self, slot: Slot[T], lease_id: int) -> None: ...

    def _spill(self, stash: Stash[T]) -> None: ...


class Lease(ObjectLeaseBase, NotCopyable, Generic[T]):
    """One acquisition of a pooled object: use ``obj``, then ``release()`` (or use ``with``).

    Example:
        >>> from poolalloc.objects import ObjectPool
        >>> pool = ObjectPool(dict)
        >>> lease = pool.acquire()
        >>> lease.obj["k"] = 1
        >>> pool.release(lease)
        >>> lease.release()
        Traceback (most recent call last):
        ...
        poolalloc.errors.DoubleReleaseError: lease already released
    """

    __slots__ = ()  # `_pool` and `_slot` are fields of the C base
    _not_copyable_why = "it stands for one acquisition"
    _pool: LeaseOwner[T]
    _slot: Slot[T] | None

    @property
    def obj(self) -> T:
        """The leased object; raises LeaseReleasedError once the lease is released."""
        slot = self._slot
        if slot is None:
            raise LeaseReleasedError("lease already released")
        return slot.obj

    @property
    def is_released(self) -> bool:
        """True once the object went back to the pool."""
        return self._slot is None

    def release(self) -> None:
        """Give the object back (``reset`` runs); a second call raises DoubleReleaseError."""
        slot = self._slot
        if slot is None:
            raise DoubleReleaseError("lease already released")
        self._slot = None
        self._pool._put(slot, self)

    if TYPE_CHECKING:
        # In C (poolalloc._lease.ObjectLeaseBase): `with` calls them from C, where two Python
        # methods would cost twice an explicit release(); these are their types.
        def __enter__(self) -> T: ...

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
            /,
        ) -> None: ...

    def __repr__(self) -> str:
        state = "released" if self._slot is None else repr(self._slot.obj)
        return f"<Lease {state}>"


class TrackedLease(Lease[T]):
    """A lease of a pool that tracks leaks: collected unreleased, it logs where it was acquired.

    Example:
        >>> from poolalloc.objects import ObjectPool
        >>> pool = ObjectPool(list, track_leaks=True)
        >>> lease = pool.acquire()
        >>> type(lease).__name__, isinstance(lease, Lease)
        ('TrackedLease', True)
        >>> lease.release()
    """

    __slots__ = ()

    def __del__(self) -> None:
        # Collected without release() (dropped, or an interrupt between acquire and `with`):
        # the object goes back, counted in gc_returns, and the acquisition stack is logged.
        try:
            slot = self._slot
        except AttributeError:  # never filled in
            return
        if slot is not None:
            self._slot = None
            self._pool._collected(slot, id(self))


class AsyncAcquire(Coroutine[Any, Any, "Lease[T]"]):
    """``async with pool.acquire_async() as obj`` or ``lease = await pool.acquire_async()``; a
    coroutine too, so ``asyncio.create_task(pool.acquire_async())`` runs it as a task.

    Example:
        >>> import asyncio
        >>> from poolalloc.objects import ObjectPool
        >>> async def demo() -> int:
        ...     pool = ObjectPool(list, max_size=1)
        ...     async with pool.acquire_async(timeout=1.0) as items:
        ...         items.append(7)
        ...     lease = await pool.acquire_async()
        ...     try:
        ...         return lease.obj[0]
        ...     finally:
        ...         lease.release()
        >>> asyncio.run(demo())
        7
    """

    __slots__ = ("_lease", "_start")

    def __init__(self, start: Coroutine[Any, Any, Lease[T]]) -> None:
        self._start = start
        self._lease: Lease[T] | None = None

    def __await__(self) -> Generator[Any, None, Lease[T]]:
        return self._start.__await__()

    # the coroutine protocol (what a task drives), handed to the acquiring coroutine
    def send(self, value: Any, /) -> Any:
        """Resume the acquisition (what an event loop's task calls)."""
        return self._start.send(value)

    def throw(self, *exc: Any) -> Any:
        """Raise ``exc`` inside the acquisition (a task's cancellation, say)."""
        return self._start.throw(*exc)

    def close(self) -> None:
        """Close the acquisition unfinished (nothing was taken then)."""
        self._start.close()

    async def __aenter__(self) -> T:
        lease = await self._start
        self._lease = lease
        return lease.obj

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
