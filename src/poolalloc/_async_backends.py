"""Waiting for a lease or an object under trio (and so under anyio on trio); asyncio is elsewhere.

``BufferPool.acquire_async``, ``Allocator.alloc_async`` and ``ObjectPool.acquire_async`` were
written for asyncio: their waiters register an asyncio loop and future, and the pool wakes them
with ``loop.call_soon_threadsafe(callback, future)`` from whichever thread gives something back.
Under trio there is no asyncio loop. This module plugs into the same registration with a
:class:`_TrioWake`: an object that answers ``call_soon_threadsafe`` (and ``create_future``) by
setting a ``trio.Event`` through the run's ``TrioToken``, which is thread-safe. The waiting is
then trio's own (``trio.move_on_at`` for the deadline), and the safety rules of the asyncio
path hold unchanged: nothing is handed to a waiter; a woken waiter takes a lease with a
synchronous retry and returns it with no checkpoint in between; a waiter that leaves (timeout,
cancellation) passes its wakeup on.

anyio code needs nothing special: under anyio's asyncio backend the asyncio path runs, under
its trio backend this one. Any other async library gets a clear ``RuntimeError``.

Example:
    >>> running_library() is None  # no event loop running here
    True
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from poolalloc._lease import Buffer, LeasePool
from poolalloc._waiting import RECHECK, Waiters, Wake, _discard, _exhausted
from poolalloc.objects._waiting import AsyncWaiter

Retry = Callable[[], Buffer | None]


def running_library() -> str | None:
    """``"asyncio"``, ``"trio"``, or None when neither is running in this thread.

    Example:
        >>> import asyncio
        >>> async def main() -> str | None:
        ...     return running_library()
        >>> asyncio.run(main())
        'asyncio'
    """
    if asyncio._get_running_loop() is not None:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return None


def not_asyncio() -> bool:
    """True when the caller runs under trio: the asyncio waiting would fail (no loop).

    :raises RuntimeError: no event loop of a known library is running.
    """
    library = running_library()
    if library is None:
        raise RuntimeError(
            "no running event loop: poolalloc's async methods run under asyncio, trio or anyio"
        )
    return library != "asyncio"


class _TrioFuture:
    """Stands in for the asyncio future of a waiter; set from the trio thread only."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        trio = _trio()
        self.event = trio.Event()

    def done(self) -> bool:
        return bool(self.event.is_set())

    def set_result(self, _result: object) -> None:
        self.event.set()

    def cancelled(self) -> bool:
        return False


class _TrioWake:
    """Stands in for the asyncio loop of a waiter: ``call_soon_threadsafe`` reaches trio."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        trio = _trio()
        self._token = trio.lowlevel.current_trio_token()

    def create_future(self) -> _TrioFuture:
        return _TrioFuture()

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        trio = _trio()
        try:
            self._token.run_sync_soon(callback, *args)
        except trio.RunFinishedError as exc:  # the pools treat RuntimeError as "loop closed"
            raise RuntimeError("the trio run has finished") from exc


async def wait_lease(
    waiters: Waiters, core: LeasePool, timeout: float | None, retry: Retry
) -> Buffer:
    """``Waiters.wait_async`` for trio: a lease within ``timeout`` (None: the pool's default).

    The wake-up entry in the pool's queue sets a ``trio.Event`` through the run's token (the
    pool may be notified from any thread); the waiter re-checks at least every ``RECHECK``
    seconds, as the thread and asyncio waiters do.

    :raises poolalloc.PoolExhausted: still none when the timeout ran out.
    """
    trio = _trio()
    lease = retry()
    if lease is not None:
        await trio.lowlevel.cancel_shielded_checkpoint()  # a checkpoint, as trio's calls are
        return lease
    wait = waiters.timeout_of(timeout)
    if wait <= 0:
        raise _exhausted(core, wait)
    deadline = trio.current_time() + wait  # inf stays inf: no deadline
    token = trio.lowlevel.current_trio_token()
    queue = waiters.queue
    wake: Wake | None = None
    try:
        while True:
            event = trio.Event()
            wake = functools.partial(_wake_trio, token, event)
            queue.append(wake)  # before the retry: a release in between finds it
            lease = retry()
            if lease is not None:
                return lease
            with trio.move_on_at(min(deadline, trio.current_time() + RECHECK)):
                await event.wait()
            _discard(queue, wake)
            if trio.current_time() >= deadline:
                lease = retry()  # one more try, then give up
                if lease is not None:
                    return lease
                raise _exhausted(core, wait)
    except BaseException:
        waiters._pass_on(core)
        raise
    finally:
        if wake is not None:
            _discard(queue, wake)


def _wake_trio(token: Any, event: Any) -> None:
    trio = _trio()
    try:
        token.run_sync_soon(event.set)
    except trio.RunFinishedError as exc:  # the pools treat RuntimeError as "nobody waits there"
        raise RuntimeError("the trio run has finished") from exc


async def acquire_object(pool: Any, timeout: float | None) -> Any:
    """``ObjectPool._acquire_async`` for trio: the same FIFO grants, woken through trio.

    :raises poolalloc.PoolExhausted: no object within the timeout.
    :raises poolalloc.PoolClosedError: the pool closed.
    """
    trio = _trio()
    await trio.lowlevel.checkpoint_if_cancelled()
    stash = pool._my_stash()
    deadline = pool._deadline(timeout)
    trio_deadline = (
        math.inf if deadline is None else trio.current_time() + (deadline - time.monotonic())
    )
    loop = _TrioWake()
    while True:
        grant = pool._take(deadline, loop)
        if isinstance(grant, AsyncWaiter):
            try:
                with trio.move_on_at(trio_deadline):
                    await grant.future.event.wait()  # type: ignore[attr-defined]
            except BaseException:
                pool._abandon(grant)
                raise
            grant = pool._collect(grant)
        # No checkpoint from here to the return: a cancellation cannot separate grant and lease.
        lease = pool._lease_from_grant(grant, stash)
        if lease is not None:
            return lease


def _trio() -> Any:
    """The trio module: already imported whenever a trio run is what is running."""
    return sys.modules["trio"]
