"""The slow path of a lease pool: waiting at capacity, for threads and for asyncio tasks.

The C lease layer calls :meth:`Waiters.wait_sync` only when the pool is at capacity, and calls
:meth:`Waiters.notify` only when a block came back while the wait queue is not empty, so nothing
here costs anything on the fast path.

Rules that make waiting safe:

1. A waiter puts its wake-up entry in the queue *before* it retries. A release that lands
   between the retry and the wait therefore always finds it: no lost wakeup.
2. Nothing ever hands a block to a waiter. A woken waiter takes a lease itself with a
   synchronous ``try_acquire()``, with no ``await`` between taking it and returning it, so a
   cancelled or timed-out waiter never strands a buffer (asyncpg #467 and #1052 are that bug).
3. A waiter that leaves without a lease (timeout, cancellation, error) passes the wakeup on when
   a lease could be taken now, so a notification it swallowed is not lost.
4. No lock is held across a point where an exception can land. An asynchronous exception
   (KeyboardInterrupt, ``PyThreadState_SetAsyncExc``) is raised between two bytecodes, even
   inside ``with cond:`` (``Condition.__enter__`` is Python code that returns after it took the
   lock), and a lock left held there stops every other thread for good. So the queue is a plain
   list changed only by single C-level calls (``append``, ``pop``, ``remove``), each waiting
   thread blocks on a private gate lock that nobody else ever waits on, and a notification
   releases gates. What an interrupt can leave behind is a stale entry (woken once, then gone)
   or a swallowed wakeup, which rule 5 bounds.
5. A waiter re-checks at least every ``RECHECK`` seconds, so even a wakeup lost to an interrupt
   in the notifying thread delays it by that much at most, never for good.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import errno
import functools
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable

from poolalloc import leaks
from poolalloc._lease import Buffer, LeasePool
from poolalloc.errors import PoolExhausted, PoolValueError

Retry = Callable[[], Buffer | None]
Wake = Callable[[], object]

#: longest a waiter sleeps before it looks at the pool again (bounds a lost wakeup)
RECHECK = 0.5
#: how long acquire()/alloc() wait at capacity when neither the call nor the pool says otherwise
DEFAULT_TIMEOUT = 30.0
_FLOAT_MAX = sys.float_info.max


def _deadline(timeout: float) -> float:
    return time.monotonic() + timeout  # inf stays inf: wait without a deadline


def _time_left(core: LeasePool, deadline: float, timeout: float) -> float:
    """Seconds until ``deadline``; raises PoolExhausted once it passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _exhausted(core, timeout)
    return min(remaining, RECHECK)


def _exhausted(core: LeasePool, timeout: float) -> PoolExhausted:
    name = f" {core.name!r}" if core.name is not None else ""
    waited = "without waiting" if not timeout else f"after waiting {timeout} s"
    held = _held_by(core)
    message = f"acquire(): pool{name} is at its capacity ({core.capacity}){held}, {waited}"
    if timeout and core.held_by_caller:
        message += "; every outstanding lease was acquired by this thread"
    return PoolExhausted(message, errno.ENOSPC)


def batch_exhausted(core: LeasePool, n: int, got: int, timeout: float) -> PoolExhausted:
    """The error of an ``acquire_many(n)`` that had ``got`` leases and handed them back.

    Its counters are read after the hand-back: the batch's own leases are not the caller's, and
    an error built while they were out would count them as live.
    """
    c = core.counters()
    name = f" {core.name!r}" if core.name is not None else ""
    waited = "without waiting" if not timeout else f"within {timeout} s"
    parked = f", {_parked(c['parked'])}" if c["parked"] else ""
    return PoolExhausted(
        f"acquire_many({n}): pool{name} (capacity {core.capacity}) gave {got} of the {n}"
        f" leases {waited}; those {got} went back (now {c['live']} lease(s) live{parked})",
        errno.ENOSPC,
    )


def _self_deadlock(core: LeasePool) -> PoolExhausted:
    c = core.counters()
    name = f" {core.name!r}" if core.name is not None else ""
    lines = [
        f"acquire(): this thread holds every block of pool{name} ({c['live']} live lease(s),"
        f" {c['parked']} released but held by a live view: a memoryview, slice, numpy array or"
        " pin); waiting for one of them would never end. Release a lease (and drop its views)"
        " first."
    ]
    stacks = list(core.tracked.values())
    if stacks:
        lines.append("Live leases were acquired at:")
        lines += [
            f"  {where}" + (f" ({count} leases)" if count > 1 else "")
            for where, count in leaks.places(
                f"{s[-1].filename}:{s[-1].lineno} in {s[-1].name}" for s in stacks
            )
        ]
    elif c["live"]:
        lines.append("(leaks='all' or POOLALLOC_LEAKS=all shows where they were acquired)")
    return PoolExhausted("\n".join(lines), errno.ENOSPC)


def _held_by(core: LeasePool) -> str:
    c = core.counters()
    return f" ({c['live']} lease(s) live, {_parked(c['parked'])})" if c["parked"] else ""


def _parked(count: int) -> str:
    return f"{count} released but held by a live view: a memoryview, slice, numpy array or pin"


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_task(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    loop.call_soon_threadsafe(_set_done, fut)


def _discard(queue: list[Wake], entry: Wake) -> None:
    with contextlib.suppress(ValueError):
        queue.remove(entry)


def retry_for(core: LeasePool, nbytes: int, align: int) -> Retry:
    """The non-blocking attempt for a fixed pool (``nbytes < 0``) or a variable one."""
    if nbytes < 0:
        return core.try_acquire
    return functools.partial(core.try_alloc, nbytes, align)


class Waiters:
    """Threads and tasks waiting for a lease of one pool, woken by the lease layer.

    ``queue`` is shared with the C layer, which reads its length to know whether to notify.
    """

    def __init__(self, default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.queue: list[Wake] = []
        self.default_timeout = default_timeout
        _ALL.add(self)

    def notify(self) -> None:
        """Wake every waiting thread and task (a block came back); each one retries."""
        queue = self.queue
        for _ in range(len(queue)):
            try:
                wake = queue.pop()
            except IndexError:
                return
            # a gate released twice, or a task whose loop closed: nobody waits there any more
            with contextlib.suppress(RuntimeError):
                wake()

    notify_all = notify  # the pool closed: the same, everybody retries and sees it

    def _pass_on(self, core: LeasePool) -> None:
        if core.available:
            self.notify()

    def timeout_of(self, timeout: float | None) -> float:
        """The wait for one call: its own ``timeout``, else the pool's default."""
        return self.default_timeout if timeout is None else max(0.0, float(timeout))

    def wait_sync(self, core: LeasePool, timeout: float | None, nbytes: int, align: int) -> Buffer:
        """Called by C at capacity: wait for a lease until ``timeout`` (None: the default)."""
        # C checked the timeout's type and sign; an int past every float becomes inf here
        wait = self.timeout_of(check_timeout(timeout))
        if wait <= 0:
            raise _exhausted(core, wait)
        # This thread took every lease out, and no other thread exists that could release one
        # (a lease handed to another thread for release is a normal pattern, so with other
        # threads alive the wait goes on, bounded by its timeout, whose error then says this).
        if core.held_by_caller and threading.active_count() == 1:
            raise _self_deadlock(core)
        retry = retry_for(core, nbytes, align)
        deadline = _deadline(wait)
        gate = _thread.allocate_lock()
        gate.acquire()
        wake: Wake = gate.release
        queue = self.queue
        try:
            while True:
                queue.append(wake)  # rule 1: before the retry
                lease = retry()
                if lease is not None:
                    return lease
                gate.acquire(True, _time_left(core, deadline, wait))
                _discard(queue, wake)
        except BaseException:
            self._pass_on(core)
            raise
        finally:
            _discard(queue, wake)

    async def wait_async(self, core: LeasePool, timeout: float | None, retry: Retry) -> Buffer:
        """Wait in a task for a lease until ``timeout`` (None: the default); cancellation-safe."""
        lease = retry()
        if lease is not None:
            return lease
        wait = self.timeout_of(timeout)
        if wait <= 0:
            raise _exhausted(core, wait)
        loop = asyncio.get_running_loop()
        deadline = _deadline(wait)
        queue = self.queue
        wake: Wake | None = None
        try:
            while True:
                fut = loop.create_future()
                wake = functools.partial(_wake_task, loop, fut)
                queue.append(wake)
                lease = retry()
                if lease is not None:
                    return lease
                # asyncio.timeout, not wait_for: wait_for (3.11) swallows a cancellation that
                # arrives together with the wakeup
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_time_left(core, deadline, wait)):
                        await fut
                _discard(queue, wake)
        except BaseException:
            self._pass_on(core)
            raise
        finally:
            if wake is not None:
                _discard(queue, wake)


#: Every Waiters alive, for the fork handler.
_ALL: weakref.WeakSet[Waiters] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The entries of threads that did not follow into the child would stay queued (and counted
    # in `waiters`) until a release popped them; a waiter of this thread's loop just retries.
    for waiters in list(_ALL):
        waiters.notify()


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_timeout(timeout: object, what: str = "timeout") -> float | None:
    """``timeout`` as seconds (None stays None), or a TypeError/ValueError naming it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"{what} must be a number of seconds (int or float) or None,"
            f" not {type(timeout).__name__}"
        )
    if isinstance(timeout, int) and not -_FLOAT_MAX <= timeout <= _FLOAT_MAX:
        # past every float (isnan() and float() raise; its repr may be refused)
        if timeout < 0:
            raise PoolValueError(
                f"{what} must be >= 0 seconds (inf: no limit) or None, not a negative int"
            )
        return math.inf  # no clock reaches it
    if math.isnan(timeout) or timeout < 0:
        raise PoolValueError(
            f"{what} must be >= 0 seconds (inf: no limit) or None, not {timeout!r}"
        )
    return float(timeout)
