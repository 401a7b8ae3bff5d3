"""Object pools: :class:`ObjectPool` and its lease, waiting and statistics.

Floor 2 of the package: may import ``poolalloc.errors`` and ``poolalloc._closing``, never the
buffer pools, the network layer or the CLI.

* ``pool.py``: :class:`ObjectPool`, the public face (factory, reset, validate, close).
* ``_store.py``: the locked half (idle LIFO, waiter queue, per-thread stashes, retirement).
* ``lease.py``: :class:`Lease` (:class:`~poolalloc.objects.lease.TrackedLease` when leaks are
  tracked) and :class:`AsyncAcquire`, what ``acquire`` hands out.
* ``_waiting.py``: thread and asyncio waiters in one FIFO.
* ``stats.py``: :class:`ObjectPoolStats` and :class:`CloseReport`.

Example:
    >>> from poolalloc.objects import ObjectPool
    >>> with ObjectPool(list, reset=list.clear, max_size=1) as pool, pool.acquire() as items:
    ...     items.append(1)
"""

from __future__ import annotations

from poolalloc.objects.lease import AsyncAcquire, Lease
from poolalloc.objects.pool import ObjectPool
from poolalloc.objects.stats import CloseReport, ObjectPoolStats

__all__ = ["AsyncAcquire", "CloseReport", "Lease", "ObjectPool", "ObjectPoolStats"]
