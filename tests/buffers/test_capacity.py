"""Capacity is a promise: exhaustion, waiting, stats balance, batches, Allocator bytes."""

from __future__ import annotations

import errno
import threading
import time

import pytest

from poolalloc import Allocator, Buffer, BufferPool, PoolClosedError, PoolExhausted


def test_timeout_zero_raises_at_once() -> None:
    with BufferPool(512, capacity=3, name="small") as pool:
        bufs = [pool.acquire() for _ in range(3)]
        start = time.monotonic()
        with pytest.raises(PoolExhausted, match=r"'small'.*capacity \(3\)") as info:
            pool.acquire(timeout=0)
        assert time.monotonic() - start < 0.5
        assert isinstance(info.value, MemoryError)
        assert info.value.errno == 28
        pool.release_many(bufs)


def acquired_elsewhere(pool: BufferPool) -> Buffer:
    """A lease taken by another thread (a thread waiting for its own leases fails at once)."""
    box: list[Buffer] = []
    thread = threading.Thread(target=lambda: box.append(pool.acquire(timeout=5)))
    thread.start()
    thread.join(10)
    return box[0]


def test_positive_timeout_waits_then_raises() -> None:
    with BufferPool(512, capacity=1) as pool:
        buf = acquired_elsewhere(pool)
        start = time.monotonic()
        with pytest.raises(PoolExhausted):
            pool.acquire(timeout=0.2)
        assert 0.18 <= time.monotonic() - start < 5
        assert pool.stats().waiters == 0
        buf.release()


def test_none_waits_until_another_thread_releases() -> None:
    with BufferPool(512, capacity=1) as pool:
        buf = pool.acquire()
        timer = threading.Timer(0.1, buf.release)
        timer.start()
        got = pool.acquire()  # blocks until the timer thread releases
        timer.join()
        assert buf.released
        assert not got.released
        got.release()


def test_waiter_wakes_when_a_parked_block_returns() -> None:
    with BufferPool(512, capacity=1) as pool:
        buf = pool.acquire()
        holder = [buf.view]
        buf.release()  # parked: the view is alive
        timer = threading.Timer(0.1, holder.clear)  # the view dies on another thread
        timer.start()
        got = pool.acquire(timeout=10)
        timer.join()
        got.release()


def test_close_wakes_waiters_with_pool_closed() -> None:
    pool = BufferPool(512, capacity=1)
    buf = pool.acquire()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    pool.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], PoolClosedError)
    buf.release()


def test_never_more_blocks_than_capacity_even_with_the_stash() -> None:
    with BufferPool(1024, capacity=5) as pool:
        for _ in range(3):
            bufs = pool.acquire_many(5)
            s = pool.stats()
            assert s.used == 5
            assert s.stashed == 0
            assert s.peak == 5
            pool.release_many(bufs)
            s = pool.stats()
            assert s.used + s.stashed <= 5


def test_stats_balance_over_a_mixed_run() -> None:
    with BufferPool(256, capacity=16) as pool:
        kept = []
        for i in range(200):
            buf = pool.acquire()
            if i % 7 == 0 and len(kept) < 10:
                kept.append(buf)
            else:
                buf.release()
        s = pool.stats()
        assert s.acquires - s.releases == s.live == len(kept)
        assert s.outstanding == len(kept)
        pool.release_many(kept)
        s = pool.stats()
        assert s.acquires == s.releases == 200
        assert s.outstanding == 0


def test_acquire_many_waits_for_the_rest_and_is_all_or_nothing() -> None:
    with BufferPool(256, capacity=4) as pool:
        held = pool.acquire_many(3)
        with pytest.raises(PoolExhausted):
            pool.acquire_many(2, timeout=0.1)
        assert pool.outstanding() == 3  # the one it did get went back
        threading.Timer(0.05, held.pop().release).start()
        more = pool.acquire_many(2, timeout=10)
        assert len(more) == 2
        pool.release_many(held + more)


def test_unbounded_pool_grows_and_trims() -> None:
    with BufferPool(4096) as pool:
        bufs = pool.acquire_many(300)
        assert len({b.address for b in bufs}) == 300
        pool.release_many(bufs)
        assert pool.stats().stashed > 0
        assert pool.trim() >= 0
        assert pool.stats().stashed == 0


def test_allocator_counts_block_bytes_against_capacity() -> None:
    with Allocator(capacity=64 * 1024, name="bytes") as alloc:
        a = alloc.alloc(40_000)
        assert a.nbytes == 40_000
        assert a.address % 64 == 0
        used = alloc.stats().used
        assert used >= 40_000
        with pytest.raises(PoolExhausted):
            alloc.alloc(40_000, timeout=0)
        small = alloc.alloc(100, 256)
        assert small.address % 256 == 0
        assert small.nbytes == 100
        assert alloc.stats().used > used
        a.release()
        small.release()
        assert alloc.stats().used == 0


def test_allocator_waits_for_bytes_released_elsewhere() -> None:
    with Allocator(capacity=64 * 1024) as alloc:
        a = alloc.alloc(50_000)
        threading.Timer(0.05, a.release).start()
        b = alloc.alloc(50_000, timeout=10)
        b.release()


def test_allocator_sizes_across_classes_are_usable() -> None:
    with Allocator() as alloc:
        for n in (1, 63, 64, 65, 1000, 4095, 4096, 4097, 65536, 1 << 20, (1 << 22) + 1):
            buf = alloc.alloc(n)
            buf[n - 1] = 7
            assert buf.nbytes == n
            assert buf[n - 1] == 7
            buf.release()


def test_core_sees_exactly_the_leased_and_stashed_blocks() -> None:
    """The lease layer drives the one core (through pa_api_t): its counts match the core's."""
    with BufferPool(2048, capacity=40) as pool:
        bufs = pool.acquire_many(25)
        for buf in bufs[:10]:
            buf.release()
        s = pool.stats()
        assert s.used == 15
        assert s.core.in_use_blocks == s.used + s.stashed
        assert s.core.allocs - s.core.frees == s.core.in_use_blocks
        pool.release_many(bufs[10:])
        pool.trim()
        s = pool.stats()
        assert s.stashed == 0
        assert s.core.in_use_blocks == 0


def test_big_buffers_are_stashed_by_the_handful_only() -> None:
    with BufferPool(1 << 20) as pool:
        bufs = pool.acquire_many(20)
        pool.release_many(bufs)
        s = pool.stats()
        assert 0 < s.stashed <= 8
        assert s.core.in_use_blocks == s.stashed


SELF_DEADLOCK = """
import sys, time
from poolalloc import BufferPool, PoolExhausted
pool = BufferPool(64, capacity=2, name="solo", leaks=sys.argv[1])
held = pool.acquire()
viewed = pool.acquire()
view = viewed.view
viewed.release()  # parked: the view holds it
start = time.monotonic()
try:
    pool.acquire()  # the default timeout, but nobody else could ever release
except PoolExhausted as exc:
    print(f"{time.monotonic() - start:.3f}")
    print(exc)
"""


@pytest.mark.parametrize("leaks", ["off", "all"])
def test_a_lone_thread_waiting_for_its_own_leases_fails_at_once(leaks: str) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", SELF_DEADLOCK, leaks],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    elapsed, message = out.split("\n", 1)
    assert float(elapsed) < 5
    assert "this thread holds every block of pool 'solo'" in message
    assert "1 live lease(s), 1 released but held by a live view" in message
    if leaks == "all":
        assert "<string>:5 in <module>" in message  # where `held` was acquired
    else:
        assert "leaks='all'" in message


SELF_DEADLOCK_LOOP = """
from poolalloc import BufferPool, PoolExhausted
pool = BufferPool(64, capacity=50, leaks="all")
held = []
for _ in range(50):
    held.append(pool.acquire())
try:
    pool.acquire()
except PoolExhausted as exc:
    print(exc)
"""


def test_a_lone_thread_s_message_names_each_place_once() -> None:
    # 50 leases from one line: one line with the count, not 50 identical lines
    import subprocess
    import sys

    message = subprocess.run(
        [sys.executable, "-c", SELF_DEADLOCK_LOOP],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "this thread holds every block" in message
    assert message.count("<string>:6 in <module>") == 1
    assert "<string>:6 in <module> (50 leases)" in message


def test_the_default_wait_is_finite() -> None:
    from poolalloc.buffers import DEFAULT_TIMEOUT

    assert 0 < DEFAULT_TIMEOUT < float("inf")
    with BufferPool(64, capacity=1, timeout=0.1) as pool:
        held = acquired_elsewhere(pool)
        start = time.monotonic()
        with pytest.raises(PoolExhausted, match=r"after waiting 0\.1 s"):
            pool.acquire()  # no timeout given: the pool's default
        assert time.monotonic() - start >= 0.09
        held.release()


def test_acquire_many_failure_counts_what_is_out_after_the_hand_back() -> None:
    # the batch took 7 blocks, found the 8th held by a view, and handed the 7 back: its error
    # used to be built before the hand-back and said "7 lease(s) live" to a caller holding none
    with BufferPool(4096, capacity=8) as pool:
        held = pool.acquire()
        view = held.view
        held.release()  # parked until `view` dies
        for timeout in (0, 0.05):
            with pytest.raises(PoolExhausted) as caught:
                pool.acquire_many(8, timeout=timeout)
            message = str(caught.value)
            assert "gave 7 of the 8 leases" in message, message
            assert "now 0 lease(s) live, 1 released but held by a live view" in message, message
            assert "7 lease(s) live" not in message, message
            assert caught.value.errno == errno.ENOSPC
            s = pool.stats()
            assert (s.live, s.parked, s.acquires - s.releases - s.gc_returns) == (0, 1, 0)
        view.release()
        assert pool.outstanding() == 0
