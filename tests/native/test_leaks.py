"""memray: creating/closing pools and alloc/free cycles leak nothing measurable."""

from __future__ import annotations

import pytest

from poolalloc import SlabPool


@pytest.mark.leaks
@pytest.mark.limit_leaks("1 MB")
def test_pool_create_close_cycles() -> None:
    for _ in range(1000):
        pool = SlabPool()
        pool.alloc(100).free()
        pool.close()
        del pool


@pytest.mark.leaks
@pytest.mark.limit_leaks("1 MB")
def test_alloc_free_cycles() -> None:
    with SlabPool() as pool:
        for i in range(20000):
            b = pool.alloc(64 + (i % 5000))
            b.free()
        pool.trim()
