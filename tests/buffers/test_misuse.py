"""Misuse gets a clear exception, nothing is lost, and the counters balance."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from poolalloc import (
    Allocator,
    BufferPool,
    DoubleReleaseError,
    ForeignBufferError,
    LeaseBusyError,
    NumaError,
    PoolClosedError,
    PoolValueError,
)


def test_double_release_raises_and_counts_once() -> None:
    with BufferPool(256) as pool:
        buf = pool.acquire()
        buf.release()
        with pytest.raises(DoubleReleaseError):
            buf.release()
        with pytest.raises(DoubleReleaseError):
            pool.release(buf)
        s = pool.stats()
        assert (s.acquires, s.releases, s.outstanding) == (1, 1, 0)


def test_release_into_another_pool_is_refused_and_keeps_the_lease() -> None:
    with BufferPool(256) as mine, BufferPool(256) as other:
        buf = mine.acquire()
        with pytest.raises(ForeignBufferError):
            other.release(buf)
        with pytest.raises(ForeignBufferError):
            other.release_many([buf])
        assert not buf.released
        assert mine.outstanding() == 1
        mine.release(buf)


def test_release_many_checks_all_before_releasing_any() -> None:
    with BufferPool(256) as mine, Allocator() as other:
        a, b = mine.acquire_many(2)
        stranger = other.alloc(10)
        with pytest.raises(ForeignBufferError):
            mine.release_many([a, stranger, b])
        assert not a.released
        assert not b.released
        mine.release_many([a, b])
        stranger.release()
        with pytest.raises(ForeignBufferError, match=r"expected a poolalloc\.Buffer"):
            mine.release_many([b"not a lease"])


def test_strict_with_block_leaving_a_view_alive_raises_busy() -> None:
    with BufferPool(256, strict=True) as pool:
        with pytest.raises(LeaseBusyError, match="1 view"), pool.acquire() as buf:
            view = buf.view
        assert not buf.released
        del view
        buf.release()
        assert pool.outstanding() == 0


def test_strict_release_with_views_names_the_holders() -> None:
    with BufferPool(256, strict=True) as pool:
        buf = pool.acquire()
        view, arr = buf.view, np.frombuffer(buf, np.uint8)
        with pytest.raises(LeaseBusyError, match="2 view"):
            buf.release()
        with pytest.raises(BufferError):  # LeaseBusyError is a BufferError
            buf.release()
        assert not buf.released
        del view, arr
        buf.release()
        assert pool.outstanding() == 0


def test_default_release_parks_until_the_last_view_dies() -> None:
    with BufferPool(256, capacity=1) as pool:
        buf = pool.acquire()
        keep = buf.view[0:16]
        keep[0] = 42
        buf.release()
        assert buf.released
        assert "parked" in repr(buf)
        s = pool.stats()
        assert (s.live, s.parked, s.outstanding) == (0, 1, 1)
        # the parked block still counts against the capacity: nobody else may get it
        with pytest.raises(MemoryError):
            pool.acquire(timeout=0)
        assert keep[0] == 42
        del keep
        s = pool.stats()
        assert (s.live, s.parked, s.outstanding) == (0, 0, 0)
        pool.acquire(timeout=0).release()


def test_parked_block_survives_view_release_of_parent_only() -> None:
    with BufferPool(64, capacity=1) as pool:
        buf = pool.acquire()
        view = buf.view
        sub = view[8:16]
        view.release()  # raises nothing: `sub` still holds the managed buffer
        buf.release()
        assert pool.stats().parked == 1
        sub.release()
        assert pool.stats().parked == 0


def test_lease_collected_unreleased_returns_its_block() -> None:
    with BufferPool(256, capacity=2) as pool:
        pool.acquire()[0] = 1  # dropped at once, never released
        gc.collect()
        s = pool.stats()
        assert (s.outstanding, s.gc_returns, s.live) == (0, 1, 0)
        assert len(pool.acquire_many(2)) == 2  # and the block is usable again (both dropped)


def test_closed_pool_refuses_new_leases_but_old_ones_stay_valid() -> None:
    pool = BufferPool(128)
    buf = pool.acquire()
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(PoolClosedError):
        pool.acquire()
    with pytest.raises(PoolClosedError):
        pool.acquire_many(2)
    buf[5] = 5
    assert buf[5] == 5
    buf.release()
    assert pool.outstanding() == 0
    assert pool.closed


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"size": 0}, PoolValueError),
        ({"size": -1}, PoolValueError),
        ({"size": 64, "capacity": 0}, PoolValueError),
        ({"size": 64, "alignment": 3}, PoolValueError),
        ({"size": 64, "alignment": 8192}, PoolValueError),
    ],
)
def test_bad_pool_arguments(kwargs: dict[str, int], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        BufferPool(**kwargs)


def test_bad_acquire_arguments() -> None:
    with BufferPool(64) as pool:
        with pytest.raises(TypeError):
            pool.acquire(1, 2)
        with pytest.raises(TypeError):
            pool.acquire(wait=1)
        with pytest.raises(ValueError, match=">= 0"):
            pool._leases.acquire_many(-1)
        with pytest.raises(PoolValueError):
            BufferPool(64, capacity=2).acquire_many(3)


def test_allocator_bad_sizes() -> None:
    with Allocator() as alloc:
        with pytest.raises(PoolValueError):
            alloc.alloc(0)
        with pytest.raises(PoolValueError):
            alloc.alloc(64, alignment=3)
        with pytest.raises(TypeError):
            alloc._leases.acquire()
        assert alloc.outstanding() == 0


def test_release_many_refuses_a_released_or_busy_item_and_releases_none() -> None:
    with BufferPool(64, strict=True) as pool:
        a, b, c = pool.acquire_many(3)
        c.release()
        with pytest.raises(DoubleReleaseError, match="item 1"):
            pool.release_many([a, c, b])
        view = b.view
        with pytest.raises(LeaseBusyError, match="item 1 has 1 view"):
            pool.release_many((a, b))
        assert not a.released
        assert not b.released
        del view
        pool.release_many(iter([a, b]))  # any iterable
        assert pool.outstanding() == 0


@pytest.mark.parametrize("node", [0, "local", None])
def test_numa_placement_is_passed_to_the_core(node: int | str | None) -> None:
    with BufferPool(4096, capacity=4, numa_node=node) as pool:
        pool.acquire().release()
        assert pool.stats().core.numa_node == {0: 0, "local": -2, None: -1}[node]


def test_a_numa_node_that_does_not_exist_is_refused() -> None:
    with pytest.raises(NumaError):
        BufferPool(4096, numa_node=4095)
    with pytest.raises(NumaError):
        Allocator(numa_node=4095)
