"""Waiters of an ObjectPool: one FIFO queue shared by threads and asyncio tasks.

Why a grant and not a queue of objects: the pool decides, under its lock, *which* waiter gets an
object and writes it into ``waiter.grant`` before waking it. Waking is only a signal. A waiter that
times out or is cancelled therefore looks at ``grant`` under the same lock: if something was
granted it either takes it or hands it on, so nothing is stranded between "handed over" and
"woken" (the race behind asyncpg issues #467 and #1052, where the hand-off lived in a future that
cancellation could drop).

A grant is one of: a pooled slot, a :class:`Permit` (the pool already counted a new object
against ``max_size``; the waiter must build it or give the permit back), or :data:`CLOSED`.

The pool holds its waiters weakly. A waiter lives as long as the frames that wait on it; when
an asynchronous exception unwinds them (it can land between any two calls, before any clean-up
could run), the waiter goes with them and so does its grant, whose finalizer gives the slot or
the permit back to the pool. A task that waits is kept alive by the pool while it waits, as
asyncio's own queues keep theirs (the task, not its waiter, so the rule above holds for it).

Example:
    >>> waiter = ThreadWaiter()
    >>> waiter.grant = Permit(None)
    >>> waiter.wake(), waiter.wait(0.0), isinstance(waiter.grant, Permit)
    (True, True, True)
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Final, final

from poolalloc.objects._finalizing import Returned


@final
class _Token:
    """A named sentinel (its repr shows in debug output)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


class Permit(Returned):
    """Leave to build one object, already counted against ``max_size`` by the pool ``home``.

    Used (the object built and counted) or handed back, the pool disarms it (``home = None``).
    Dropped armed, as when an asynchronous exception lands between the count and the build, its
    finalizer gives the count back, as a slot's finalizer gives back its object.

    Example:
        >>> permit = Permit(None)  # no pool: nothing to give back
        >>> permit.home is None
        True
    """

    __slots__ = ()  # `home` is Returned's

    def __init__(self, home: weakref.ref[Any] | None) -> None:
        self.home = home

    def _return_to(self, pool: Any) -> None:
        pool._permit_lost()


#: The grant that tells a waiter the pool closed while it waited.
CLOSED: Final = _Token("CLOSED")


class ThreadWaiter:
    """A blocked thread: a lock held from birth, released once by whoever grants it something.

    Example:
        >>> waiter = ThreadWaiter()
        >>> waiter.wait(0.0)  # nothing granted yet: the wait times out
        False
    """

    __slots__ = ("__weakref__", "_gate", "grant", "thread")

    def __init__(self) -> None:
        self.grant: object = None
        self.thread = threading.get_ident()  # a forked child drops the waiters of other threads
        self._gate = threading.Lock()
        self._gate.acquire()

    def wake(self) -> bool:
        """Signal the waiting thread; always succeeds (True)."""
        self._gate.release()
        return True

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds (None: forever); True when woken."""
        return self._gate.acquire(True, -1 if timeout is None else max(timeout, 0.0))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncWaiter:
    """A task waiting on its event loop; woken thread-safely from any thread.

    Example:
        >>> import asyncio
        >>> async def demo() -> bool:
        ...     waiter = AsyncWaiter(asyncio.get_running_loop())
        ...     waiter.grant = CLOSED
        ...     waiter.wake()
        ...     await waiter.future
        ...     return waiter.grant is CLOSED
        >>> asyncio.run(demo())
        True
    """

    __slots__ = ("__weakref__", "_loop", "future", "grant", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.grant: object = None
        self.thread = threading.get_ident()  # the loop's thread
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        """Schedule the wake-up on the waiter's loop; False when that loop is already closed."""
        try:
            self._loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:
            return False
        return True


Waiter = ThreadWaiter | AsyncWaiter
