"""The provided-buffer ring of one BufferPool: which lease sits behind which buffer id.

The kernel only knows ``{address, length, bid}`` entries; this class keeps the leases behind
them, so that there is one source of truth for every block: a block in the ring is a live lease
of the pool (taken with the non-raising ``try_acquire``), held here until a receive completion
names its bid. Then the very same lease goes to the protocol, and when the protocol releases it
the block is back in the pool; :meth:`PoolRing.refill` acquires leases again (the pool's stash
makes that cheap) and stages them under the freed bids.

Exhaustion: a multishot receive that finds the ring empty ends with ``ENOBUFS`` and the data
stays in the socket. :meth:`PoolRing.starved` doubles the fill target (never beyond the ring's
entries, half of a bounded pool's capacity, nor ``max_bytes`` of staged blocks, see
:func:`_ring_limit`) and the proactor re-arms the receive once :meth:`refill` put buffers back.
Nothing is lost; at worst a connection waits.

Why a bound in bytes: the kernel takes staged buffers in ring order, so a receive lands in the
block staged longest ago, and every staged block is written in turn. With big blocks a deep
ring spreads a stream over more memory than the caches hold: relaying 1 MiB reads through 16
staged blocks cost 1.2x the CPU of the epoll Reactor's relay, which reuses one hot block,
and through 2 staged blocks 0.95x (``docs/benchmarks.md``).

Paused connections: a receive that completes while its connection is paused is kept as its
lease (delivered on resume, released if the connection closes first) while the connections of
this ring hold fewer than :attr:`PoolRing.hold_limit` such blocks together (a quarter of a
bounded pool's capacity, see :func:`_hold_limit`); past it the bytes are copied out and the
block goes back at once. So paused connections can never take the blocks the others read into.

Example:
    >>> from poolalloc.net.uring.ring import Ring
    >>> import poolalloc
    >>> ring = Ring(8); pool = poolalloc.BufferPool(4096, capacity=16)
    >>> pr = PoolRing(ring, pool, bgid=1, entries=8, initial=4)
    >>> pr.refill(), pr.in_ring
    (4, 4)
    >>> pr.close(); ring.close(); _ = pool.close()
"""

from __future__ import annotations

import array
from typing import Protocol, cast

from poolalloc.errors import PoolMemoryError
from poolalloc.net.epoll.connection import ReadPool
from poolalloc.net.sockets import LeaseLike
from poolalloc.net.uring.ring import BufRing, Ring

__all__ = ["PoolRing", "RingLease"]


class RingLease(LeaseLike, Protocol):
    """A lease whose block address the kernel can be given (``poolalloc.Buffer`` fits)."""

    @property
    def address(self) -> int: ...


class PoolRing:
    """Leases of ``pool`` staged in a provided-buffer ring registered as group ``bgid``."""

    def __init__(
        self,
        ring: Ring,
        pool: ReadPool,
        *,
        bgid: int,
        entries: int,
        initial: int,
        max_bytes: int | None = None,
    ) -> None:
        if entries <= 0 or entries & (entries - 1) or entries > 32768:
            raise ValueError(f"entries must be a power of two <= 32768, not {entries}")
        self.pool = pool
        self.bgid = bgid
        self.entries = entries
        self.limit = _ring_limit(pool, entries, max_bytes)
        self.target = max(1, min(initial, self.limit))
        self.in_ring = 0
        self.grown = 0
        self.exhausted = 0
        self._br: BufRing = ring.new_bufring(bgid, entries)
        self._leases: list[RingLease | None] = [None] * entries
        self._free_bids = list(range(entries - 1, -1, -1))
        self.block_size = 0
        self.recycled = 0
        #: bids whose buffers a receive used and its protocol did not keep: they go back into
        #: the ring as they are (no trip through the pool) at the next :meth:`publish`
        self.recycle_bids = array.array("H")
        self.leases = self._leases  # read-only by bid for the receive path
        #: most blocks paused connections may hold together, how many they hold now, and how
        #: many arrivals were copied out because the limit was reached
        self.hold_limit = _hold_limit(pool, entries)
        self.held = 0
        self.held_copied = 0

    def lease(self, bid: int) -> RingLease:
        """The lease behind ``bid`` while it stays the ring's (see :meth:`recycle`).

        :raises LookupError: no lease sits behind ``bid``.
        """
        lease = self._leases[bid]
        if lease is None:
            raise LookupError(f"buffer id {bid} of group {self.bgid} is not in the ring")
        return lease

    def recycle(self, bid: int) -> None:
        """Put the buffer a receive used back into the ring as it is (at :meth:`publish`): its
        protocol did not keep the lease, so the block needs no trip through the pool."""
        if self._leases[bid] is None:
            raise LookupError(f"buffer id {bid} of group {self.bgid} is not in the ring")
        self.recycle_bids.append(bid)

    def publish(self) -> None:
        """Hand the recycled buffers back to the kernel in one call (before the next enter)."""
        bids = self.recycle_bids
        if bids:
            self.recycled += len(bids)
            self._br.readd(bids)
            del bids[:]

    def take(self, bid: int) -> RingLease:
        """The lease behind ``bid`` (named by a completion); it leaves the ring.

        :raises LookupError: no lease sits behind ``bid`` (a kernel/bookkeeping mismatch).
        """
        lease = self._leases[bid]
        if lease is None:
            raise LookupError(f"buffer id {bid} of group {self.bgid} is not in the ring")
        self._leases[bid] = None
        self._free_bids.append(bid)
        self.in_ring -= 1
        return lease

    def refill(self) -> int:
        """Top the ring up to its target from the pool; returns how many buffers were added."""
        want = min(self.target - self.in_ring, len(self._free_bids))
        if want <= 0:
            return 0
        try_acquire, free_bids, leases = self.pool.try_acquire, self._free_bids, self._leases
        staged: list[tuple[int, int]] = []
        for _ in range(want):
            try:
                got = try_acquire()
            except PoolMemoryError:  # the OS refused memory: counted, tried again next pass
                got = None
            if got is None:  # every block is with protocols right now
                self.exhausted += 1
                break
            lease = cast("RingLease", got)
            bid = free_bids.pop()
            leases[bid] = lease
            staged.append((lease.address, bid))
        if staged:
            if not self.block_size:
                self.block_size = leases[staged[0][1]].nbytes  # type: ignore[union-attr]
            self._br.add_many(staged, self.block_size)
            self.in_ring += len(staged)
        return len(staged)

    def needs_refill(self) -> bool:
        """True while fewer buffers than the target sit in the ring."""
        return self.in_ring < self.target and bool(self._free_bids)

    def starved(self) -> None:
        """A receive found the ring empty: grow the target (bounded by the ring's entries)."""
        if self.target < self.limit:
            self.target = min(self.limit, self.target * 2)
            self.grown += 1

    def close(self) -> None:
        """Unregister the ring, then give every staged lease back to the pool (idempotent).

        Unregistering first guarantees the kernel no longer picks any of these blocks.
        """
        self._br.close()
        del self.recycle_bids[:]
        for bid, lease in enumerate(self._leases):
            if lease is not None:
                self._leases[bid] = None
                lease.release()
        self.in_ring = 0

    def stats(self) -> dict[str, int]:
        """Counters for metrics: buffers in the ring, target, growth and exhaustion events."""
        return {
            "in_ring": self.in_ring,
            "target": self.target,
            "entries": self.entries,
            "limit": self.limit,
            "grown": self.grown,
            "pool_exhausted": self.exhausted,
            "recycled": self.recycled,
            "held": self.held,
            "hold_limit": self.hold_limit,
            "held_copied": self.held_copied,
        }


def _ring_limit(pool: ReadPool, entries: int, max_bytes: int | None = None) -> int:
    """At most half a bounded pool sits in the ring: protocols that keep leases, or acquire
    their own for writing, must still find blocks (the ring would otherwise hoard them all);
    and at most ``max_bytes`` of blocks (never fewer than two), when given."""
    stats = getattr(pool, "stats", lambda: None)()
    limit = entries
    capacity = getattr(stats, "capacity", None)
    if capacity:
        limit = max(1, min(limit, int(capacity) // 2))
    block = getattr(stats, "block_size", 0)
    if max_bytes is not None and block:
        limit = min(limit, max(2, max_bytes // int(block)))
    return limit


def _hold_limit(pool: ReadPool, entries: int) -> int:
    """Blocks that paused connections may keep together: a quarter of a bounded pool (with the
    ring's half, a quarter stays for protocols that keep leases); the ring's entries when the
    pool is unbounded."""
    capacity = getattr(getattr(pool, "stats", lambda: None)(), "capacity", None)
    if not capacity:
        return entries
    return max(1, int(capacity) // 4)
