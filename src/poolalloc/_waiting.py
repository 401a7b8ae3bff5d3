"""The slow path of a lease pool: waiting at capacity, for threads and for asyncio tasks.

The C lease layer calls :meth:`Waiters.wait_sync` only when the pool is at capacity, and calls
:meth:`Waiters.notify` only when a block came back while ``core.waiters > 0``, so nothing here
costs anything on the fast path.

Rules that make waiting safe:

1. A waiter counts itself in ``core.waiters`` *before* it retries, under the condition's lock.
   A release that lands between the retry and the wait therefore always notifies: no lost wakeup.
2. Nothing ever hands a block to a waiter. A woken waiter takes a lease itself with a
   synchronous ``try_acquire()``, with no ``await`` between taking it and returning it, so a
   cancelled or timed-out waiter never strands a buffer (asyncpg #467 and #1052 are that bug).
3. A waiter that leaves without a lease (timeout, cancellation, error) passes the wakeup on when
   a lease could be taken now, so a notification it swallowed is not lost.
4. The condition uses an RLock: a garbage collection inside a waiter may run a lease's
   deallocation, which gives a block back and notifies on the same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import threading
import time
from collections.abc import Callable

from poolalloc._lease import Buffer, LeasePool
from poolalloc.errors import PoolExhausted

Retry = Callable[[], Buffer | None]


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(0.0, float(timeout))


def _time_left(core: LeasePool, deadline: float | None, timeout: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no deadline); raises PoolExhausted once it passed."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _exhausted(core, timeout)
    return remaining


def _exhausted(core: LeasePool, timeout: float | None) -> PoolExhausted:
    name = f" {core.name!r}" if core.name is not None else ""
    waited = "without waiting" if not timeout else f"after waiting {timeout} s"
    message = f"acquire(): pool{name} is at its capacity ({core.capacity}), {waited}"
    return PoolExhausted(message, errno.ENOSPC)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def retry_for(core: LeasePool, nbytes: int, align: int) -> Retry:
    """The non-blocking attempt for a fixed pool (``nbytes < 0``) or a variable one."""
    if nbytes < 0:
        return core.try_acquire
    return functools.partial(core.try_alloc, nbytes, align)


class Waiters:
    """Threads and tasks waiting for a lease of one pool, woken by the lease layer."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._tasks: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify(self) -> None:
        """Wake one waiting thread and every waiting task (a block came back)."""
        with self._cond:
            self._cond.notify()
            self._wake_tasks()

    def notify_all(self) -> None:
        """Wake everybody (the pool closed)."""
        with self._cond:
            self._cond.notify_all()
            self._wake_tasks()

    def _wake_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for loop, fut in tasks:
            # a closed loop raises RuntimeError: nobody waits on that future any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_done, fut)

    def _pass_on(self, core: LeasePool) -> None:
        if core.available:
            self.notify()

    def wait_sync(self, core: LeasePool, timeout: float | None, nbytes: int, align: int) -> Buffer:
        """Called by C at capacity: wait for a lease until ``timeout`` (None: forever)."""
        if timeout is not None and timeout <= 0:
            raise _exhausted(core, timeout)
        retry = retry_for(core, nbytes, align)
        deadline = _deadline(timeout)
        with self._cond:
            core.waiters += 1
            try:
                while True:
                    lease = retry()
                    if lease is not None:
                        return lease
                    self._cond.wait(_time_left(core, deadline, timeout))
            except BaseException:
                self._pass_on(core)
                raise
            finally:
                core.waiters -= 1

    async def wait_async(self, core: LeasePool, timeout: float | None, retry: Retry) -> Buffer:
        """Wait in a task for a lease until ``timeout`` (None: forever); cancellation-safe."""
        lease = retry()
        if lease is not None:
            return lease
        if timeout is not None and timeout <= 0:
            raise _exhausted(core, timeout)
        loop = asyncio.get_running_loop()
        deadline = _deadline(timeout)
        with self._cond:  # every change of core.waiters happens under this lock (rule 1)
            core.waiters += 1
        try:
            while True:
                fut = loop.create_future()
                with self._cond:
                    self._tasks.append((loop, fut))
                lease = retry()
                if lease is not None:
                    return lease
                await self._sleep(fut, _time_left(core, deadline, timeout))
        except BaseException:
            self._pass_on(core)
            raise
        finally:
            with self._cond:
                core.waiters -= 1

    async def _sleep(self, fut: asyncio.Future[None], remaining: float | None) -> None:
        try:
            await asyncio.wait_for(fut, remaining)
        except TimeoutError:
            pass  # the caller's loop retries once more, then raises PoolExhausted
        finally:
            with self._cond:
                self._tasks = [(lp, f) for lp, f in self._tasks if f is not fut]
