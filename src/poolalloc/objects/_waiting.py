"""Waiters of an ObjectPool: one FIFO queue shared by threads and asyncio tasks.

Why a grant and not a queue of objects: the pool decides, under its lock, *which* waiter gets an
object and writes it into ``waiter.grant`` before waking it. Waking is only a signal. A waiter that
times out or is cancelled therefore looks at ``grant`` under the same lock: if something was
granted it either takes it or hands it on, so nothing is stranded between "handed over" and
"woken" (the race behind asyncpg issues #467 and #1052, where the hand-off lived in a future that
cancellation could drop).

A grant is one of: a pooled slot, :data:`CREATE` (the pool already counted a new object against
``max_size``; the waiter must build it or give the permit back), or :data:`CLOSED`.

Example:
    >>> waiter = ThreadWaiter()
    >>> waiter.grant = CREATE
    >>> waiter.wake(), waiter.wait(0.0), waiter.grant is CREATE
    (True, True, True)
"""

from __future__ import annotations

import asyncio
import threading
from typing import Final, final


@final
class _Token:
    """A named sentinel (its repr shows in debug output)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: The grant that lets a waiter build a fresh object: the pool already counted it as alive.
CREATE: Final = _Token("CREATE")
#: The grant that tells a waiter the pool closed while it waited.
CLOSED: Final = _Token("CLOSED")


class ThreadWaiter:
    """A blocked thread: a lock held from birth, released once by whoever grants it something.

    Example:
        >>> waiter = ThreadWaiter()
        >>> waiter.wait(0.0)  # nothing granted yet: the wait times out
        False
    """

    __slots__ = ("_gate", "grant", "thread")

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
        ...     waiter.grant = CREATE
        ...     waiter.wake()
        ...     await waiter.future
        ...     return waiter.grant is CREATE
        >>> asyncio.run(demo())
        True
    """

    __slots__ = ("_loop", "future", "grant", "thread")

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
