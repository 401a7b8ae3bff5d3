"""The comparison the demo makes: a "pool" that allocates a fresh ``bytearray`` for every read.

This is what a server without poolalloc does (``buf = bytearray(n); sock.recv_into(buf)``, or
``sock.recv(n)``, which allocates the same way). It has the interface the Reactor's connections
use (``acquire``, ``stats``, ``close``; leases with ``view``, ``nbytes``, ``release``), so
``poolalloc serve --fresh-bytearray`` runs the very same server code with only the read buffers
changed: the difference the demo measures is the pooling, nothing else.

Example:
    >>> pool = FreshBytearrayPool(4096)
    >>> lease = pool.acquire()
    >>> lease.nbytes, pool.stats()["outstanding"]
    (4096, 1)
    >>> lease.release(); pool.stats()["outstanding"]
    0
"""

from __future__ import annotations

from poolalloc.errors import DoubleReleaseError, PoolClosedError, PoolValueError

__all__ = ["FreshBytearrayLease", "FreshBytearrayPool"]


class FreshBytearrayLease:
    """A new zero-filled ``bytearray`` behind the lease interface; released means dropped.

    Example:
        >>> lease = FreshBytearrayPool(8).acquire()
        >>> lease.view[:2] = b"hi"; bytes(lease.view[:2])
        b'hi'
    """

    __slots__ = ("_data", "_pool")

    def __init__(self, pool: FreshBytearrayPool, size: int) -> None:
        self._pool = pool
        self._data: bytearray | None = bytearray(size)

    @property
    def view(self) -> memoryview:
        """A writable view of the bytearray."""
        if self._data is None:
            raise PoolValueError("this lease was released")
        return memoryview(self._data)

    @property
    def nbytes(self) -> int:
        """The size of the bytearray."""
        return len(self._data) if self._data is not None else 0

    def release(self) -> None:
        """Drop the bytearray (the garbage collector frees it); count the release."""
        if self._data is None:
            raise DoubleReleaseError("this lease was already released")
        self._data = None
        self._pool.releases += 1


class FreshBytearrayPool:
    """Allocates on every ``acquire``: never a hit, nothing mapped, nothing kept.

    Example:
        >>> FreshBytearrayPool(16).stats()["peak"]
        0
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise PoolValueError(f"size must be >= 1, not {size}")
        self.size = size
        self.acquires = 0
        self.releases = 0
        self.high_water = 0
        self.closed = False

    def acquire(self, timeout: float | None = None) -> FreshBytearrayLease:
        """A lease on a new ``bytearray(size)`` (``timeout`` is accepted and unused: never full)."""
        if self.closed:
            raise PoolClosedError("acquire(): the pool is closed")
        self.acquires += 1
        self.high_water = max(self.high_water, self.acquires - self.releases)
        return FreshBytearrayLease(self, self.size)

    def stats(self) -> dict[str, int]:
        """Counters named as in ``BufferPool.stats()`` (``peak``: most leases out at once)."""
        return {
            "acquires": self.acquires,
            "releases": self.releases,
            "outstanding": self.acquires - self.releases,
            "peak": self.high_water,
        }

    def close(self) -> None:
        """Refuse further acquires."""
        self.closed = True
