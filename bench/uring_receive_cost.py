"""Python cost of handing one receive to a protocol that keeps nothing, per buffer-ring kind.

The io_uring Proactor hands each receive to ``buffer_received`` as a lease: the staged pooled
block itself for a ring of whole buffers, a slice of a shared block for an incremental ring
(``IOU_PBUF_RING_INC``). This times that hand-off alone, with no kernel and no socket: the ring
bookkeeping, the lease and the protocol call (the protocol reads one byte and keeps nothing).

* ``whole``: the staged lease, and its bid queued to go back into the ring.
* ``slice``: :meth:`PoolRing.arrived` (a fresh slice) and its ``release()``, the path of held
  receives.
* ``lent``: :meth:`PoolRing.receive`, the common path (the ring's one reusable slice), where
  the installed version has it.
* ``walk-c`` and ``walk-py``: a whole receive completion as the Proactor handles it, for an open
  connection on a socket pair (no data moves: the completions are written as the kernel writes
  them, 32 per batch): walked in C (``Proactor._complete_batch``, where the installed version
  has it) and one at a time through the Python path (``Proactor._complete``: the batch loop,
  ``UringConnection._on_recv``, :meth:`PoolRing.receive`).

Candidates alternate inside each round, the order reversing every round; CPU time
(``time.thread_time``), median (min-max) of the rounds, ns per receive::

    python bench/uring_receive_cost.py --rounds 7 --loops 300000
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

from poolalloc.buffers import BufferPool
from poolalloc.net.uring import _buffers
from poolalloc.net.uring.connection import RECV, UringConnection
from poolalloc.net.uring.proactor import Proactor
from poolalloc.net.uring.ring import (
    CQE_BUFFER_SHIFT,
    CQE_F_BUF_MORE,
    CQE_F_BUFFER,
    CQE_F_MORE,
    Ring,
)


class KeepsNothing:
    def connection_made(self, conn: Any) -> None:
        pass

    def buffer_received(self, lease: Any, n: int) -> bool:
        lease.view[0]  # touch the bytes
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def walks(loops: int, proto: KeepsNothing) -> tuple[dict[str, Callable[[], None]], Any]:
    """The two ways a Proactor hands receive completions to an open connection's protocol."""
    loop = Proactor(initial_buffers=2)
    pool = BufferPool(16384)
    mine, peer = socket.socketpair()
    conn = UringConnection()
    conn.open(loop, mine, pool, proto, 16384)
    ring = conn.pool_ring
    assert ring is not None
    bid = next(b for b in range(ring.entries) if ring._addresses[b])
    flags = CQE_F_MORE | CQE_F_BUFFER | CQE_F_BUF_MORE | bid << CQE_BUFFER_SHIFT
    cqe = (conn.token << 8 | RECV, 100, flags)
    tuples, packed = [cqe] * 32, memoryview(struct.pack("=QiI", *cqe) * 32)
    offsets = ring._offsets

    def walk_py() -> None:
        complete = loop._complete
        for _ in range(loops // 32):
            offsets[bid] = 0  # 32 receives of 100 bytes stay inside the block
            complete(iter(tuples))

    def walk_c() -> None:
        complete = loop._complete_batch  # type: ignore[attr-defined]
        for _ in range(loops // 32):
            offsets[bid] = 0
            complete(packed)

    cands: dict[str, Callable[[], None]] = {"walk-py": walk_py}
    if hasattr(loop, "_complete_batch"):
        cands["walk-c"] = walk_c

    def close() -> None:
        conn.abort()
        loop.run_once()
        loop.close()
        peer.close()
        pool.close()

    return cands, close


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--loops", type=int, default=300000)
    args = ap.parse_args()
    loops = args.loops
    proto = KeepsNothing()
    ring = Ring(8)
    pool = BufferPool(16384, capacity=None)
    inc = _buffers.PoolRing(ring, pool, bgid=1, entries=8, initial=2, incremental=True)
    whole = _buffers.PoolRing(ring, pool, bgid=2, entries=8, initial=2)
    if not inc.incremental:
        raise SystemExit(f"no incremental ring here: {inc.why_not_incremental}")
    inc.refill()
    whole.refill()
    # the staged blocks by id: their addresses (a view of each before the Window, in builds
    # measured against)
    staged = getattr(inc, "_addresses", None) or getattr(inc, "_views", [])
    bid_i = next(b for b in range(8) if staged[b])
    bid_w = next(b for b in range(8) if whole.leases[b] is not None)
    offsets = inc._offsets

    def whole_path() -> None:
        leases, recycle = whole.leases, whole.recycle_bids
        for _ in range(loops):
            offsets[bid_i] = 0  # the same store as the others make
            lease = leases[bid_w]
            if not proto.buffer_received(lease, 100) and not lease.exports:
                recycle.append(bid_w)
            del recycle[:]

    def slice_path() -> None:
        for _ in range(loops):
            offsets[bid_i] = 0  # stays in the same block: the kernel would move on
            lease = inc.arrived(bid_i, 100, CQE_F_BUF_MORE)
            if not proto.buffer_received(lease, 100):
                lease.release()

    def lent_path() -> None:
        receive = inc.receive  # type: ignore[attr-defined]
        for _ in range(loops):
            offsets[bid_i] = 0
            receive(bid_i, 100, CQE_F_BUF_MORE, proto)

    cands: dict[str, Callable[[], None]] = {"whole": whole_path, "slice": slice_path}
    if hasattr(inc, "receive"):
        cands["lent"] = lent_path
    walk_cands, close_walks = walks(loops, proto)
    cands.update(walk_cands)
    times: dict[str, list[float]] = {name: [] for name in cands}
    names = list(cands)
    for rnd in range(args.rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            t = time.thread_time()
            cands[name]()
            times[name].append((time.thread_time() - t) / loops * 1e9)
    base = statistics.median(times["whole"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:6s} {med:7.1f} ns ({min(ts):.1f}-{max(ts):.1f})  {med / base:.2f}x whole")
    close_walks()
    inc.close()
    whole.close()
    ring.close()
    pool.close()


if __name__ == "__main__":
    main()
