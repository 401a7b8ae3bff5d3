"""Threads: 4+ threads, cross-thread frees, about 10^6 operations, every block accounted for."""

from __future__ import annotations

import os
import queue
import random
import threading
import time

from poolalloc import Block, SlabPool, _ffi, size_classes

THREADS = max(4, int(os.environ.get("PA_TEST_THREADS", "4")))
BATCH = 64
CLASSES = [bs for bs, _ in size_classes()]


def _worker(
    *,
    pool: SlabPool,
    seed: int,
    inbox: queue.Queue[list[int] | None],
    outbox: queue.Queue[list[int] | None],
    budget_ops: int,
    deadline: float,
    done: list[int],
) -> None:
    rng = random.Random(seed)
    ops = 0
    while ops < budget_ops and time.monotonic() < deadline:
        size = rng.choice(CLASSES[:24]) - rng.randint(0, 63)
        batch = _ffi.alloc_batch(pool._handle, size, rng.choice((64, 128, 4096)), BATCH)
        ops += BATCH
        outbox.put(batch)  # the next thread frees it
        try:
            theirs = inbox.get_nowait()
        except queue.Empty:
            continue
        if theirs is not None:
            ops += _ffi.free_batch(theirs)
    outbox.put(None)
    done.append(ops)


def test_cross_thread_alloc_free_million_ops(stress_seconds: float) -> None:
    target = int(1_000_000 * min(stress_seconds, 10.0))
    deadline = time.monotonic() + 20.0 * max(stress_seconds, 1.0)
    pool = SlabPool()
    queues: list[queue.Queue[list[int] | None]] = [queue.Queue() for _ in range(THREADS)]
    done: list[int] = []
    threads = [
        threading.Thread(
            target=_worker,
            kwargs={
                "pool": pool,
                "seed": i,
                "inbox": queues[i],
                "outbox": queues[(i + 1) % THREADS],
                "budget_ops": target // THREADS,
                "deadline": deadline,
                "done": done,
            },
        )
        for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leftovers = 0
    for q in queues:
        while not q.empty():
            batch = q.get()
            if batch is not None:
                leftovers += _ffi.free_batch(batch)
    total = sum(done) + leftovers
    stats = pool.stats()
    assert stats.in_use_blocks == 0
    assert stats.allocs == stats.frees
    assert stats.allocs + stats.frees == total
    assert total >= min(target, 200_000)
    pool.check()
    pool.close()
    # the worker threads have exited: their caches go back, so everything gets unmapped
    # (Thread.join() returns before the C-level thread-exit destructors run: poll briefly)
    deadline = time.monotonic() + 5
    while pool.stats().mapped_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.stats().mapped_bytes == 0


def test_thread_exit_returns_its_cache() -> None:
    pool = SlabPool()

    def churn() -> None:
        blocks = [pool.alloc(100) for _ in range(50)]
        for b in blocks:
            b.free()  # parked in this thread's cache

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    for c in pool.class_stats():
        if c.block_size == 128:
            assert c.slabs == 1
            assert c.in_use_blocks == 0
            assert c.free_blocks == 512
    # nothing parked any more, so the slab can go. Thread.join() returns before the C-level
    # thread-exit destructors ran, so give them a moment.
    deadline = time.monotonic() + 5
    released = pool.trim()
    while released == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
        released = pool.trim()
    assert released > 0
    pool.close()


def test_caches_cannot_starve_a_small_pool() -> None:
    pool = SlabPool(max_bytes=2 << 20)
    stop = threading.Event()

    def idle_holder() -> None:
        blocks = [pool.alloc(4096) for _ in range(8)]
        for b in blocks:
            b.free()  # parked, then the thread idles
        stop.wait(5)

    t = threading.Thread(target=idle_holder)
    t.start()
    time.sleep(0.05)
    # everything but a slab's worth or so must still be obtainable from this thread
    blocks = []
    try:
        while True:
            blocks.append(pool.alloc(4096))
    except MemoryError:
        pass
    stop.set()
    t.join()
    assert len(blocks) * 4096 >= (2 << 20) - (2 << 20) // 8
    for b in blocks:
        b.free()
    pool.close()


def test_threads_swinging_past_the_retention_budget_lose_nothing() -> None:
    # Each thread swings its own class's working set by far more than retain_bytes, so slabs
    # are kept on credit, evicted for another class, released and carved again while the other
    # threads run; blocks each thread leaves are freed by the main thread after it exited, into
    # slabs of a shard no live thread uses, whose empty slabs the next threads adopt. The
    # budget is per live thread cache: four of them (the main thread's too) keep 1 MiB.
    pool = SlabPool(retain_bytes=256 << 10)
    sizes = (64 << 10, 20000, 4096)
    left: list[list[Block]] = [[] for _ in sizes]

    def swing(i: int, size: int) -> None:
        for r in range(40):
            blocks = [pool.alloc(size) for _ in range(8 + (r * 7) % 60)]
            for b in reversed(blocks):
                b.free()
        left[i] = [pool.alloc(size) for _ in range(20)]

    for generation in range(3):
        threads = [
            threading.Thread(target=swing, args=(i, sizes[(i + generation) % len(sizes)]))
            for i in range(len(sizes))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for blocks in left:
            for b in blocks:
                b.free()
        pool.check()
    stats = pool.stats()
    assert stats.in_use_blocks == 0
    assert stats.allocs == stats.frees
    assert pool.close_report().mapped_bytes == 0


def test_retention_budget_is_per_thread() -> None:
    # retain_bytes is what each thread using the pool may leave idle: two threads that each
    # free 25 MiB of 64 KiB blocks keep more than one budget of empty slabs between them and
    # at most two; once one has exited, one budget. What else stays carved: each thread's
    # cache (32 blocks, at most 5 slabs of 8) and one spare slab per thread's shard.
    budget, slab = 16 << 20, 512 << 10
    pool = SlabPool(retain_bytes=budget)
    steps = threading.Barrier(3)
    last = threading.Barrier(2)

    def idle_bytes() -> int:
        slabs = next(c.slabs for c in pool.class_stats() if c.block_size == 64 << 10)
        return (slabs - 2 * 5 - 2) * slab

    def work(i: int) -> None:
        blocks = [pool.alloc(64 << 10) for _ in range(400)]
        steps.wait()  # both caches exist before either frees
        for turn in range(2):  # one thread after the other
            if turn == i:
                for b in reversed(blocks):
                    b.free()
            steps.wait()
        steps.wait()  # the main thread has looked
        if i == 0:
            last.wait()  # the other exits first

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for _ in range(3):
        steps.wait()
    both = idle_bytes()
    steps.wait()
    threads[1].join()
    # join() returns before the C thread's key destructors retire its cache
    deadline = time.monotonic() + 10
    while (one := idle_bytes()) > budget and time.monotonic() < deadline:
        time.sleep(0.01)
    last.wait()
    threads[0].join()
    assert budget < both <= 2 * budget
    assert one <= budget  # the exit gave the excess back
    assert idle_bytes() <= budget
    stats = pool.stats()
    assert stats.in_use_blocks == 0
    assert stats.allocs == stats.frees == 800
    pool.check()
    assert pool.close_report().mapped_bytes == 0
