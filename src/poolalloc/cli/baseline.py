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

from poolalloc.errors import (
    DoubleReleaseError,
    LeaseReleasedError,
    PoolClosedError,
    PoolValueError,
)

__all__ = ["FreshBytearrayLease", "FreshBytearrayPool"]


class FreshBytearrayLease(bytearray):
    """A new zero-filled ``bytearray`` with the lease interface; released means dropped.

    It *is* the bytearray, so it exports its bytes like a pooled lease does
    (``sock.recv_into(lease)`` works on it directly).

    Example:
        >>> lease = FreshBytearrayPool(8).acquire()
        >>> lease.view[:2] = b"hi"; bytes(lease[:2])
        b'hi'
    """

    __slots__ = ("_pool", "_released")

    def __init__(self, pool: FreshBytearrayPool, size: int) -> None:
        super().__init__(size)
        self._pool = pool
        self._released = False

    @property
    def view(self) -> memoryview:
        """A writable view of the bytearray."""
        if self._released:
            raise LeaseReleasedError("this lease was released")
        return memoryview(self)

    @property
    def nbytes(self) -> int:
        """The size of the bytearray."""
        return len(self)

    def release(self) -> None:
        """Count the release; the bytearray is freed when its last reference goes."""
        if self._released:
            raise DoubleReleaseError("this lease was already released")
        self._released = True
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

    def try_acquire(self) -> FreshBytearrayLease:
        """As :meth:`acquire`: this pool is never full, so it never returns None.

        Example:
            >>> FreshBytearrayPool(8).try_acquire().nbytes
            8
        """
        return self.acquire()

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
