"""Thread stress: 16 threads on one Allocator, one BufferPool and one ObjectPool at once.

Each thread leases buffers of random sizes and objects, stamps each with its own tag, and hands
half of them to the next thread, which checks the tag (no block or object is ever held by two
users) and releases it: most releases are cross-thread. Some leases are released while a view
is still held (the block is parked until the view dies). Capacities are small so threads also
wait on full pools. Bounded by ``PA_TEST_SECONDS``; at the end every block and object is
accounted for: the per-thread counts equal the pools' counters and nothing is outstanding.
"""

from __future__ import annotations

import os
import queue
import random
import struct
import threading
import time
from dataclasses import dataclass

from relkit import TEST_SECONDS

from poolalloc import Allocator, BufferPool, ObjectPool, PoolExhausted

THREADS = int(os.environ.get("PA_TEST_THREADS", "16"))
TAG = struct.Struct("<QQ")  # (thread, sequence) stamped at the start of every lease
Item = tuple[str, object, bytes]  # ("buf" | "obj", the lease, its tag)


@dataclass
class Tally:
    leases: int = 0
    objects: int = 0
    released: int = 0
    returned: int = 0
    timeouts: int = 0
    checked: int = 0


@dataclass
class Pools:
    alloc: Allocator
    bufs: BufferPool
    objs: ObjectPool[bytearray]


def _stamp(buf: object, tag: bytes) -> None:
    memoryview(buf)[: TAG.size] = tag  # type: ignore[arg-type]


def _give(item: Item, me: int, inboxes: list[queue.Queue]) -> None:
    inboxes[(me + 1) % len(inboxes)].put(item)


def _take_back(item: Item, tally: Tally) -> None:
    """Check the sender's tag, then release: a tag overwritten means two users shared it."""
    kind, thing, tag = item
    if kind == "obj":
        assert bytes(thing.obj[: TAG.size]) == tag, "object leased twice"  # type: ignore[attr-defined]
        thing.release()  # type: ignore[attr-defined]
        tally.returned += 1
    else:
        assert bytes(memoryview(thing)[: TAG.size]) == tag, "block leased twice"  # type: ignore[arg-type]
        thing.release()  # type: ignore[attr-defined]
        tally.released += 1
    tally.checked += 1


def _lease_one(pools: Pools, rng: random.Random) -> object:
    if rng.random() < 0.5:
        return pools.bufs.acquire(timeout=0.05)
    return pools.alloc.alloc(rng.choice((16, 64, 1000, 4096, 5000, 20000, 70000)), timeout=0.05)


def _lease_tagged(pools: Pools, rng: random.Random, tag: bytes, tally: Tally) -> Item | None:
    try:
        if rng.random() < 0.3:
            lease = pools.objs.acquire(timeout=0.05)
            lease.obj[:] = tag
            tally.objects += 1
            return ("obj", lease, tag)
        buf = _lease_one(pools, rng)
    except PoolExhausted:
        tally.timeouts += 1
        return None
    _stamp(buf, tag)
    tally.leases += 1
    return ("buf", buf, tag)


def _release_under_view(item: Item, tally: Tally) -> None:
    """Release with a view alive: the block is parked, not reused, until the view goes."""
    view = memoryview(item[1])  # type: ignore[arg-type]
    _take_back(item, tally)
    assert bytes(view[: TAG.size]) == item[2], "a parked block was reused under its view"
    del view


def _worker(me: int, pools: Pools, inboxes: list[queue.Queue], stop: float, tally: Tally) -> None:
    rng = random.Random(me)
    seq = 0
    mine: list[Item] = []
    while time.monotonic() < stop:
        seq += 1
        item = _lease_tagged(pools, rng, TAG.pack(me, seq), tally)
        if item is not None and rng.random() < 0.5:
            _give(item, me, inboxes)
        elif item is not None and item[0] == "buf" and rng.random() < 0.1:
            _release_under_view(item, tally)
        elif item is not None:
            mine.append(item)
        while len(mine) > 4:
            _take_back(mine.pop(0), tally)
        _drain(inboxes[me], tally)
    for item in mine:
        _take_back(item, tally)


def _drain(inbox: queue.Queue, tally: Tally) -> None:
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return
        _take_back(item, tally)


def test_sixteen_threads_cross_thread_frees_every_block_accounted_for() -> None:
    pools = Pools(
        alloc=Allocator(capacity=4 << 20, name="stress-alloc"),
        bufs=BufferPool(2048, capacity=96, name="stress-bufs"),
        objs=ObjectPool(bytearray, reset=lambda b: b.clear(), max_size=40, timeout=1.0),
    )
    inboxes: list[queue.Queue] = [queue.Queue() for _ in range(THREADS)]
    tallies = [Tally() for _ in range(THREADS)]
    stop = time.monotonic() + TEST_SECONDS
    threads = [
        threading.Thread(target=_worker, args=(i, pools, inboxes, stop, tallies[i]))
        for i in range(THREADS)
    ]
    errors: list[BaseException] = []
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(TEST_SECONDS + 60)
    finally:
        threading.excepthook = threading.__excepthook__
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    total = Tally()
    for inbox in inboxes:  # what the last hand-offs left behind
        _drain(inbox, total)
    for t in tallies:
        for name in ("leases", "objects", "released", "returned", "timeouts", "checked"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
    _assert_accounted(pools, total)


def _assert_accounted(pools: Pools, total: Tally) -> None:
    leased = total.leases
    print(f"thread stress: {THREADS} threads, {total}")  # shown with -s (docs/reliability.md)
    assert leased > 1000, f"too little work done: {total}"
    assert total.released == leased, "a lease was lost"
    assert total.returned == total.objects, "an object was lost"
    a, b = pools.alloc.stats(), pools.bufs.stats()
    assert a.acquires + b.acquires == leased
    assert a.releases + b.releases == leased
    assert a.outstanding == b.outstanding == 0
    assert a.used == b.used == 0
    o = pools.objs.stats()
    assert o.acquires == total.objects
    assert o.in_use == 0
    assert o.is_balanced
    assert o.created <= 40
    for pool in (pools.alloc, pools.bufs):
        pool.trim()
        pool.close()
    assert pools.objs.close().is_clean
