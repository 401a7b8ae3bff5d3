"""What a careless or hostile caller can do from Python: each gets a clear error, nothing is lost,
nothing crashes, and the counters balance."""

from __future__ import annotations

import asyncio
import copy
import errno
import pickle
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

from poolalloc import (
    Allocator,
    Buffer,
    BufferPool,
    DoubleReleaseError,
    ForeignBufferError,
    LeaseReleasedError,
    ObjectPool,
    PoolExhausted,
    PoolValueError,
    SlabPool,
)
from poolalloc.errors import CorruptionError, PoolMemoryError, PoolOverflowError, error_for
from poolalloc.net.sockets import recvmsg_into

# ---- internal classes cannot be built or rewired from Python ----


def test_lease_layer_cannot_be_built_with_a_raw_address() -> None:
    with BufferPool(64) as pool:
        lease = pool.acquire()
        layer_type: Any = type(lease.pool)
        with pytest.raises(TypeError, match="internal"):
            layer_type(0x1000, None, 64, 64, 0)
        with pytest.raises(TypeError, match="internal"):
            layer_type(object(), 0x1000, None, 64, 64, 0)
        with pytest.raises(TypeError, match="internal"):
            layer_type.__new__(layer_type, 0x1000)
        lease.release()


def test_lease_layer_token_is_handed_out_once() -> None:
    from poolalloc import _lease

    with pytest.raises(RuntimeError, match="claimed"):
        _lease._claim_token()


def test_lease_layer_state_is_read_only() -> None:
    with BufferPool(64, capacity=1) as pool:
        lease = pool.acquire()
        layer: Any = lease.pool
        for name, value in (("waiters", 5), ("capacity", 10), ("used", 0), ("closed", 1)):
            with pytest.raises(AttributeError):
                setattr(layer, name, value)
        assert pool.stats().waiters == 0
        lease.release()


# ---- arguments: named, with the type wanted ----


@pytest.mark.parametrize(
    ("make", "exc", "pattern"),
    [
        (lambda: BufferPool(True), TypeError, "size must be an int, not bool"),  # type: ignore[arg-type]
        (lambda: BufferPool(64.0), TypeError, "size must be an int, not float"),  # type: ignore[arg-type]
        (lambda: BufferPool(64, capacity=True), TypeError, "capacity must be an int, not bool"),
        (lambda: Allocator(capacity=True), TypeError, "capacity must be an int, not bool"),
        (lambda: BufferPool(64, alignment=64.0), TypeError, "alignment must be an int"),  # type: ignore[arg-type]
        (lambda: BufferPool(64, timeout="1"), TypeError, "timeout must be a number"),  # type: ignore[arg-type]
        (lambda: BufferPool(64, timeout=-1), PoolValueError, "timeout must be >= 0"),
        (lambda: BufferPool(64, leaks=2), TypeError, "level must be one of .*, not int"),  # type: ignore[arg-type]
        (lambda: Allocator(leaks=b"all"), TypeError, "level must be one of .*, not bytes"),  # type: ignore[arg-type]
    ],
)
def test_bad_constructor_arguments_name_the_argument(make: Any, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        make()


def test_bad_timeouts_name_the_argument() -> None:
    with BufferPool(64, capacity=1) as pool, Allocator(capacity=4096) as alloc:
        held = pool.acquire()
        for bad in ("1", True, [1]):
            with pytest.raises(TypeError, match=r"acquire\(\): timeout must be a number"):
                pool.acquire(timeout=bad)
            with pytest.raises(TypeError, match=r"alloc\(\): timeout must be a number"):
                alloc.alloc(64, timeout=bad)
        with pytest.raises(PoolValueError, match="nan"):
            pool.acquire(timeout=float("nan"))
        for negative in (-1, -0.5):  # not "do not wait": a wait is never negative
            with pytest.raises(PoolValueError, match=r"acquire\(\): timeout must be >= 0"):
                pool.acquire(timeout=negative)
            with pytest.raises(PoolValueError, match=r"alloc\(\): timeout must be >= 0"):
                alloc.alloc(64, timeout=negative)
        held.release()


def test_a_timeout_past_every_float_waits_without_limit_at_capacity() -> None:
    # the C check let 10**400 through, and the wait then raised OverflowError from float()
    huge = 10**400
    with BufferPool(64, capacity=1) as pool, Allocator(capacity=4096) as alloc:
        cases = [
            (lambda: pool.acquire(timeout=huge), pool.acquire()),
            (lambda: alloc.alloc(4096, timeout=huge), alloc.alloc(4096)),
        ]
        for take, held in cases:
            timer = threading.Timer(0.2, held.release)
            timer.start()
            start = time.monotonic()
            with take() as buf:
                assert buf.nbytes in (64, 4096)
            assert time.monotonic() - start >= 0.15
            timer.join()
        assert pool.outstanding() == alloc.outstanding() == 0


def test_sizes_too_long_to_print_and_capacities_past_a_ssize_t_are_pool_errors() -> None:
    # str() of an int past 4300 digits raises ValueError: the messages about such a size did,
    # instead of the pool error; a capacity past a ssize_t was a bare OverflowError
    huge = 10**5000
    with pytest.raises(PoolOverflowError, match="an int of 16610 bits"):
        BufferPool(huge)
    with pytest.raises(PoolOverflowError, match="an int of 16610 bits"):
        SlabPool().alloc(huge)
    with BufferPool(64) as pool, pytest.raises(PoolOverflowError, match="an int of 16610 bits"):
        pool.acquire_many(huge)
    with Allocator() as alloc:
        with pytest.raises(PoolOverflowError, match="an int too long to print"):
            alloc.alloc(huge)
        with pytest.raises(PoolValueError, match=r"alignment.*an int too long to print"):
            alloc.alloc(100, huge)
    for capacity in (2**70, np.uint64(2**64 - 1)):
        with pytest.raises(PoolOverflowError, match="capacity must be <="):
            BufferPool(64, capacity=capacity)  # type: ignore[arg-type]
        with pytest.raises(PoolOverflowError, match="capacity must be <="):
            Allocator(capacity=capacity)  # type: ignore[arg-type]
    # an integer of numpy's is an int here too (decay_ms said "must be an int, not int64")
    with BufferPool(64, decay_ms=np.int64(5)) as pool, Allocator(decay_ms=np.int64(5)):  # type: ignore[arg-type]
        assert pool.acquire().release() is None


def test_a_timeout_past_every_float_is_no_limit_and_a_negative_one_is_refused() -> None:
    # float(10**400) raises OverflowError, which every pool leaked as it was
    huge = 10**400
    with BufferPool(64, capacity=1, timeout=huge) as pool, Allocator(timeout=huge) as alloc:
        with pool.acquire(timeout=huge) as buf:
            assert buf.nbytes == 64
        with alloc.alloc(100, timeout=huge) as buf:
            assert buf.nbytes == 100
        assert asyncio.run(alloc.alloc_async(100, timeout=huge)).release() is None
        assert len(pool.acquire_many(1, timeout=huge)) == 1
        for call in (
            lambda: pool.acquire(timeout=-huge),
            lambda: alloc.alloc(100, timeout=-huge),
            lambda: asyncio.run(alloc.alloc_async(100, timeout=-huge)),
            lambda: BufferPool(64, timeout=-huge),
        ):
            with pytest.raises(PoolValueError, match=r"timeout must be >= 0.*not a negative int"):
                call()
        assert alloc.outstanding() == 0


@pytest.mark.parametrize("huge", [2**63, 2**64, -(2**63) - 1], ids=["2**63", "2**64", "-2**63-1"])
def test_alloc_arguments_past_the_c_range_are_pool_errors(huge: int) -> None:
    # they used to leak a bare OverflowError from the argument parser ("Python int too large
    # to convert to C ssize_t"), where BufferPool(alignment=...) says PoolValueError
    with Allocator() as alloc, Allocator(capacity=1 << 20) as bounded:
        for pool in (alloc, bounded):
            with pytest.raises(PoolValueError, match=f"alignment must be a power of two.*{huge}"):
                pool.alloc(100, huge)
            with pytest.raises(PoolValueError, match=f"alignment must be a power of two.*{huge}"):
                pool.alloc(100, alignment=huge)
            with pytest.raises(PoolValueError, match=f"alignment must be a power of two.*{huge}"):
                asyncio.run(pool.alloc_async(100, huge))
            error, says = (
                (PoolOverflowError, "address space") if huge > 0 else (PoolValueError, ">= 1")
            )
            with pytest.raises(error, match=says):
                pool.alloc(huge)
            with pytest.raises(error, match=says):
                asyncio.run(pool.alloc_async(huge))
            assert pool.outstanding() == 0
    with pytest.raises(PoolValueError, match="alignment"):
        BufferPool(64, alignment=huge)
    with pytest.raises(PoolValueError if huge < 2**64 else PoolOverflowError, match="alignment"):
        SlabPool().alloc(100, huge)


def test_alloc_refuses_a_bool_or_a_float_as_a_size_as_alloc_async_does() -> None:
    with Allocator() as alloc:
        for call in (alloc.alloc, lambda *a: asyncio.run(alloc.alloc_async(*a))):
            with pytest.raises(TypeError, match="nbytes must be an int, not bool"):
                call(True)
            with pytest.raises(TypeError, match="alignment must be an int, not float"):
                call(100, 64.0)
            # an integer of numpy's is an integer to both (alloc_async refused it)
            with call(np.int64(100), np.int64(128)) as buf:
                assert buf.nbytes == 100
        assert alloc.outstanding() == 0
    with SlabPool() as slabs:  # it took True (and numpy's True_) as a 1-byte request
        for flag in (True, False, np.True_, np.False_):
            with pytest.raises(PoolValueError, match="size must be an int, not bool"):
                slabs.alloc(flag)  # type: ignore[arg-type]
        with pytest.raises(PoolValueError, match="size must not be negative: -1"):
            slabs.alloc(np.int64(-1))  # type: ignore[arg-type]  # said "not int64"
        block = slabs.alloc(np.int64(100))  # type: ignore[arg-type]
        assert block.nbytes == 100
        block.free()
        slabs.alloc(1).free()  # the sizes beside them are served as before
        with pytest.raises(PoolValueError):
            slabs.alloc(0)
        for flag in (True, np.True_):  # an alignment of True was taken as 1
            with pytest.raises(PoolValueError, match="alignment must be an int, not bool"):
                slabs.alloc(64, flag)  # type: ignore[arg-type]
        slabs.alloc(64, np.int64(128)).free()  # type: ignore[arg-type]
        # an array has no one truth: its comparison with the default raised ValueError
        with pytest.raises(PoolValueError, match="alignment must be an int, not ndarray"):
            slabs.alloc(64, np.array([64, 64]))  # type: ignore[arg-type]
        assert slabs.stats().in_use_blocks == 0


def test_acquire_many_refuses_what_no_batch_can_be_with_pool_errors() -> None:
    with BufferPool(4096) as pool:  # unbounded: only the count itself can be wrong
        with pytest.raises(PoolValueError, match="n must be >= 0"):
            pool.acquire_many(-1)
        for n in (2**40, 2**62):
            with pytest.raises(PoolOverflowError, match="more than an address space holds"):
                pool.acquire_many(n)
        assert pool.acquire_many(0) == []
        assert pool.outstanding() == 0


def test_acquire_many_of_more_than_the_machine_holds_fails_at_once() -> None:
    # Block by block, such a batch maps and touches memory until the kernel says no, seconds
    # (or an OOM kill) later; its size alone says it can never be had.
    from poolalloc._memory import memory_limit as _memory_limit

    size = 1 << 20
    with BufferPool(size) as pool:
        n = _memory_limit() // size + 1
        start = time.monotonic()
        with pytest.raises(PoolMemoryError, match="more than this machine's memory and swap"):
            pool.acquire_many(n)
        assert time.monotonic() - start < 1.0
        assert pool.outstanding() == 0
        assert pool.stats().core.mapped_bytes == 0  # nothing was mapped for it
        assert len(pool.acquire_many(3)) == 3  # a batch that fits is served as before


def test_a_single_block_of_more_than_the_machine_holds_is_refused_at_once() -> None:
    # Chunks are mapped without reserving memory: BufferPool(1 << 46).acquire() handed out a
    # 64 TiB lease and Allocator().alloc(1 << 40) a 1 TiB one, and the first writes across
    # them ended in the OOM killer instead of an exception.
    from poolalloc._memory import machine_memory as _machine_memory
    from poolalloc._memory import memory_limit as _memory_limit

    too_big = _memory_limit() + 1
    with pytest.raises(PoolMemoryError, match="more than this machine's memory and swap"):
        BufferPool(too_big)
    too_big = _machine_memory() + 1
    for size in ((1 << 47) + 1, 2**63, 2**64):
        with pytest.raises(PoolOverflowError, match="more than an address space holds"):
            BufferPool(size)
    with Allocator() as alloc:
        # past an address space: an overflow, as SlabPool and BufferPool say, not a shortage
        # of memory, nor of capacity
        for size in ((1 << 47) + 1, 2**62):
            for pool in (alloc, Allocator(capacity=1 << 20)):
                with pytest.raises(PoolOverflowError, match="more than an address space holds"):
                    pool.alloc(size)
                with pytest.raises(PoolOverflowError, match="more than an address space holds"):
                    asyncio.run(pool.alloc_async(size))
        with pytest.raises(PoolMemoryError, match="more than this machine's memory and swap"):
            alloc.alloc(too_big)
        with pytest.raises(PoolMemoryError, match="more than this machine's memory"):
            asyncio.run(alloc.alloc_async(too_big))
        assert alloc.outstanding() == 0
        assert alloc.stats().core.mapped_bytes == 0  # nothing was mapped for them
        with alloc.alloc(1 << 20) as buf:  # a request that fits is served as before
            assert buf.nbytes == 1 << 20
    with SlabPool() as slabs:
        with pytest.raises(PoolMemoryError, match="more than this machine's memory and swap"):
            slabs.alloc(too_big)
        # an integer of numpy's is an integer: it passed the check as no int (and was served)
        with pytest.raises(PoolMemoryError, match="more than this machine's memory and swap"):
            slabs.alloc(np.int64(too_big))  # type: ignore[arg-type]
        with pytest.raises(PoolOverflowError, match="more than an address space holds"):
            slabs.alloc(1 << 60)
        assert slabs.stats().mapped_bytes == 0


def test_acquire_many_heeds_an_address_space_limit_set_after_the_first_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RLIMIT_AS is read at each batch: a process may lower it while it runs. The limit is
    # given through getrlimit rather than set (under AddressSanitizer the process already maps
    # more than any limit below the machine's memory could allow).
    import poolalloc._memory

    with BufferPool(1 << 20) as pool:
        pool.release_many(pool.acquire_many(4))  # before the limit
        limit = 1 << 30
        monkeypatch.setattr(poolalloc._memory.resource, "getrlimit", lambda which: (limit, limit))
        with pytest.raises(PoolMemoryError, match=r"acquire_many\(2048\).*memory limit"):
            pool.acquire_many(2048)  # 2 GiB
        assert pool.outstanding() == 0
        pool.release_many(pool.acquire_many(4))  # what fits is still served


def test_releasing_something_that_is_not_a_lease_is_a_foreign_buffer_error() -> None:
    with BufferPool(64) as pool:
        obj_pool = ObjectPool(list)
        obj_lease = obj_pool.acquire()
        for stranger in (bytearray(64), b"x", obj_lease, None):
            with pytest.raises(ForeignBufferError, match=r"expected a poolalloc\.Buffer"):
                pool.release(stranger)  # type: ignore[arg-type]
        obj_lease.release()


def test_error_messages_are_our_own_words_not_the_c_library_text() -> None:
    exc = error_for(errno.EILSEQ, "release")
    assert isinstance(exc, CorruptionError)
    assert str(exc) == "release: memory corruption detected (canary or poison overwritten)"
    assert "multibyte" not in str(exc)
    assert str(error_for(errno.ENOSPC)) == "the pool is at its capacity"


# ---- requests that can never fit ----


def test_allocations_that_can_never_fit_fail_at_once_and_say_why() -> None:
    with Allocator(capacity=1000) as alloc:
        with pytest.raises(PoolValueError, match=r"block is 1024 bytes.*capacity.*1000 bytes"):
            alloc.alloc(1000)
        assert alloc.stats().used == 0
        with alloc.alloc(500) as small:  # a smaller class does fit
            assert small.nbytes == 500
    with Allocator(capacity=1 << 20) as alloc:
        with pytest.raises(PoolValueError, match=r"alloc\(2097152\): more than the capacity"):
            alloc.alloc(2 << 20, timeout=30)
        s = alloc.stats()
        assert (s.used, s.live, s.waiters) == (0, 0, 0)


def test_async_allocations_that_can_never_fit_fail_at_once() -> None:
    import asyncio

    async def main() -> None:
        with Allocator(capacity=1000) as alloc, pytest.raises(PoolValueError, match="never be"):
            await alloc.alloc_async(1000, timeout=30)

    asyncio.run(asyncio.wait_for(main(), 10))


# ---- adapters and batches: all or nothing ----


def test_recvmsg_into_gives_back_the_leases_it_took_when_it_fails() -> None:
    a, b = socket.socketpair()
    with BufferPool(256, capacity=3) as pool:
        mine = pool.acquire()
        a.send(b"x" * 600)
        got = recvmsg_into(b, pool, 3, timeout=0)  # reads into the two there are, no wait
        assert got is not None
        assert [n for _, n in got] == [256, 256]
        with pytest.raises(PoolExhausted):  # all 3 out: not even a first lease
            recvmsg_into(b, pool, 3, timeout=0)
        s = pool.stats()
        assert (s.live, s.gc_returns, s.acquires - s.releases) == (3, 0, 3)
        for lease in [mine, *(lease for lease, _ in got)]:
            lease.release()
        b.close()
        # the read itself fails: every lease it took goes back
        with pytest.raises(OSError, match="Bad file descriptor"):
            recvmsg_into(b, pool, 3, timeout=0)
        s = pool.stats()
        assert (s.live, s.gc_returns, s.acquires - s.releases) == (0, 0, 0)
    a.close()


def test_release_many_refuses_duplicates_and_releases_none() -> None:
    with BufferPool(64) as pool:
        a, b = pool.acquire_many(2)
        with pytest.raises(DoubleReleaseError, match="item 2"):
            pool.release_many([a, b, a])
        assert (a.released, b.released) == (False, False)
        assert pool.stats().live == 2
        pool.release_many([a, b])
        assert pool.stats().live == 0


def test_release_many_releases_every_lease_even_when_a_canary_check_fails() -> None:
    with BufferPool(64, debug=True) as pool:
        a, b, c = pool.acquire_many(3)
        b_raw = b.view.cast("B")
        addr = b.address
        assert addr
        # write one byte past the end of b (inside the canary), through ctypes
        import ctypes

        ctypes.memset(addr + 64, 0xEE, 1)
        del b_raw
        with pytest.raises(CorruptionError, match="canary"):
            pool.release_many([a, b, c])
        assert (a.released, b.released, c.released) == (True, True, True)
        s = pool.stats()
        assert (s.live, s.acquires - s.releases - s.gc_returns) == (0, 0)


# ---- leases of either pool cannot be duplicated ----


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, pickle.dumps])
def test_leases_refuse_to_be_copied_or_pickled(duplicate: Any) -> None:
    pool = ObjectPool(list, max_size=1)
    lease = pool.acquire()
    with pytest.raises(TypeError, match="cannot be"):
        duplicate(lease)
    lease.release()
    assert pool.stats().in_use == 0
    with BufferPool(64) as bufs:
        buf = bufs.acquire()
        with pytest.raises(TypeError):
            duplicate(buf)
        buf.release()


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, pickle.dumps])
def test_blocks_and_pools_refuse_to_be_copied_or_pickled(duplicate: Any) -> None:
    # a copied Block freed the block's next owner; a copied pool was a second object over one
    # native pool (or a half-shared ObjectPool that refused its twin's leases)
    with SlabPool() as slabs:
        block = slabs.alloc(64)
        with pytest.raises(TypeError, match="Block cannot be"):
            duplicate(block)
        block.free()
        for pool in (slabs, BufferPool(64), Allocator(), ObjectPool(list)):
            with pytest.raises(TypeError, match=f"{type(pool).__name__} cannot be"):
                duplicate(pool)
            if pool is not slabs:
                pool.close()
        assert slabs.stats().in_use_bytes == 0


# ---- the documented invariants hold when leases are collected without release ----


def test_lease_invariants_hold_after_garbage_collected_leases() -> None:
    import gc

    with BufferPool(64, capacity=4) as pool, Allocator(capacity=1 << 16) as alloc:
        for source in (pool.acquire, lambda: alloc.alloc(100)):
            kept = source()
            source()  # dropped at once: collected without release()
            gc.collect()
            for owner in (pool, alloc):
                s = owner.stats()
                assert s.acquires - s.releases - s.gc_returns == s.live
                assert s.outstanding == s.live + s.parked
            kept.release()
        assert (pool.stats().gc_returns, alloc.stats().gc_returns) == (1, 1)


# ---- Python code run in the middle of a lease's own method ----


@pytest.mark.parametrize("where", ["read key", "write key", "write value"])
def test_an_index_that_releases_the_lease_is_refused_not_followed(where: str) -> None:
    # The key's (or the value's) __index__ runs after the lease was found live; it released the
    # lease, whose block went back: the byte access then read or wrote a block that was gone.
    with BufferPool(64) as pool:
        buf = pool.acquire()

        class Releasing:
            def __index__(self) -> int:
                buf.release()
                return 0

        def touch() -> None:
            if where == "read key":
                buf[Releasing()]  # type: ignore[index]
            elif where == "write key":
                buf[Releasing()] = 1  # type: ignore[index]
            else:
                buf[0] = Releasing()  # type: ignore[assignment]

        with pytest.raises(LeaseReleasedError):
            touch()
        s = pool.stats()
        assert (s.live, s.outstanding, s.acquires, s.releases) == (0, 0, 1, 1)


# ---- subclasses ----


def test_a_subclass_override_of_acquire_or_alloc_is_called() -> None:
    # The pools put the C methods on each instance for speed; that hid a subclass's override.
    calls: list[str] = []

    class Counted(BufferPool):
        def acquire(self, timeout: float | None = None) -> Buffer:
            calls.append("acquire")
            return super().acquire(timeout)

        def try_acquire(self) -> Buffer | None:
            calls.append("try_acquire")
            return super().try_acquire()

    class CountedAlloc(Allocator):
        def alloc(
            self, nbytes: int, alignment: int = 64, *, timeout: float | None = None
        ) -> Buffer:
            calls.append("alloc")
            return super().alloc(nbytes, alignment, timeout=timeout)

    with Counted(64, capacity=2) as pool, CountedAlloc() as alloc:
        for lease in (pool.acquire(), pool.try_acquire(), alloc.alloc(100)):
            assert lease is not None
            lease.release()
    assert calls == ["acquire", "try_acquire", "alloc"]
    with BufferPool(64) as plain, Allocator() as plain_alloc:  # the fast path stays for the rest
        assert plain.acquire == plain._leases.acquire
        assert plain_alloc.alloc == plain_alloc._leases.alloc
