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

Once no receive has starved for :data:`SHRINK_AFTER` seconds, :meth:`PoolRing.shrink` halves the
target again, down to the initial one: the buffers over it go back to the pool as the kernel
hands them back. Every staged block is eventually written by the kernel (it picks them in ring
order), so the target is what the ring costs in resident memory.

Incremental buffers (``IOU_PBUF_RING_INC``, Linux 6.12; ``incremental=True``): a receive takes
only the bytes it needs from the block at the head of the ring, so many small receives share
one block instead of taking a 64 KiB block each. A completion then names a slice of a block:
:meth:`PoolRing.arrived` hands out a :class:`_Slice` (a lease of those bytes), and the block
goes back into the ring once the kernel is done with it (a completion without
``CQE_F_BUF_MORE``) and every slice of it was released. A kernel without the feature refuses the
registration (``EINVAL``): the ring is then made without it, and ``why_not_incremental`` says so.

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
import collections
import weakref
from threading import get_ident
from typing import Any, Protocol, cast

from poolalloc._lease import ViewLeaseBase, window_view
from poolalloc.errors import PoolMemoryError
from poolalloc.net.epoll.connection import ReadPool
from poolalloc.net.sockets import LeaseLike
from poolalloc.net.uring import _fastpath
from poolalloc.net.uring.ring import CQE_BUFFER_SHIFT, CQE_F_BUF_MORE, BufRing, Ring

__all__ = ["INCREMENTAL_BYTES", "SHRINK_AFTER", "PoolRing", "RingLease"]

#: seconds without an ``ENOBUFS`` after which a grown ring's target is halved
SHRINK_AFTER = 1.0
#: how much an incremental ring stages at most (unless its initial count is more): at 64 KiB
#: blocks, 4 blocks, which take 4,096 receives of 64 bytes in one loop pass
INCREMENTAL_BYTES = 256 * 1024


class RingLease(LeaseLike, Protocol):
    """A lease whose block address the kernel can be given, and that counts the views made of
    it (``poolalloc.Buffer`` fits)."""

    @property
    def address(self) -> int: ...

    @property
    def exports(self) -> int: ...


class PoolRing:
    """Leases of ``pool`` staged in a provided-buffer ring registered as group ``bgid``."""

    __slots__ = ("__dict__", "__weakref__", "_lent")  # _lent: read by the batch walk in C

    def __init__(
        self,
        ring: Ring,
        pool: ReadPool,
        *,
        bgid: int,
        entries: int,
        initial: int,
        max_bytes: int | None = None,
        incremental: bool = False,
    ) -> None:
        if entries <= 0 or entries & (entries - 1) or entries > 32768:
            raise ValueError(f"entries must be a power of two <= 32768, not {entries}")
        self.pool = pool
        self.bgid = bgid
        self.entries = entries
        self.limit = _ring_limit(pool, entries, max_bytes)
        self.target = self.initial = max(1, min(initial, self.limit))
        self.in_ring = 0
        self.grown = 0
        self.shrunk = 0
        self.exhausted = 0
        self.peak_target = self.target
        self.last_starved = 0.0  # the loop's clock when a receive last starved
        #: why the ring consumes whole buffers although incremental ones were asked for
        self.why_not_incremental = "" if incremental else "not asked for"
        self.incremental = False
        self._br: BufRing
        if incremental:
            try:
                self._br = ring.new_bufring(bgid, entries, incremental=True)
                self.incremental = True
            except OSError as exc:
                self.why_not_incremental = (
                    f"the kernel refused IOU_PBUF_RING_INC (Linux 6.12): {exc}"
                )
        if not self.incremental:
            self._br = ring.new_bufring(bgid, entries)
        self._closed = False
        # incremental bookkeeping by bid: bytes the kernel filled so far, slices handed out and
        # not released, and whether the kernel may still fill the block (1 from staging until a
        # completion without CQE_F_BUF_MORE). These three lists and _addresses are changed in
        # place, never rebound: the batch walk in C holds them for a whole walk.
        self._offsets = [0] * entries
        self._refs = [0] * entries
        self._in_kernel = bytearray(entries)
        # the address of each staged block of an incremental ring (0: none): a receive's bytes
        # are shown from it through a Window (poolalloc._lease.window_view)
        self._addresses = [0] * entries
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
        #: the slice :meth:`receive` lends to a protocol and takes back when it is not kept
        self._lent = _Slice(None, 0, _RELEASED)
        #: the thread that runs the loop (set by the proactor every pass; 0 before the first),
        #: and the bids of slices released by other threads, for the loop to take back: the
        #: ring's bookkeeping is the loop's alone (a slice may be released from a worker)
        self.loop_thread = 0
        self.remote_releases: collections.deque[int] = collections.deque()

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

    def take_remote(self) -> None:
        """On the loop's thread: take back the slices other threads released."""
        remote = self.remote_releases
        while remote:
            self._unref(remote.popleft())

    def publish(self) -> None:
        """Hand the recycled buffers back to the kernel in one call (before the next enter);
        those over the target (after a :meth:`shrink`) go back to the pool instead."""
        bids = self.recycle_bids
        if bids:
            excess = self.in_ring - self.target
            if excess > 0 and not self.incremental:
                for bid in bids[:excess]:
                    self.take(bid).release()
                del bids[:excess]
            self.recycled += len(bids)
            self._br.readd(bids)
            del bids[:]

    # ---- incremental buffers ----
    def arrived(self, bid: int, nbytes: int, flags: int) -> _Slice:
        """The slice a receive of ``nbytes`` (its completion's ``flags``) filled in block ``bid``
        of an incremental ring, as a lease: the block returns to the ring once the kernel is
        done with it and every slice of it was released.

        :raises LookupError: no block sits behind ``bid``.
        """
        address = self._addresses[bid]
        if not address:
            raise LookupError(f"buffer id {bid} of group {self.bgid} is not in the ring")
        self._refs[bid] += 1
        offsets = self._offsets
        offset = offsets[bid]
        if nbytes <= 0:
            # A receive of 0 bytes (EOF) consumes nothing, whatever its flags say: the kernel
            # leaves the block at the head of the ring.
            return _Slice(self, bid, window_view(address + offset, 0))
        if flags & CQE_F_BUF_MORE:
            offsets[bid] = offset + nbytes
        else:
            self._in_kernel[bid] = 0
            self.in_ring -= 1
        return _Slice(self, bid, window_view(address + offset, nbytes))

    def receive(self, bid: int, nbytes: int, flags: int, protocol: Any) -> None:
        """Hand the ``nbytes`` (> 0) a receive put into block ``bid`` of an incremental ring to
        ``protocol.buffer_received``, as :meth:`arrived` would, but as the ring's one reusable
        slice: most protocols do not keep what they are given, and then no slice is made and
        none released. A protocol that keeps it (returns True) owns it from then on, exactly as
        one from :meth:`arrived`; a ``BaseException`` that is not an ``Exception`` also leaves
        it owned (the protocol may hold it). An ``Exception`` propagates with the slice back.

        :raises LookupError: no block sits behind ``bid``.
        """
        # In C (native/uring/walk.c, ring_lend): the batch walk lends the same way.
        _fastpath.receive(self, bid, nbytes, flags, protocol)

    # The ends of a lend that are not the common one, called by the lend in C
    # (poolalloc.net.uring._fastpath).
    def _lent_kept(self, lent: _Slice, bid: int) -> None:
        """The protocol kept the lent slice: it is an ordinary slice, released by its holder."""
        lent._owner = self
        lent._bid = bid
        self._lent = _Slice(None, 0, _RELEASED)

    def _lent_outlived(self, window: Any, bid: int) -> None:
        """A view of the lent slice's bytes outlives the call: the block waits for it."""
        _after_exports(window, _Slice(self, bid, _RELEASED))

    def discard(self, res: int, flags: int) -> None:
        """Give back the buffer of a receive nobody will see (a closed connection's)."""
        bid = flags >> CQE_BUFFER_SHIFT
        if self.incremental:
            self.arrived(bid, res, flags).release()
        else:
            self.take(bid).release()

    def _unref(self, bid: int) -> None:
        refs = self._refs[bid] - 1
        self._refs[bid] = refs
        if not (refs or self._in_kernel[bid]):
            self._back(bid)

    def _back(self, bid: int) -> None:
        """The kernel is done with block ``bid`` and no slice holds it: into the ring again,
        or back to the pool when the ring has its target (or is closed)."""
        self._offsets[bid] = 0
        if not self._closed and self.in_ring < self.target:
            self._in_kernel[bid] = 1
            self.in_ring += 1
            self.recycle_bids.append(bid)  # the whole block again, at the next publish
            return
        self._give_back(bid)
        if not self._closed:
            self._free_bids.append(bid)

    def _give_back(self, bid: int) -> None:
        """The block of ``bid`` goes back to the pool."""
        self._addresses[bid] = 0
        lease, self._leases[bid] = self._leases[bid], None
        if lease is not None:
            lease.release()

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
            if self.incremental:
                self._addresses[bid] = lease.address
            self._in_kernel[bid] = 1
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

    def starved(self, now: float = 0.0) -> None:
        """A receive found the ring empty: grow the target, at most once per loop pass (``now``,
        the loop's clock, names the pass: many receives starving together must not double it
        once each), never beyond :attr:`limit` nor, for an incremental ring, beyond
        :data:`INCREMENTAL_BYTES` staged (or the initial count, if that is more): every staged
        block ends up resident, and a pass that overflows such a ring only makes some receives
        wait for the next pass (they are armed again after the refill)."""
        if now and now == self.last_starved:
            return
        self.last_starved = now
        limit = self.limit
        if self.incremental and self.block_size:
            limit = min(limit, max(self.initial, INCREMENTAL_BYTES // self.block_size))
        if self.target < limit:
            self.target = min(limit, self.target * 2)
            self.peak_target = max(self.peak_target, self.target)
            self.grown += 1

    def shrink(self, now: float) -> bool:
        """Halve a grown target (not below the initial one) for every :data:`SHRINK_AFTER`
        seconds in which no receive starved; True when it did. The buffers over the target go
        back to the pool as the kernel returns them (:meth:`publish`, :meth:`_unref`)."""
        periods = int((now - self.last_starved) / SHRINK_AFTER)
        if self.target <= self.initial or periods < 1:
            return False
        # one halving per quiet period: a loop that slept through several catches up at once
        self.target = max(self.initial, self.target >> min(periods, 16))
        self.last_starved = now  # the next halving waits as long again
        self.shrunk += 1
        return True

    def close(self) -> None:
        """Unregister the ring, then give every staged lease back to the pool (idempotent).

        Unregistering first guarantees the kernel no longer picks any of these blocks. A block
        of an incremental ring that a protocol still holds a slice of goes back with the last
        slice's release.
        """
        self._br.close()
        self._closed = True  # from here on other threads' releases act at once
        self.take_remote()
        del self.recycle_bids[:]
        for bid, lease in enumerate(self._leases):
            if lease is not None and not self._refs[bid]:
                self._give_back(bid)
        self._in_kernel[:] = bytes(self.entries)  # in place: the C walk holds this object
        self.in_ring = 0

    def stats(self) -> dict[str, int]:
        """Counters for metrics: buffers in the ring, target, growth and exhaustion events."""
        return {
            "in_ring": self.in_ring,
            "target": self.target,
            "entries": self.entries,
            "limit": self.limit,
            "grown": self.grown,
            "shrunk": self.shrunk,
            "peak_target": self.peak_target,
            "pool_exhausted": self.exhausted,
            "recycled": self.recycled,
            "held": self.held,
            "hold_limit": self.hold_limit,
            "held_copied": self.held_copied,
            "incremental": int(self.incremental),
            "slices_held": sum(self._refs),
        }


_RELEASED = memoryview(b"")
_RELEASED.release()  # what a released slice's view is: any use raises ValueError


class _Slice(ViewLeaseBase):
    """The bytes one receive put into a block of an incremental ring, with a lease's face:
    ``view`` is exactly those bytes, also exported by the buffer protocol (``memoryview(s)``,
    ``sock.send(s)``) on every Python version through the C base; ``release`` (idempotent) lets
    the block go back, and after it ``view`` is a released memoryview (any use raises
    ``ValueError``)."""

    __slots__ = ("_bid", "_owner")

    def __init__(self, owner: PoolRing | None, bid: int, view: memoryview) -> None:
        self._owner: PoolRing | None = owner
        self._bid = bid
        self.view = view

    @property
    def nbytes(self) -> int:
        """How many bytes were received."""
        return len(self.view)

    def release(self) -> None:
        """Done with these bytes (idempotent). Any view of them still alive (``memoryview(s)``,
        a slice of ``s.view``, a numpy array over it) keeps the block out of the ring until the
        last is gone, as a pool Buffer's exports keep its block."""
        owner = self._owner
        if owner is not None:
            self._owner = None
            window = self._swap_view(_RELEASED)  # None for a stand-in: it shows nothing
            if window is not None:
                _after_exports(window, _Slice(owner, self._bid, _RELEASED))
                return
            loop_thread = owner.loop_thread
            if loop_thread and not owner._closed and get_ident() != loop_thread:
                owner.remote_releases.append(self._bid)  # the loop takes it back next pass
                if owner._closed:  # closed meanwhile: its last take_remote may have run
                    owner.take_remote()
                return
            bid, refs = self._bid, owner._refs  # PoolRing._unref, inlined: once per receive
            left = refs[bid] - 1
            refs[bid] = left
            if not (left or owner._in_kernel[bid]):
                owner._back(bid)

    def __del__(self) -> None:
        # A kept slice dropped unreleased would keep its block out of the ring and the pool
        # for good; as a pool lease goes back when collected, so does its block.
        self.release()


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


def _after_exports(window: Any, stand_in: _Slice) -> None:
    """Views of a slice's bytes outlive it: its block goes back once the last is gone (the
    ``window`` that exports the bytes dies with it), through ``stand_in`` (the same block,
    nothing shown), whose ``release`` runs then, from whichever thread dropped the last view
    (a release off the loop's thread is queued for the loop, as any slice's)."""
    weakref.finalize(window, stand_in.release)


# what a lend in C (PoolRing.receive and the batch walk) needs of this module's classes
_fastpath.setup_ring(_RELEASED, CQE_F_BUF_MORE, PoolRing, ViewLeaseBase)
