"""The locked half of ObjectPool: waiter queue, grants, stashes, retirement (no public API).

Lock order and ownership (see ``docs/design.md`` ## ObjectPool):

* ``_lock`` guards ``_idle``, ``_waiters``, ``_stashes`` (the registry), ``_alive``, ``_n``,
  ``_closed`` and ``_contended``. It is never held while user code runs: ``factory``,
  ``validate``, ``reset`` and ``dispose`` run outside it, and so do wake-ups (methods collect
  ``wake`` and ``dead`` lists under the lock and :meth:`ObjectStore._finish` acts on them after).
* A stash is appended to only by its owning thread, without the lock; anybody may ``pop()``
  from it (an atomic list operation), which is how waiters, ``trim`` and ``close`` steal.
* ``_alive`` counts objects against ``max_size``, including permits (:class:`Permit`) not yet
  built: each armed permit is one unit of it.
* Nothing the pool counts lives only in a frame without a finalizer to bring it back: a slot
  dropped between two places gives its object back, a permit dropped unused its count, and a
  waiter (held weakly by the queue) dies with the frames that wait on it, taking its grant
  along to that grant's finalizer. An asynchronous exception (KeyboardInterrupt,
  ``PyThreadState_SetAsyncExc``) lands after a call; there is no clean-up it can skip. An
  asyncio task is kept alive while it waits (``_waiting_tasks``), as asyncio's own queues keep
  theirs.

Example:
    >>> core = ObjectStore(max_size=1, max_idle=None, stash_cap=1, dispose=None)
    >>> isinstance(core._take(None, None), Permit)  # capacity left: the caller may build one
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Generic, TypeVar

from poolalloc import leaks
from poolalloc._ints import integer, shown
from poolalloc._waiting import RECHECK
from poolalloc.errors import PoolClosedError, PoolExhausted, PoolValueError
from poolalloc.objects import _finalizing
from poolalloc.objects._waiting import CLOSED, AsyncWaiter, Permit, ThreadWaiter, Waiter
from poolalloc.objects.lease import Slot, Stash

T = TypeVar("T")
log = logging.getLogger("poolalloc.objects")
_COUNTERS = (
    "created",
    "fresh",
    "disposed",
    "timeouts",
    "invalid",
    "reset",
    "retired",
    "acq",
    "rel",
    "gc",
)


def stash_cap(max_size: int | None, max_idle: int | None, stash_size: int | None) -> int:
    # Small per-thread stashes: Netty learned that big per-thread caches bloat (Recycler 32k ->
    # 4096); a quarter of a bounded pool, at most 8, keeps most objects where waiters find them.
    if stash_size is not None:
        cap = stash_size
    elif max_size is None:
        cap = 8
    else:
        cap = max(1, min(8, max_size // 4))
    return cap if max_idle is None else min(cap, max_idle)


def acquisition_stack() -> str:
    # the pool's own frames left out, as for buffer leases: the last line is the caller's
    return "".join(leaks.capture().format())


def _count(value: object) -> int | None:
    """``value`` as a count (an int >= 0, numpy's integers too, as the buffer pools take
    them), or None when it is none."""
    try:
        n = integer(value, "")
    except TypeError:
        return None
    return n if n >= 0 else None


def _said(value: object) -> str:
    return shown(value) if isinstance(value, int) else repr(value)


def check_limits(
    *,
    max_size: int | None,
    min_idle: int,
    max_idle: int | None,
    max_lifetime: float | None,
    stash_size: int | None,
) -> tuple[int | None, int, int | None, int | None]:
    """``(max_size, min_idle, max_idle, stash_size)`` as ints (or None where None was given).

    :raises PoolValueError: one or more of them is wrong (all are named).
    """
    problems = []
    size = None if max_size is None else _count(max_size)
    if max_size is not None and not (size is not None and size >= 1):
        problems.append(f"max_size must be an int >= 1 or None, got {_said(max_size)}")
    least = _count(min_idle)
    if least is None:
        problems.append(f"min_idle must be an int >= 0, got {_said(min_idle)}")
    elif size is not None and least > size:
        problems.append(f"min_idle ({shown(least)}) exceeds max_size ({shown(size)})")
    idle = None if max_idle is None else _count(max_idle)
    if max_idle is not None and idle is None:
        problems.append(f"max_idle must be an int >= 0 or None, got {_said(max_idle)}")
    elif idle is not None and least is not None and least > idle:
        problems.append(f"min_idle ({shown(least)}) exceeds max_idle ({shown(idle)})")
    if max_lifetime is not None and (
        isinstance(max_lifetime, bool)
        or not isinstance(max_lifetime, int | float)
        or not max_lifetime > 0
    ):
        problems.append(f"max_lifetime must be > 0 seconds or None, got {_said(max_lifetime)}")
    stash = None if stash_size is None else _count(stash_size)
    if stash_size is not None and stash is None:
        problems.append(f"stash_size must be an int >= 0 or None, got {_said(stash_size)}")
    if problems:
        raise PoolValueError("; ".join(problems))
    assert least is not None
    return size, least, idle, stash


class ObjectStore(Generic[T]):
    """Shared state and the slow paths of an ObjectPool; ObjectPool adds the public API."""

    def __init__(
        self,
        *,
        max_size: int | None,
        max_idle: int | None,
        stash_cap: int,
        dispose: Callable[[T], object] | None,
    ) -> None:
        self._max_size = max_size
        self._max_idle = max_idle
        self._stash_cap = stash_cap
        self._dispose = dispose
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stashes: list[Stash[T]] = []
        self._idle: list[Slot[T]] = []
        # Weak: a waiter whose frames an asynchronous exception unwound dies with them, and what
        # was granted to it comes back through the grant's finalizer.
        self._waiters: deque[weakref.ref[Waiter]] = deque()
        # asyncio tasks waiting here: kept alive while they wait (nothing else need hold them)
        self._waiting_tasks: set[asyncio.Task[Any]] = set()
        # waiters granted something they have not collected yet, by id (a forked child takes back
        # what was granted to the threads that did not follow it); a dict and not a WeakSet,
        # whose add and discard are Python calls on every hand-over
        self._granted: dict[int, weakref.ref[Waiter]] = {}
        self._prune_at = _SWEEP_AT
        # granted tasks whose wake-up was not sent yet (an interrupt may stop it): the next
        # slow path of any caller sends it again
        self._unwoken: dict[int, weakref.ref[Waiter]] = {}
        self._contended = False  # a waiter is queued or the pool is closed: returns must lock
        self._closed = False
        self._alive = 0
        self._n = dict.fromkeys(_COUNTERS, 0)
        # Slots of leases collected unreleased, with whether their reset went well and whether
        # they were leased (None for a permit dropped unused; a waiter that a garbage
        # collection gave up, on the thread it ran on). Filled by
        # Lease.__del__, which may run inside a garbage collection on a thread that holds
        # `_lock` already (the lock is not reentrant): it appends here and folds them in only
        # when it gets the lock without waiting; every locked slow path folds the rest.
        self._collected_slots: list[tuple[Slot[T] | Waiter | None, bool, bool]] = []
        self._home = weakref.ref(self)  # what each slot's finalizer gives its object back to
        self._reset: Callable[[T], object] | None = None
        _STORES.add(self)

    def _after_fork(self) -> None:
        """In a forked child, where only the forking thread lives on: the waiters of the other
        threads are gone, and what was granted to them would be stranded for good (objects
        released in the parent that no thread of the child can ever acquire)."""
        me = threading.get_ident()
        self._lock = threading.Lock()  # a thread that is gone may have held it
        queued = [w for w in (ref() for ref in self._waiters) if w is not None]
        granted = [w for w in (ref() for ref in self._granted.values()) if w is not None]
        gone = [w for w in (*queued, *granted) if w.thread != me]
        self._waiters = deque(weakref.ref(w) for w in queued if w.thread == me)
        self._granted = {id(w): weakref.ref(w) for w in granted if w.thread == me}
        self._unwoken = {k: ref for k, ref in self._unwoken.items() if k in self._granted}
        self._waiting_tasks = set()  # the parent's: the child's loop, if any, keeps its own
        self._contended = self._closed or bool(self._waiters)
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            for waiter in gone:
                grant, waiter.grant = waiter.grant, None
                if grant is not None:
                    self._regrant(grant, wake, dead)
        self._finish(wake, dead)

    def _collected(self, slot: Slot[T], lease_id: int) -> None:
        """A lease was collected unreleased (from ``Lease.__del__``): its object comes back."""
        self._forget_lease(lease_id)
        if slot.home is None:
            return  # collected in the same cycle as its lease: the slot's finalizer did it
        slot.home = None
        ok = True
        reset = self._reset
        if reset is not None:
            try:
                reset(slot.obj)
            except Exception:
                ok = False  # disposed when folded in, like any object whose reset raised
        self._collected_slots.append((Slot(slot.obj, slot.born, self._home), ok, True))
        self._fold_soon()

    def _slot_lost(self, obj: T, born: float, out: bool) -> None:
        """A slot died unreleased (its lease was collected, or an interrupt caught it between
        two places): its object comes back, reset first when it was leased."""
        ok = True
        reset = self._reset
        if out and reset is not None:
            try:
                reset(obj)
            except Exception:
                ok = False  # disposed when folded in, like any object whose reset raised
        # folded in like a collected lease's slot: idle, granted, or disposed if closed
        self._collected_slots.append((Slot(obj, born, self._home), ok, out))
        self._fold_soon()

    def _permit_lost(self) -> None:
        """A permit was dropped unused (from ``Permit.__del__``): its count comes back."""
        self._collected_slots.append(_PERMIT_LOST)
        self._fold_soon()

    def _fold_soon(self) -> None:
        if self._lock.acquire(False):  # else the holder (maybe this very thread) folds it in
            self._lock.release()
            self._fold_now()

    def _fold_now(self) -> None:
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._fold_collected(wake, dead)
        self._finish(wake, dead)

    def _forget_lease(self, lease_id: int) -> None:
        """Leak tracking forgets the lease (ObjectPool keeps a record per lease)."""

    def _fold_collected(self, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        """Slots of collected leases, and counts of permits dropped unused, back into the pool
        (lock held)."""
        while self._collected_slots:
            try:
                slot, ok, leased = self._collected_slots.pop()
            except IndexError:
                return
            if slot is None:
                self._alive -= 1
                self._permit_for_next(wake)
                continue
            if not isinstance(slot, Slot):
                self._abandon_locked(slot, wake, dead)
                continue
            if leased:
                self._n["gc"] += 1
            if ok:
                self._regrant(slot, wake, dead)
            else:
                self._n["reset"] += 1
                self._retire_locked(slot, wake, dead)

    def _take(self, deadline: float | None, loop: asyncio.AbstractEventLoop | None) -> object:
        """A slot, a permit, or a queued waiter (possibly granted already)."""
        if self._collected_slots or self._unwoken or _finalizing.suspects:
            self._recheck()
        wake: list[Waiter] = []
        with self._lock:
            if self._closed:
                raise PoolClosedError(f"{self!r} is closed")
            if not self._waiters or self._next_waiter() is None:
                if self._idle:
                    return self._idle.pop()
                if self._max_size is None or self._alive < self._max_size:
                    return self._new_permit()
            waiter: Waiter = ThreadWaiter() if loop is None else AsyncWaiter(loop)
            self._waiters.append(weakref.ref(waiter))
            self._contended = True
            self._serve_waiters(wake)
            gave_up = waiter.grant is None and deadline is not None and deadline <= monotonic()
            if gave_up:
                self._unqueue(waiter)
                self._n["timeouts"] += 1
        self._wake(wake)
        if self._collected_slots:  # given back while this thread held the lock
            self._fold_now()
        if gave_up:
            raise PoolExhausted(f"{self!r}: no object free and max_size reached")
        return waiter

    def _wait_thread(self, waiter: ThreadWaiter, deadline: float | None) -> object:
        try:
            while True:
                left = None if deadline is None else deadline - monotonic()
                if left is not None and left <= 0:
                    break
                if waiter.wait(RECHECK if left is None else min(left, RECHECK)):
                    break
                if waiter.grant is not None:
                    break  # granted by a thread interrupted before it woke us
                self._recheck()
        except BaseException:
            self._abandon(waiter)
            raise
        return self._collect(waiter)

    async def _wait_async(self, waiter: AsyncWaiter, deadline: float | None) -> object:
        # One await, no steps (a step a task costs the loop a timer every RECHECK, for every
        # waiting task): a wake-up lost to an interrupt in the granting thread is sent again by
        # the next slow path of any caller (_recheck), or the deadline finds the grant.
        task = asyncio.current_task()
        try:
            if task is not None:
                self._waiting_tasks.add(task)
                # and let go of it if it ends with this frame still suspended (an interrupt
                # in the await chain above it): the frame, collected, then gives up its waiter
                task.add_done_callback(self._waiting_tasks.discard)
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
        finally:
            if task is not None:
                self._waiting_tasks.discard(task)
                task.remove_done_callback(self._waiting_tasks.discard)
        return self._collect(waiter)

    def _recheck(self) -> None:
        """What each slow path and a waiting thread's steps look at: objects given back while
        the lock was busy, slots and permits whose finalizer ran in a garbage collection, and
        tasks granted something whose wake-up an interrupt stopped. (``_take``, the slow path
        taken most, tests the three attributes before it calls this.)"""
        if self._collected_slots:
            self._fold_now()
        _finalizing.settle()
        if self._unwoken:
            for key, ref in list(self._unwoken.items()):
                waiter = ref()
                if waiter is None or waiter.grant is None:
                    self._unwoken.pop(key, None)  # gone, or it took its grant
                elif waiter.wake():
                    self._unwoken.pop(key, None)
                else:
                    self._abandon(waiter)  # its event loop is gone: pass the grant on

    def _collect(self, waiter: Waiter) -> object:
        # An asynchronous exception (KeyboardInterrupt, PyThreadState_SetAsyncExc) may land on
        # any bytecode here: what was granted then goes on, as when the wait was interrupted.
        # Uncaught, it left the grant on a waiter nobody would collect (an object lost for good).
        grant = None
        try:
            with self._lock:
                # taken, not only read: a late wake-up that fails (the task's loop closed) must
                # not find the grant again and pass it on a second time
                grant, waiter.grant = waiter.grant, None
                self._granted.pop(id(waiter), None)
                self._unwoken.pop(id(waiter), None)
                if grant is None:
                    self._unqueue(waiter)
                    self._n["timeouts"] += 1
            if self._collected_slots:  # given back while this thread held the lock
                self._fold_now()
            if grant is not None:
                return grant
        except BaseException:
            if grant is not None:  # taken, not handed out: back on the waiter, to pass on
                waiter.grant = grant
            self._abandon(waiter)
            raise
        raise PoolExhausted(f"{self!r}: timed out waiting for a free object")

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter gives up (cancelled, interrupted, loop gone): pass on whatever it got."""
        if _finalizing.collecting_here():
            # A collection closed the waiting coroutine, maybe on a thread that holds the lock
            # (it is not reentrant): folded in now if the lock is free, else by its holder.
            self._collected_slots.append((waiter, True, False))
            self._fold_soon()
            return
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._abandon_locked(waiter, wake, dead)
        self._finish(wake, dead)

    def _abandon_locked(self, waiter: Waiter, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        # no call between taking the grant and passing it on: an asynchronous exception lands
        # after a call, and one landing there lost the object (interrupt storms)
        grant, waiter.grant = waiter.grant, None
        if grant is None:
            self._unqueue(waiter)
        else:
            self._regrant(grant, wake, dead)
        self._granted.pop(id(waiter), None)
        self._unwoken.pop(id(waiter), None)

    def _give_back(self, permit: Permit) -> None:
        """An unused permit goes back (its object could not be built), unless it went already."""
        wake: list[Waiter] = []
        with self._lock:
            if permit.home is not None:
                self._regrant(permit, wake, [])
        self._wake(wake)

    def _unqueue(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue, if it is there (lock held)."""
        entry, waiters = weakref.ref(waiter), self._waiters
        if waiters and waiters[-1] == entry:
            waiters.pop()  # the newest: a waiter that would not wait (timeout 0) leaves at once
        else:
            with contextlib.suppress(ValueError):  # granted, or taken out by an interrupt
                waiters.remove(entry)
        self._contended = self._closed or bool(self._waiters)

    def _spill(self, stash: Stash[T]) -> None:
        """A return found waiters, a closed pool, or a full stash: settle it under the lock."""
        wake: list[Waiter] = []
        dead: list[Slot[T]] = []
        with self._lock:
            self._fold_collected(wake, dead)
            try:
                slot = stash.pop()
            except IndexError:
                return  # a waiter stole it already: nothing left to settle
            if self._closed:
                self._retire_locked(slot, wake, dead)
                while stash:
                    self._retire_locked(stash.pop(), wake, dead)
            elif self._waiters and (waiter := self._next_waiter()) is not None:
                self._hand(waiter, slot, wake)
            elif len(stash) < self._stash_cap:
                stash.append(slot)
            else:
                self._to_idle(slot, wake, dead)
        self._finish(wake, dead)

    def _next_waiter(self) -> Waiter | None:
        """The first queued waiter still waiting, or None (lock held). The references of waiters
        whose thread or task is gone are dropped here."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]()
            if waiter is not None:
                return waiter
            waiters.popleft()
        self._contended = self._closed
        return None

    def _hand(self, waiter: Waiter, grant: object, wake: list[Waiter]) -> None:
        """Give ``grant`` to ``waiter``, the head of the queue (lock held)."""
        # granted before it leaves the queue: an interrupt after the pop leaves it a grant that
        # its next check (RECHECK) finds, where one before the grant left it nothing to wait for
        # and recorded before it leaves the queue too, with no call between: out of the queue
        # and unrecorded, a task whose wake-up an interrupt stopped was never woken again
        key, entry = id(waiter), weakref.ref(waiter)
        waiter.grant = grant
        self._granted[key] = entry
        if type(waiter) is AsyncWaiter:
            self._unwoken[key] = entry
        self._waiters.popleft()
        wake.append(waiter)
        if not self._waiters:
            self._contended = self._closed
        if len(self._granted) >= self._prune_at:  # records of waiters unwound uncollected
            self._prune_granted()

    def _prune_granted(self) -> None:
        """Drop the records of granted waiters that died uncollected (lock held); each sweep
        doubles the size that starts the next, so sweeps stay rare whatever ``max_size``."""
        granted = self._granted
        for key in [k for k, ref in granted.items() if ref() is None]:
            del granted[key]
        self._prune_at = max(_SWEEP_AT, 2 * len(granted))

    def _new_permit(self) -> Permit:
        """Leave to build one object, counted against ``max_size`` (lock held)."""
        permit = Permit(None)
        # armed and counted in one step, with no call between for an asynchronous exception
        permit.home = self._home
        self._alive += 1
        return permit

    def _permit_for_next(self, wake: list[Waiter]) -> None:
        """Room for one more object: the next waiter, if any, may build it (lock held)."""
        if not self._closed and self._waiters and (waiter := self._next_waiter()) is not None:
            self._hand(waiter, self._new_permit(), wake)

    def _regrant(self, grant: object, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        if grant is CLOSED:
            return
        if isinstance(grant, Permit):
            grant.home = None
            self._alive -= 1
            self._permit_for_next(wake)
            return
        assert isinstance(grant, Slot)
        if self._closed:
            self._retire_locked(grant, wake, dead)
        elif self._waiters and (waiter := self._next_waiter()) is not None:
            self._hand(waiter, grant, wake)
        else:
            self._to_idle(grant, wake, dead)

    def _to_idle(self, slot: Slot[T], wake: list[Waiter], dead: list[Slot[T]]) -> None:
        if self._max_idle is not None and self._idle_count() >= self._max_idle:
            self._retire_locked(slot, wake, dead)
        else:
            self._idle.append(slot)

    def _retire_locked(self, slot: Slot[T], wake: list[Waiter], dead: list[Slot[T]]) -> None:
        slot.home = None  # disposed on purpose: its finalizer must not bring it back
        self._alive -= 1
        self._n["disposed"] += 1
        dead.append(slot)
        self._permit_for_next(wake)

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
        if not self._waiters:
            return
        while self._idle and (waiter := self._next_waiter()) is not None:
            self._hand(waiter, self._idle.pop(), wake)
        while (self._max_size is None or self._alive < self._max_size) and (
            waiter := self._next_waiter()
        ) is not None:
            self._hand(waiter, self._new_permit(), wake)
        for stash in self._stashes:
            while (waiter := self._next_waiter()) is not None:
                try:
                    slot = stash.pop()
                except IndexError:
                    break
                self._hand(waiter, slot, wake)

    def _fold_orphans(self) -> None:
        """Stashes of finished threads: their slots go to the shared list, counters kept."""
        orphans = [s for s in self._stashes if s.is_orphaned()]
        if not orphans:
            return
        # Each step leaves nothing counted twice or lost where an asynchronous exception lands:
        # counters move with no call between adding and zeroing, slots one pop at a time (a
        # popped slot dropped comes back through its finalizer), and an orphan leaves the
        # registry only empty. (Unregistered first, an interrupt lost the counters of the rest.)
        for stash in orphans:
            self._n["acq"] += stash.acquires
            self._n["rel"] += stash.releases
            self._n["fresh"] += stash.fresh
            stash.acquires = stash.releases = stash.fresh = 0
            while stash:
                try:
                    slot = stash.pop()
                except IndexError:
                    break
                self._idle.append(slot)
        # `in` compares stashes by identity (Stash.__eq__), not as equal (empty) lists
        self._stashes = [s for s in self._stashes if s not in orphans]

    def _idle_count(self) -> int:
        return len(self._idle) + sum(len(s) for s in self._stashes)

    def _finish(self, wake: list[Waiter], dead: list[Slot[T]]) -> None:
        self._wake(wake)
        if self._collected_slots:  # given back while this thread held the lock
            self._fold_now()
        dispose = self._dispose
        if dispose is not None:
            for slot in dead:
                try:
                    dispose(slot.obj)
                except Exception:
                    log.warning("%r: dispose raised", self, exc_info=True)

    def _wake(self, wake: list[Waiter]) -> None:
        for waiter in wake:
            if waiter.wake():
                self._unwoken.pop(id(waiter), None)
            else:
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
            # A new thread is the moment to reclaim finished ones: with thread churn the
            # registry (and objects stranded in dead stashes) would otherwise only grow.
            self._fold_orphans()
            self._stashes.append(stash)
        self._local.stash = stash
        return stash

    def _steal_all(self) -> None:
        """Move every stash's slots to the shared list (lock held)."""
        self._fold_orphans()
        for stash in self._stashes:
            while stash:
                try:
                    self._idle.append(stash.pop())
                except IndexError:
                    break


#: What ``_collected_slots`` holds for a permit dropped unused.
_PERMIT_LOST = (None, True, False)
#: Records of granted waiters kept before the first sweep of dead ones
_SWEEP_AT = 64


#: Every ObjectPool alive, for the fork handler.
_STORES: weakref.WeakSet[ObjectStore[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
