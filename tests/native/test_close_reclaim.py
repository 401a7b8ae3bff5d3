"""close() reclaims what live threads cache, and in_use_peak counts blocks handed out."""

from __future__ import annotations

import random
import threading

from poolalloc import PoolClosedError, SlabPool


def _park(pool: SlabPool, n: int, size: int) -> None:
    """Allocate n blocks and free them: they stay parked in this thread's cache."""
    blocks = [pool.alloc(size) for _ in range(n)]
    for b in blocks:
        b.free()


def test_close_reclaims_the_caches_of_idle_live_threads() -> None:
    pool = SlabPool()
    parked = threading.Barrier(5)
    release = threading.Event()

    def idle_holder() -> None:
        _park(pool, 30, 64 << 10)  # ~1 MiB parked (the per-class cap is 32 blocks)
        _park(pool, 200, 1000)
        parked.wait(10)
        release.wait(10)  # alive and idle while the pool closes

    threads = [threading.Thread(target=idle_holder) for _ in range(4)]
    for t in threads:
        t.start()
    parked.wait(10)
    assert pool.stats().mapped_bytes >= 4 << 20
    report = pool.close_report()
    release.set()
    for t in threads:
        t.join()
    assert report.caches_busy == 0
    assert report.caches_reclaimed == 4
    assert report.reclaimed_bytes >= 4 * 30 * (64 << 10)
    assert report.in_use_bytes == 0
    assert report.mapped_bytes == 0
    assert pool.stats().mapped_bytes == 0


def test_close_right_after_join_unmaps_everything() -> None:
    # Thread.join() returns when CPython releases the thread's state lock, before the C thread
    # returns and its pthread key destructors run; close() must not depend on that race.
    for _ in range(5):
        pool = SlabPool()
        threads = [threading.Thread(target=_park, args=(pool, 30, 64 << 10)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = pool.close_report()
        assert report.mapped_bytes == 0, report
        assert pool.stats().mapped_bytes == 0


def test_reported_blocks_in_use_keep_their_memory() -> None:
    pool = SlabPool()
    kept = []
    done = threading.Event()
    release = threading.Event()

    def holder() -> None:
        kept.append(pool.alloc(4096))
        _park(pool, 100, 4096)
        done.set()
        release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    done.wait(10)
    report = pool.close_report()
    release.set()
    t.join()
    assert report.in_use_bytes == 4096
    assert 0 < report.mapped_bytes <= 2 << 20
    assert kept[0].read(0, 1) == b"\x00"
    kept[0].free()
    assert pool.stats().mapped_bytes == 0


def test_a_live_thread_sees_the_close_of_another() -> None:
    # The allocation and free hit paths test no `closed` flag: a close sends every thread that
    # holds a cache of the pool to the slow path, which refuses allocations and frees held
    # blocks straight back to their slabs.
    pool = SlabPool()
    warmed = threading.Event()
    closed = threading.Event()
    outcome: dict[str, object] = {}

    def worker() -> None:
        _park(pool, 50, 64)  # this thread's cache of the pool now serves 64-byte blocks
        held = [pool.alloc(64) for _ in range(3)]
        warmed.set()
        closed.wait(10)
        try:
            pool.alloc(64)
            outcome["alloc"] = "succeeded"
        except PoolClosedError:
            outcome["alloc"] = "refused"
        for b in held:
            b.free()
        outcome["mapped_after_frees"] = pool.stats().mapped_bytes

    t = threading.Thread(target=worker)
    t.start()
    warmed.wait(10)
    report = pool.close_report()
    assert report.in_use_bytes == 3 * 64
    closed.set()
    t.join()
    assert outcome == {"alloc": "refused", "mapped_after_frees": 0}


def test_a_thread_whose_cache_was_reclaimed_keeps_working() -> None:
    # decay() reclaims an idle thread's cache while the pool stays open: the thread's next
    # calls must find a consistent cache and every misuse check intact.
    pool = SlabPool()
    go = threading.Event()
    parked = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _park(pool, 64, 256)
            parked.set()
            go.wait(10)
            blocks = [pool.alloc(256) for _ in range(300)]
            for i, b in enumerate(blocks):
                b.write(0, i.to_bytes(4, "little"))
            for i, b in enumerate(blocks):
                assert b.read(0, 4) == i.to_bytes(4, "little")
                b.free()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    parked.wait(10)
    released = pool.decay()  # age 0: the worker's idle cache goes back, then its slab
    go.set()
    t.join()
    assert not errors, errors
    assert released > 0
    s = pool.stats()
    assert s.in_use_blocks == 0
    assert s.allocs == s.frees
    pool.check()
    pool.close()


def test_reclaim_races_with_busy_threads() -> None:
    # Threads allocate and free without pause while the main thread keeps reclaiming their
    # caches: no block is lost or handed out twice, the counters balance.
    pool = SlabPool()
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        live: dict[int, object] = {}
        try:
            while not stop.is_set():
                if live and rng.random() < 0.5:
                    addr = rng.choice(list(live))
                    block = live.pop(addr)
                    assert block.read(0, 8) == addr.to_bytes(8, "little")  # type: ignore[attr-defined]
                    block.free()  # type: ignore[attr-defined]
                else:
                    b = pool.alloc(rng.choice((64, 300, 4096, 70000)))
                    assert b.address not in live
                    b.write(0, b.address.to_bytes(8, "little"))
                    live[b.address] = b
            for b in live.values():
                b.free()  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for _ in range(200):
        pool.decay()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    s = pool.stats()
    assert s.in_use_blocks == 0
    assert s.allocs == s.frees
    pool.check()
    assert pool.close_report().mapped_bytes == 0


def test_in_use_peak_counts_blocks_handed_out_not_refills() -> None:
    pool = SlabPool()
    blocks = [pool.alloc(64 << 10) for _ in range(4)]
    assert pool.stats().in_use_peak == 4 * (64 << 10)
    for b in blocks:
        b.free()
    blocks = [pool.alloc(64 << 10) for _ in range(2)]
    assert pool.stats().in_use_peak == 4 * (64 << 10)
    for b in blocks:
        b.free()
    small = [pool.alloc(64) for _ in range(10)]
    assert pool.stats().in_use_peak == 4 * (64 << 10)
    for b in small:
        b.free()
    pool.close()


def test_in_use_peak_of_a_fresh_pool_is_one_block() -> None:
    pool = SlabPool()
    b = pool.alloc(100)
    assert pool.stats().in_use_peak == 128
    b.free()
    huge = pool.alloc(3 << 20)
    assert pool.stats().in_use_peak == 3 << 20
    huge.free()
    assert pool.stats().in_use_peak == 3 << 20
    pool.close()


def test_in_use_peak_across_threads_is_bounded_by_what_they_held() -> None:
    pool = SlabPool()
    held = threading.Barrier(3)

    def hold() -> None:
        blocks = [pool.alloc(4096) for _ in range(50)]
        held.wait(10)
        held.wait(10)
        for b in blocks:
            b.free()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    held.wait(10)
    assert pool.stats().in_use_peak == 100 * 4096
    held.wait(10)
    for t in threads:
        t.join()
    assert pool.stats().in_use_peak == 100 * 4096
    pool.close()
