"""ObjectPool[T]: reuse expensive objects, with the behaviour of SQLAlchemy's and psycopg's pools
and a thread-local fast path like Netty's Recycler.

Theory of operation (the long form is ``docs/design.md`` ## ObjectPool):

* Every idle object sits either in the shared LIFO ``_idle`` (guarded by ``_lock``) or in one
  thread's :class:`~poolalloc.objects.lease.Stash`. A thread that acquires and releases in a loop
  pops and appends its own stash and touches no lock, as long as the pool is not *contended*.
* ``_contended`` is true while any waiter is queued or the pool is closed. A release always
  appends to its stash first and reads ``_contended`` second; a new waiter registers (and sets
  ``_contended``) first and steals every stash second. Whichever order the two threads run in,
  the waiter gets the object: none is left in a stash while somebody waits for it.
* Stashes are capped (``stash_size``) and stealable, so objects in idle threads' stashes cannot
  starve a bounded pool; stashes of finished threads are folded back on the next slow path.
* Waiters (threads and asyncio tasks in one FIFO) receive *grants* under the lock: see
  :mod:`poolalloc.objects._waiting`.

Counting equation (checked by ``ObjectPoolStats.is_balanced`` in the tests): every object made
and not disposed is either leased (``in_use = acquires - releases - gc_returns``) or idle. A
lease collected without ``release()`` gives its object back (``gc_returns``), as a Buffer does.

Example:
    >>> pool = ObjectPool(bytearray, reset=lambda b: b.clear(), max_size=2)
    >>> with pool.acquire() as buf:
    ...     buf += b"hello"
    >>> with pool.acquire() as buf:
    ...     len(buf)  # the same object, reset
    0
    >>> s = pool.stats(); (s.created, s.reused, s.is_balanced)
    (1, 1, True)
    >>> pool.close().is_clean
    True
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from time import monotonic
from typing import TypeVar

from poolalloc import _async_backends, leaks
from poolalloc._closing import ClosesOnExit, warn_at_user
from poolalloc._not_copyable import NotCopyable
from poolalloc._waiting import DEFAULT_TIMEOUT, check_timeout
from poolalloc.errors import ForeignLeaseError, PoolClosedError
from poolalloc.objects._store import (
    ObjectStore,
    acquisition_stack,
    check_limits,
    log,
    stash_cap,
)
from poolalloc.objects._waiting import CLOSED, AsyncWaiter, Permit, ThreadWaiter, Waiter
from poolalloc.objects.lease import AsyncAcquire, Lease, Slot, Stash, TrackedLease
from poolalloc.objects.stats import CloseReport, ObjectPoolStats

__all__ = ["AsyncAcquire", "CloseReport", "Lease", "ObjectPool", "ObjectPoolStats"]

T = TypeVar("T")
_TRACK_ENV = "POOLALLOC_LEAKS"
_SECONDS = (float, int)  # exactly these types (not bool) need no call to check a timeout


class ObjectPool(ObjectStore[T], ClosesOnExit, NotCopyable):
    """A pool of objects made by ``factory``; see the module docstring for the design.

    ``reset(obj)`` runs on every return (if it raises, the object is disposed);
    ``validate(obj)`` runs on borrow (false or raising: disposed and replaced); ``dispose(obj)``
    runs once per object that leaves the pool. ``max_size`` bounds objects alive; at the bound,
    acquirers wait in FIFO order up to ``timeout`` seconds (None: ``DEFAULT_TIMEOUT``, 30 s, as
    for BufferPool; ``math.inf``: no limit; 0: not at all) and
    then get :class:`~poolalloc.errors.PoolExhausted`. ``min_idle`` objects are made up front and
    kept by :meth:`trim`; ``max_idle`` caps idle objects kept on return; objects older than
    ``max_lifetime`` seconds are retired on return. ``track_leaks`` (default: on when the leak
    tracking level is not ``off``: ``POOLALLOC_LEAKS``, or ``leaks.set_level()``) records
    where each unreleased lease was acquired.
    ``stash_size`` caps each thread's private, lock-free stash of idle objects (default: a
    quarter of ``max_size`` clamped to 1..8, or 8 when unbounded; 0 disables the stashes).

    Example:
        >>> from poolalloc import PoolExhausted
        >>> with ObjectPool(dict, max_size=1, timeout=0) as pool:
        ...     with pool.acquire() as first:
        ...         try:
        ...             pool.acquire()
        ...         except PoolExhausted:
        ...             print("exhausted")
        exhausted
    """

    _not_copyable_why = "it owns its pooled objects"

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        reset: Callable[[T], object] | None = None,
        validate: Callable[[T], bool] | None = None,
        dispose: Callable[[T], object] | None = None,
        max_size: int | None = None,
        min_idle: int = 0,
        max_idle: int | None = None,
        max_lifetime: float | None = None,
        timeout: float | None = None,
        name: str | None = None,
        track_leaks: bool | None = None,
        stash_size: int | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        for what, hook in (("reset", reset), ("validate", validate), ("dispose", dispose)):
            # else it failed at each use, and that was only logged (the object disposed)
            if hook is not None and not callable(hook):
                raise TypeError(f"{what} must be callable or None, got {hook!r}")
        max_size, min_idle, max_idle, stash_size = check_limits(
            max_size=max_size,
            min_idle=min_idle,
            max_idle=max_idle,
            max_lifetime=max_lifetime,
            stash_size=stash_size,
        )
        default_wait = check_timeout(timeout)  # as BufferPool's: TypeError for no number
        self.name = name
        super().__init__(
            max_size=max_size,
            max_idle=max_idle,
            stash_cap=stash_cap(max_size, max_idle, stash_size),
            dispose=dispose,
        )
        self._factory = factory
        self._reset = reset
        self._validate = validate
        self._min_idle = min_idle
        self._max_lifetime = max_lifetime
        self._timeout = DEFAULT_TIMEOUT if default_wait is None else default_wait
        if track_leaks is None:
            track_leaks = leaks.level() != "off"
        self._track = track_leaks
        # One flag for the hot path: no per-object work on borrow or return.
        self._plain = (
            validate is None and reset is None and max_lifetime is None and not track_leaks
        )
        # id(lease) -> acquisition stack (ids, not leases: a lease must stay collectable)
        self._out: dict[int, str] = {}
        # stacks of collected leases already logged (at most leaks.GC_LEAKS_KEPT)
        self._logged: set[str] = set()
        for _ in range(min_idle):
            self._idle.append(Slot(factory(), monotonic(), self._home))
            self._alive += 1
            self._n["created"] += 1

    # ---- the fast path: no lock unless contended ----

    def acquire(self, timeout: float | None = None) -> Lease[T]:
        """Lease an object: ``with pool.acquire() as obj:`` or ``lease = pool.acquire()``.

        ``timeout`` overrides the pool's default wait when ``max_size`` is reached. It is checked
        on every call, whether the call has to wait or not, as ``BufferPool.acquire`` does.

        :raises PoolExhausted: still at ``max_size`` when the timeout ran out (0: at once).
        :raises PoolClosedError: the pool is closed.
        :raises PoolValueError: ``timeout`` is negative or NaN.
        :raises TypeError: ``timeout`` is not an int, a float or None (a bool is no duration).

        Example:
            >>> pool = ObjectPool(list)
            >>> lease = pool.acquire()
            >>> lease.obj
            []
            >>> lease.release()
        """
        # the hot path pays one compare for the default, a type test and a compare for a float or
        # an int; anything else (a subclass, or what is refused) goes through the one checker
        if timeout is not None and not (type(timeout) in _SECONDS and timeout >= 0.0):
            check_timeout(timeout)
        if not self._contended:
            try:
                stash = self._local.stash
                slot = stash.pop()
            except (AttributeError, IndexError):
                pass
            else:
                if self._plain:
                    stash.acquires += 1
                    slot.out = True
                    lease: Lease[T] = Lease()
                    lease._pool = self
                    lease._slot = slot
                    return lease
                if self._validate is None or self._is_valid(slot):
                    return self._lease_out(slot, stash)
        return self._acquire_slow(timeout)

    def _put(self, slot: Slot[T], lease: Lease[T]) -> None:
        # Called by Lease.release/__exit__ once the lease is marked released.
        try:
            stash = self._local.stash
        except AttributeError:
            stash = self._new_stash()
        stash.releases += 1
        slot.out = False
        if not self._plain:
            if self._track:
                self._out.pop(id(lease), None)
            reset = self._reset
            if reset is not None:
                try:
                    reset(slot.obj)
                except BaseException as exc:
                    self._reset_failed(slot, exc)  # disposes it; re-raises a non-Exception
                    return
            if self._max_lifetime is not None and monotonic() - slot.born > self._max_lifetime:
                self._retire(slot, "retired")
                return
        stash.append(slot)
        if self._contended or len(stash) > self._stash_cap:
            self._spill(stash)

    def release(self, lease: Lease[T]) -> None:
        """Give back a lease handed out by this pool (same as ``lease.release()``).

        Example:
            >>> pool, other = ObjectPool(list), ObjectPool(list)
            >>> pool.release(other.acquire())
            Traceback (most recent call last):
            ...
            poolalloc.errors.ForeignLeaseError: this lease was not handed out by this pool
        """
        if not isinstance(lease, Lease) or lease._pool is not self:
            raise ForeignLeaseError("this lease was not handed out by this pool")
        lease.release()

    def acquire_async(self, timeout: float | None = None) -> AsyncAcquire[T]:
        """``async with pool.acquire_async(timeout=...) as obj:`` (or ``await`` it for a lease).

        Threads and tasks wait in one FIFO; a cancelled or timed-out task never strands an
        object. Use ``timeout`` rather than ``asyncio.wait_for`` around it. ``timeout`` is
        checked as by :meth:`acquire` (when awaited), whether the call has to wait or not.

        Example:
            >>> import asyncio
            >>> async def demo() -> list[int]:
            ...     async with ObjectPool(list).acquire_async() as items:
            ...         return items
            >>> asyncio.run(demo())
            []
        """
        return AsyncAcquire(self._acquire_async(timeout))

    # ---- the slow paths ----

    def _acquire_slow(self, timeout: float | None) -> Lease[T]:
        stash = self._my_stash()
        deadline = self._deadline(timeout)
        while True:
            grant = self._take(deadline, None)
            if isinstance(grant, ThreadWaiter):
                grant = self._wait_thread(grant, deadline)
            lease = self._lease_from_grant(grant, stash)
            if lease is not None:
                return lease

    async def _acquire_async(self, timeout: float | None) -> Lease[T]:
        if _async_backends.not_asyncio():  # trio, or anyio on trio
            got: Lease[T] = await _async_backends.acquire_object(self, timeout)
            return got
        stash = self._my_stash()
        deadline = self._deadline(timeout)  # checks timeout even when the stash serves the call
        if not self._contended:  # the thread's stash first, as in acquire()
            try:
                slot = stash.pop()
            except IndexError:
                pass
            else:
                if self._validate is None or self._is_valid(slot):
                    return self._lease_out(slot, stash)
        loop = asyncio.get_running_loop()
        while True:
            grant = self._take(deadline, loop)
            if isinstance(grant, AsyncWaiter):
                grant = await self._wait_async(grant, deadline)
            # No await from here to the return: a cancellation cannot separate grant and lease.
            lease = self._lease_from_grant(grant, stash)
            if lease is not None:
                return lease

    def _deadline(self, timeout: float | None) -> float | None:
        wait = check_timeout(timeout)
        if wait is None:
            wait = self._timeout
        if wait == math.inf:
            return None  # asked for explicitly: no limit
        return monotonic() + wait

    def _lease_from_grant(self, grant: object, stash: Stash[T]) -> Lease[T] | None:
        if grant is CLOSED:
            raise PoolClosedError(f"{self!r} closed while waiting")
        if isinstance(grant, Permit):
            return self._lease_out(self._create(grant), stash, fresh=True)
        assert isinstance(grant, Slot)
        if self._validate is not None and not self._is_valid(grant):
            return None
        return self._lease_out(grant, stash)

    def _lease_out(self, slot: Slot[T], stash: Stash[T], fresh: bool = False) -> Lease[T]:
        # counted together, with no call between (``reused`` is acquires less fresh ones)
        stash.acquires += 1
        stash.fresh += fresh
        slot.out = True
        lease: Lease[T] = TrackedLease() if self._track else Lease()
        lease._pool = self
        lease._slot = slot
        if self._track:
            self._out[id(lease)] = acquisition_stack()
        return lease

    def _create(self, permit: Permit) -> Slot[T]:
        try:
            slot: Slot[T] = Slot(self._factory(), monotonic())
            with self._lock:
                # One step with no call inside for an asynchronous exception to land on: the
                # permit's count passes to the slot, whose finalizer brings the object back.
                # (Counted before the slot existed, an interrupt between lost the object.)
                permit.home = None
                slot.home = self._home
                self._n["created"] += 1
        except BaseException:
            self._give_back(permit)
            raise
        return slot

    def _is_valid(self, slot: Slot[T]) -> bool:
        assert self._validate is not None
        try:
            ok = bool(self._validate(slot.obj))
        except Exception:
            log.warning("%r: validate raised; object replaced", self, exc_info=True)
            ok = False
        if not ok:
            self._retire(slot, "invalid")
        return ok

    def _forget_lease(self, lease_id: int) -> None:
        stack = self._out.pop(lease_id, None)
        if stack is None or stack in self._logged:
            return  # a leak in a loop logs once, not once a lease (gc_returns counts them all)
        if len(self._logged) >= leaks.GC_LEAKS_KEPT:
            return  # that many places logged already: the rest are counted, as the log said
        self._logged.add(stack)
        log.warning(
            "%r: a lease was garbage-collected without release(); acquired at:\n%s"
            "(leases collected unreleased from here again%s are counted in stats().gc_returns, "
            "not logged)",
            self,
            stack,
            " or from any new place" if len(self._logged) == leaks.GC_LEAKS_KEPT else "",
        )

    def _reset_failed(self, slot: Slot[T], exc: BaseException) -> None:
        """Dispose an object whose reset raised; swallow (and log) only an Exception."""
        self._retire(slot, "reset")
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends
        log.warning("%r: reset raised; object disposed", self, exc_info=exc)

    # ---- management ----

    def stats(self) -> ObjectPoolStats:
        """A snapshot of the counters (exact when no other thread is inside the pool).

        Example:
            >>> pool = ObjectPool(list, min_idle=2)
            >>> s = pool.stats(); (s.created, s.idle, s.in_use, s.is_balanced)
            (2, 2, 0, True)
        """
        self._recheck()
        with self._lock:
            self._fold_orphans()
            n = self._n
            acquires = n["acq"] + sum(s.acquires for s in self._stashes)
            fresh = n["fresh"] + sum(s.fresh for s in self._stashes)
            releases = n["rel"] + sum(s.releases for s in self._stashes)
            return ObjectPoolStats(
                name=self.name,
                max_size=self._max_size,
                created=n["created"],
                reused=acquires - fresh,
                disposed=n["disposed"],
                in_use=acquires - releases - n["gc"],
                idle=self._idle_count(),
                waiting=sum(ref() is not None for ref in self._waiters),
                timeouts=n["timeouts"],
                invalid=n["invalid"],
                reset_failures=n["reset"],
                retired=n["retired"],
                acquires=acquires,
                gc_returns=n["gc"],
            )

    def trim(self) -> int:
        """Dispose idle objects above ``min_idle`` and any past ``max_lifetime``; return the count.

        Example:
            >>> pool = ObjectPool(list, min_idle=1)
            >>> leases = [pool.acquire() for _ in range(3)]
            >>> for lease in leases:
            ...     lease.release()
            >>> pool.trim(), pool.stats().idle
            (2, 1)
        """
        self._recheck()
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._steal_all()
            if self._max_lifetime is not None:
                now = monotonic()
                expired = [s for s in self._idle if now - s.born > self._max_lifetime]
                self._idle = [s for s in self._idle if now - s.born <= self._max_lifetime]
                for slot in expired:
                    self._n["retired"] += 1
                    self._retire_locked(slot, wake, dead)
            excess = max(len(self._idle) - self._min_idle, 0)
            oldest, self._idle = self._idle[:excess], self._idle[excess:]
            for slot in oldest:
                self._retire_locked(slot, wake, dead)
        self._finish(wake, dead)
        return len(dead)

    def close(self) -> CloseReport:
        """Dispose idle objects, refuse new acquires, and report leases still out.

        Objects returned after close are disposed. Closing twice is harmless.

        Example:
            >>> pool = ObjectPool(list)
            >>> lease = pool.acquire()
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     pool.close().outstanding
            1
            >>> lease.release(); pool.stats().disposed
            1
        """
        self._recheck()
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            was_closed = self._closed
            self._closed = self._contended = True
            self._steal_all()
            for slot in self._idle:
                self._retire_locked(slot, wake, dead)
            self._idle.clear()
            while (waiter := self._next_waiter()) is not None:
                self._hand(waiter, CLOSED, wake)
            self._contended = True
            stacks = tuple(self._out.values())
        self._finish(wake, dead)
        s = self.stats()
        if s.in_use and not was_closed:
            # the stacks go in the warning too: `with pool:` drops the report that holds them
            where = "".join(
                f"\n  {count} lease(s) acquired at:\n{text}"
                for text, count in leaks.places(stack.rstrip() for stack in stacks)
            )
            warn_at_user(
                f"{self!r} closed with {s.in_use} object(s) still leased"
                + (where if stacks else f" (set {_TRACK_ENV}=all to see where)"),
                ResourceWarning,
            )
        return CloseReport(outstanding=s.in_use, stacks=stacks)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran.

        Example:
            >>> pool = ObjectPool(list)
            >>> pool.is_closed, pool.close().is_clean, pool.is_closed
            (False, True, True)
        """
        return self._closed

    def __repr__(self) -> str:
        # No lock here: error messages built under the lock use it.
        label = f" {self.name!r}" if self.name else ""
        state = " closed" if self._closed else ""
        return f"<ObjectPool{label} max_size={self._max_size}{state}>"
