"""fork() under load: threads keep allocating and releasing while the main thread forks.

The child inherits pools whose locks and caches may have been in use by threads that do not
exist in it. The core resets its thread caches and re-initialises its locks in a
``pthread_atfork`` child handler; the child must be able to use every pool (from its main
thread and from new threads), see intact memory, and exit cleanly. The parent's load carries
on, and all its counters balance at the end. A hung child is killed and fails the test.
"""

from __future__ import annotations

import random
import threading
import time
import warnings

from forking import HUNG, RAISED, in_child
from relkit import TEST_SECONDS

from poolalloc import Allocator, BufferPool, ObjectPool, PoolExhausted, SlabPool

FORKS = 6


def _hammer(pools: tuple, seed: int, stop: threading.Event, counts: list[int]) -> None:
    alloc, bufs, slab, objs = pools
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        try:
            a = alloc.alloc(rng.choice((64, 5000, 70000, 3 << 20)), timeout=0)
            b = bufs.acquire(timeout=0)
            s = slab.alloc(rng.choice((64, 4096, 300000)))
            with objs.acquire(timeout=0.01) as o:
                o.append(n)
        except PoolExhausted:
            continue
        a.release()
        b.release()
        s.free()
        n += 1
    counts.append(n)


def _child(pools: tuple) -> None:
    alloc, bufs, slab, objs = pools
    done: list[int] = []

    def use(k: int) -> None:
        for i in range(200):
            lease, buf, block = alloc.alloc(1000 + i), bufs.acquire(timeout=1), slab.alloc(100)
            lease[:4] = buf[:4] = b"kid!"
            block.write(0, b"kid!")
            assert bytes(lease[:4]) == bytes(buf[:4]) == block.read(0, 4) == b"kid!"
            with objs.acquire(timeout=1) as o:
                o.append(i)
            lease.release()
            buf.release()
            block.free()
        done.append(k)

    use(-1)
    threads = [threading.Thread(target=use, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 4, f"threads done in the child: {done}"


def test_fork_while_threads_hammer_every_pool() -> None:
    pools = (
        Allocator(name="fork-alloc"),
        BufferPool(4096, capacity=64, name="fork-bufs"),
        SlabPool(),
        ObjectPool(list, reset=lambda x: x.clear(), max_size=16, timeout=1),
    )
    stop = threading.Event()
    counts: list[int] = []
    threads = [threading.Thread(target=_hammer, args=(pools, i, stop, counts)) for i in range(4)]
    for t in threads:
        t.start()
    codes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        for _ in range(FORKS):
            time.sleep(TEST_SECONDS / FORKS)
            codes.append(in_child(lambda: _child(pools)))
    stop.set()
    for t in threads:
        t.join(30)
    assert codes == [0] * FORKS, f"child exit codes ({HUNG}: hung, {RAISED}: raised): {codes}"
    assert len(counts) == 4
    assert sum(counts) > 0
    alloc, bufs, slab, objs = pools
    for p in (alloc, bufs):
        assert p.outstanding() == 0
        p.close()
    assert slab.stats().in_use_blocks == 0
    slab.close()
    assert objs.stats().is_balanced
    assert objs.close().is_clean
