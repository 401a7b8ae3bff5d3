"""Fixtures of the native allocator tests: every pool made by a test ends with nothing out."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import budget
import pytest

from poolalloc import _ffi
from poolalloc.slab import SlabPool, live_pools

UNDER_ASAN = os.environ.get("PA_UNDER_ASAN", "") not in ("", "0")


@pytest.fixture
def stress_seconds() -> float:
    """Scale of stress tests (env PA_TEST_SECONDS, default 1)."""
    return budget.seconds()


@pytest.fixture(autouse=True)
def _pools_balanced() -> Iterator[None]:
    before = set(live_pools)
    yield
    for pool in set(live_pools) - before:
        if pool.outstanding():
            gc.collect()  # blocks kept alive only by a reference cycle (a traceback) go now
        assert not pool.outstanding(), f"blocks still out: {pool.outstanding()[:5]}"
        stats = pool.stats()
        assert stats.in_use_blocks == 0, stats
        assert stats.allocs == stats.frees, stats


@pytest.fixture(autouse=True)
def _no_faults_left() -> Iterator[None]:
    yield
    _ffi.fault_set(_ffi.FAULT_MAP, 0, 0)
    _ffi.fault_set(_ffi.FAULT_BIND, 0, 0)
    _ffi.numa_fake(0, [])


@pytest.fixture
def pool() -> Iterator[SlabPool]:
    p = SlabPool()
    yield p
    p.close()
