"""ObjectPool[T]: reuse expensive objects, with SQLAlchemy/psycopg pool behaviour and a Recycler-like
thread-local fast path.

Theory of operation (the long form is ``docs/design.md`` ## ObjectPool):

* Every idle object sits either in the shared LIFO ``_idle`` (guarded by ``_lock``) or in one
  thread's :class:`~poolalloc._object_lease.Stash`. A thread that acquires and releases in a loop
  pops and appends its own stash and touches no lock, as long as the pool is not *contended*.
* ``_contended`` is true while any waiter is queued or the pool is closed. A release always
  appends to its stash first and reads ``_contended`` second; a new waiter registers (and sets
  ``_contended``) first and steals every stash second. Whichever order the two threads run in,
  the waiter gets the object: none is left in a stash while somebody waits for it.
* Stashes are capped (``stash_size``) and stealable, so objects in idle threads' stashes cannot
  starve a bounded pool; stashes of finished threads are folded back on the next slow path.
* Waiters (threads and asyncio tasks in one FIFO) receive *grants* under the lock: see
  :mod:`poolalloc._object_wait`.

Counting equation (checked by ``ObjectPoolStats.is_balanced`` in the tests): every object made
and not disposed is either leased (``in_use = acquires - releases``) or idle.

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
import logging
import os
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from time import monotonic
from types import TracebackType
from typing import Generic, TypeVar

from poolalloc._object_lease import AsyncAcquire, Lease, Slot, Stash
from poolalloc._object_stats import CloseReport, ObjectPoolStats
from poolalloc._object_wait import CLOSED, CREATE, AsyncWaiter, ThreadWaiter, Waiter
from poolalloc.errors import ForeignLeaseError, PoolClosedError, PoolExhausted, PoolValueError

__all__ = ["AsyncAcquire", "CloseReport", "Lease", "ObjectPool", "ObjectPoolStats"]

T = TypeVar("T")
_log = logging.getLogger("poolalloc.objects")
_TRACK_ENV = "POOLALLOC_TRACK_LEAKS"


def _stash_cap(max_size: int | None, max_idle: int | None, stash_size: int | None) -> int:
    # Small per-thread stashes: Netty learned that big per-thread caches bloat (Recycler 32k ->
    # 4096); a quarter of a bounded pool, at most 8, keeps most objects where waiters find them.
    if stash_size is not None:
        cap = stash_size
    elif max_size is None:
        cap = 8
    else:
        cap = max(1, min(8, max_size // 4))
    return cap if max_idle is None else min(cap, max_idle)


def _stack() -> str:
    return "".join(traceback.format_stack()[:-2])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_limits(
    max_size: int | None,
    min_idle: int,
    max_idle: int | None,
    max_lifetime: float | None,
    timeout: float | None,
    stash_size: int | None,
) -> None:
    problems = []
    if max_size is not None and not (_is_count(max_size) and max_size >= 1):
        problems.append(f"max_size must be an int >= 1 or None, got {max_size!r}")
    if not _is_count(min_idle):
        problems.append(f"min_idle must be an int >= 0, got {min_idle!r}")
    elif max_size is not None and _is_count(max_size) and min_idle > max_size:
        problems.append(f"min_idle ({min_idle}) exceeds max_size ({max_size})")
    if max_idle is not None and not _is_count(max_idle):
        problems.append(f"max_idle must be an int >= 0 or None, got {max_idle!r}")
    elif max_idle is not None and _is_count(min_idle) and min_idle > max_idle:
        problems.append(f"min_idle ({min_idle}) exceeds max_idle ({max_idle})")
    if max_lifetime is not None and not max_lifetime > 0:
        problems.append(f"max_lifetime must be > 0 seconds or None, got {max_lifetime!r}")
    if timeout is not None and not timeout >= 0:
        problems.append(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    if stash_size is not None and not _is_count(stash_size):
        problems.append(f"stash_size must be an int >= 0 or None, got {stash_size!r}")
    if problems:
        raise PoolValueError("; ".join(problems))


class ObjectPool(Generic[T]):
    """A pool of objects made by ``factory``; see the module docstring for the design.

    ``reset(obj)`` runs on every return (if it raises, the object is disposed);
    ``validate(obj)`` runs on borrow (false or raising: disposed and replaced); ``dispose(obj)``
    runs once per object that leaves the pool. ``max_size`` bounds objects alive; at the bound,
    acquirers wait in FIFO order up to ``timeout`` seconds (None: forever, 0: not at all) and
    then get :class:`~poolalloc.errors.PoolExhausted`. ``min_idle`` objects are made up front and
    kept by :meth:`trim`; ``max_idle`` caps idle objects kept on return; objects older than
    ``max_lifetime`` seconds are retired on return. ``track_leaks`` (default: environment
    variable ``POOLALLOC_TRACK_LEAKS=1``) records where each unreleased lease was acquired.

    Example:
        >>> with ObjectPool(dict, max_size=1, timeout=0) as pool:
        ...     with pool.acquire() as first:
        ...         try:
        ...             pool.acquire()
        ...         except PoolExhausted:
        ...             print("exhausted")
        exhausted
    """

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
        _check_limits(max_size, min_idle, max_idle, max_lifetime, timeout, stash_size)
        self.name = name
        self._factory = factory
        self._reset = reset
        self._validate = validate
        self._dispose = dispose
        self._max_size = max_size
        self._min_idle = min_idle
        self._max_idle = max_idle
        self._max_lifetime = max_lifetime
        self._timeout = timeout
        self._check_return = reset is not None or max_lifetime is not None
        self._stash_cap = _stash_cap(max_size, max_idle, stash_size)
        if track_leaks is None:
            track_leaks = os.environ.get(_TRACK_ENV, "") not in ("", "0")
        self._track = track_leaks
        # One flag for the hot path: no per-object work on borrow or return.
        self._plain = validate is None and not self._check_return and not track_leaks
        self._out: dict[Lease[T], str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stashes: list[Stash[T]] = []
        self._idle: list[Slot[T]] = []
        self._waiters: deque[Waiter] = deque()
        self._contended = False
        self._closed = False
        self._alive = 0  # objects counted against max_size, including permits being built
        self._n = dict.fromkeys(
            ("created", "fresh", "disposed", "timeouts", "invalid", "reset", "retired", "acq", "rel"), 0
        )
        for _ in range(min_idle):
            self._idle.append(Slot(factory(), monotonic()))
            self._alive += 1
            self._n["created"] += 1

    # ---- the fast path: no lock unless contended ----

    def acquire(self, timeout: float | None = None) -> Lease[T]:
        """Lease an object: ``with pool.acquire() as obj:`` or ``lease = pool.acquire()``.

        ``timeout`` overrides the pool's default wait when ``max_size`` is reached.

        Example:
            >>> pool = ObjectPool(list)
            >>> lease = pool.acquire()
            >>> lease.obj
            []
            >>> lease.release()
        """
        if not self._contended:
            try:
                stash = self._local.stash
                slot = stash.pop()
            except (AttributeError, IndexError):
                pass
            else:
                if self._plain:
                    stash.acquires += 1
                    lease: Lease[T] = Lease()
                    lease._slot = slot
                    lease._pool = self
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
        if not self._plain:
            if self._track:
                self._out.pop(lease, None)
            if self._check_return and not self._fit_for_reuse(slot):
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
        object. Use ``timeout`` rather than ``asyncio.wait_for`` around it.

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
        stash = self._my_stash()
        deadline = self._deadline(timeout)
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
        if timeout is None:
            timeout = self._timeout
        if timeout is not None and timeout < 0:
            raise PoolValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        return None if timeout is None else monotonic() + timeout

    def _take(self, deadline: float | None, loop: asyncio.AbstractEventLoop | None) -> object:
        """A slot, CREATE, or a queued waiter (possibly granted already)."""
        wake: list[Waiter] = []
        with self._lock:
            if self._closed:
                raise PoolClosedError(f"{self!r} is closed")
            if not self._waiters:
                if self._idle:
                    return self._idle.pop()
                if self._max_size is None or self._alive < self._max_size:
                    self._alive += 1
                    return CREATE
            waiter: Waiter = ThreadWaiter() if loop is None else AsyncWaiter(loop)
            self._waiters.append(waiter)
            self._contended = True
            self._serve_waiters(wake)
            gave_up = waiter.grant is None and deadline is not None and deadline <= monotonic()
            if gave_up:
                self._waiters.remove(waiter)
                self._contended = bool(self._waiters)
                self._n["timeouts"] += 1
        self._wake(wake)
        if gave_up:
            raise PoolExhausted(f"{self!r}: no object free and max_size reached")
        return waiter

    def _wait_thread(self, waiter: ThreadWaiter, deadline: float | None) -> object:
        try:
            waiter.wait(None if deadline is None else deadline - monotonic())
        except BaseException:
            self._abandon(waiter)
            raise
        return self._collect(waiter)

    async def _wait_async(self, waiter: AsyncWaiter, deadline: float | None) -> object:
        try:
            if deadline is None:
                await waiter.future
            else:
                async with asyncio.timeout(max(deadline - monotonic(), 0.0)):
                    await waiter.future
        except TimeoutError:
            pass  # _collect decides: a grant may have arrived just in time
        except BaseException:
            self._abandon(waiter)
            raise
        return self._collect(waiter)

    def _collect(self, waiter: Waiter) -> object:
        with self._lock:
            grant = waiter.grant
            if grant is None:
                self._waiters.remove(waiter)
                self._contended = self._closed or bool(self._waiters)
                self._n["timeouts"] += 1
        if grant is None:
            raise PoolExhausted(f"{self!r}: timed out waiting for a free object")
        return grant

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter gives up (cancelled, interrupted, loop gone): pass on whatever it got."""
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            grant, waiter.grant = waiter.grant, None
            if grant is None:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._contended = self._closed or bool(self._waiters)
            else:
                self._regrant(grant, wake, dead)
        self._finish(wake, dead)

    def _lease_from_grant(self, grant: object, stash: Stash[T]) -> Lease[T] | None:
        if grant is CLOSED:
            raise PoolClosedError(f"{self!r} closed while waiting")
        if grant is CREATE:
            slot = self._create()
        else:
            assert isinstance(grant, Slot)
            slot = grant
            if self._validate is not None and not self._is_valid(slot):
                return None
        return self._lease_out(slot, stash)

    def _lease_out(self, slot: Slot[T], stash: Stash[T]) -> Lease[T]:
        stash.acquires += 1
        lease: Lease[T] = Lease()
        lease._slot = slot
        lease._pool = self
        if self._track:
            self._out[lease] = _stack()
        return lease

    def _create(self) -> Slot[T]:
        try:
            obj = self._factory()
        except BaseException:
            self._abandon_permit()
            raise
        with self._lock:
            self._n["created"] += 1
            self._n["fresh"] += 1
        return Slot(obj, monotonic())

    def _abandon_permit(self) -> None:
        wake: list[Waiter] = []
        with self._lock:
            self._regrant(CREATE, wake, [])
        self._wake(wake)

    def _is_valid(self, slot: Slot[T]) -> bool:
        assert self._validate is not None
        try:
            ok = bool(self._validate(slot.obj))
        except Exception:
            _log.warning("%r: validate raised; object replaced", self, exc_info=True)
            ok = False
        if not ok:
            self._retire(slot, "invalid")
        return ok

    def _fit_for_reuse(self, slot: Slot[T]) -> bool:
        if self._reset is not None:
            try:
                self._reset(slot.obj)
            except Exception:
                _log.warning("%r: reset raised; object disposed", self, exc_info=True)
                self._retire(slot, "reset")
                return False
            except BaseException:
                self._retire(slot, "reset")
                raise
        if self._max_lifetime is not None and monotonic() - slot.born > self._max_lifetime:
            self._retire(slot, "retired")
            return False
        return True

    def _spill(self, stash: Stash[T]) -> None:
        """A return found waiters, a closed pool, or a full stash: settle it under the lock."""
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            try:
                slot = stash.pop()
            except IndexError:
                return  # a waiter stole it already: nothing left to settle
            if self._closed:
                self._retire_locked(slot, wake, dead)
                while stash:
                    self._retire_locked(stash.pop(), wake, dead)
            elif self._waiters:
                self._grant(slot, wake)
            elif len(stash) < self._stash_cap:
                stash.append(slot)
            else:
                self._to_idle(slot, wake, dead)
        self._finish(wake, dead)

    # ---- bookkeeping under the lock (methods named *_locked or called from them) ----

    def _grant(self, grant: object, wake: list[Waiter]) -> None:
        waiter = self._waiters.popleft()
        waiter.grant = grant
        wake.append(waiter)
        if not self._waiters:
            self._contended = self._closed

    def _regrant(self, grant: object, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        if grant is CLOSED:
            return
        if grant is CREATE:
            if self._waiters and not self._closed:
                self._grant(CREATE, wake)
            else:
                self._alive -= 1
            return
        assert isinstance(grant, Slot)
        if self._closed:
            self._retire_locked(grant, wake, dead)
        elif self._waiters:
            self._grant(grant, wake)
        else:
            self._to_idle(grant, wake, dead)

    def _to_idle(self, slot: Slot[T], wake: list[Waiter], dead: list[Slot[T]]) -> None:
        if self._max_idle is not None and self._idle_count() >= self._max_idle:
            self._retire_locked(slot, wake, dead)
        else:
            self._idle.append(slot)

    def _retire_locked(self, slot: Slot[T], wake: list[Waiter], dead: list[Slot[T]]) -> None:
        self._alive -= 1
        self._n["disposed"] += 1
        dead.append(slot)
        if self._waiters and not self._closed:
            self._alive += 1
            self._grant(CREATE, wake)

    def _retire(self, slot: Slot[T], reason: str) -> None:
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._n[reason] += 1
            self._retire_locked(slot, wake, dead)
        self._finish(wake, dead)

    def _serve_waiters(self, wake: list[Waiter]) -> None:
        """Hand queued waiters idle objects, free capacity, then other threads' stashes."""
        self._fold_orphans()
        while self._waiters and self._idle:
            self._grant(self._idle.pop(), wake)
        while self._waiters and (self._max_size is None or self._alive < self._max_size):
            self._alive += 1
            self._grant(CREATE, wake)
        for stash in self._stashes:
            while self._waiters:
                try:
                    slot = stash.pop()
                except IndexError:
                    break
                self._grant(slot, wake)

    def _fold_orphans(self) -> None:
        """Stashes of finished threads: their slots go to the shared list, counters kept."""
        for stash in [s for s in self._stashes if s.is_orphaned()]:
            self._stashes.remove(stash)
            self._idle.extend(stash)
            self._n["acq"] += stash.acquires
            self._n["rel"] += stash.releases

    def _idle_count(self) -> int:
        return len(self._idle) + sum(len(s) for s in self._stashes)

    def _finish(self, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        self._wake(wake)
        dispose = self._dispose
        if dispose is not None:
            for slot in dead:
                try:
                    dispose(slot.obj)
                except Exception:
                    _log.warning("%r: dispose raised", self, exc_info=True)

    def _wake(self, wake: list[Waiter]) -> None:
        for waiter in wake:
            if not waiter.wake():
                self._abandon(waiter)  # its event loop is gone: pass the grant on

    def _my_stash(self) -> Stash[T]:
        try:
            stash: Stash[T] = self._local.stash
        except AttributeError:
            stash = self._new_stash()
        return stash

    def _new_stash(self) -> Stash[T]:
        stash: Stash[T] = Stash()
        with self._lock:
            self._stashes.append(stash)
        self._local.stash = stash
        return stash

    # ---- management ----

    def stats(self) -> ObjectPoolStats:
        """A snapshot of the counters (exact when no other thread is inside the pool).

        Example:
            >>> pool = ObjectPool(list, min_idle=2)
            >>> s = pool.stats(); (s.created, s.idle, s.in_use, s.is_balanced)
            (2, 2, 0, True)
        """
        with self._lock:
            self._fold_orphans()
            n = self._n
            acquires = n["acq"] + sum(s.acquires for s in self._stashes)
            releases = n["rel"] + sum(s.releases for s in self._stashes)
            return ObjectPoolStats(
                name=self.name,
                max_size=self._max_size,
                created=n["created"],
                reused=acquires - n["fresh"],
                disposed=n["disposed"],
                in_use=acquires - releases,
                idle=self._idle_count(),
                waiting=len(self._waiters),
                timeouts=n["timeouts"],
                invalid=n["invalid"],
                reset_failures=n["reset"],
                retired=n["retired"],
                acquires=acquires,
            )

    def trim(self) -> int:
        """Dispose idle objects above ``min_idle`` (and any past ``max_lifetime``); returns how many.

        Example:
            >>> pool = ObjectPool(list, min_idle=1)
            >>> leases = [pool.acquire() for _ in range(3)]
            >>> for lease in leases:
            ...     lease.release()
            >>> pool.trim(), pool.stats().idle
            (2, 1)
        """
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._fold_orphans()
            for stash in self._stashes:
                while stash:
                    try:
                        self._idle.append(stash.pop())
                    except IndexError:
                        break
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
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            was_closed = self._closed
            self._closed = self._contended = True
            self._fold_orphans()
            for stash in self._stashes:
                while stash:
                    try:
                        self._idle.append(stash.pop())
                    except IndexError:
                        break
            for slot in self._idle:
                self._retire_locked(slot, wake, dead)
            self._idle.clear()
            while self._waiters:
                self._grant(CLOSED, wake)
            self._contended = True
            stacks = tuple(self._out.values())
        self._finish(wake, dead)
        s = self.stats()
        if s.in_use and not was_closed:
            warnings.warn(
                f"{self!r} closed with {s.in_use} object(s) still leased"
                + ("" if stacks else f" (set {_TRACK_ENV}=1 to see where)"),
                ResourceWarning,
                stacklevel=2,
            )
        return CloseReport(outstanding=s.in_use, stacks=stacks)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> ObjectPool[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # No lock here: error messages built under the lock use it.
        label = f" {self.name!r}" if self.name else ""
        state = " closed" if self._closed else ""
        return f"<ObjectPool{label} max_size={self._max_size}{state}>"
