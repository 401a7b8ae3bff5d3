"""debug=True / POOLALLOC_DEBUG=1: unpooled blocks, canaries checked on release."""

from __future__ import annotations

import ctypes

import pytest

from poolalloc import Allocator, BufferPool, CorruptionError


def test_debug_pool_is_unpooled_and_checks_canaries() -> None:
    with BufferPool(100, debug=True) as pool:
        for _ in range(3):
            pool.acquire().release()
        s = pool.stats()
        assert s.stashed == 0
        assert s.refills == 0
        assert s.core.debug & 4
        assert s.core.debug & 2
        assert s.core.allocs == s.core.frees == 3
        buf = pool.acquire()
        ctypes.memset(buf.address + buf.nbytes, 0x5A, 1)  # one byte past the end
        with pytest.raises(CorruptionError, match="canary"):
            buf.release()
        s = pool.stats()
        assert s.outstanding == 0
        assert s.releases == 4


def test_allocator_debug_checks_canaries_too() -> None:
    with Allocator(debug=True) as alloc:
        buf = alloc.alloc(1000)
        ctypes.memset(buf.address + 1000, 0, 4)
        with pytest.raises(CorruptionError):
            buf.release()
        assert alloc.outstanding() == 0


def test_environment_turns_debug_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLALLOC_DEBUG", "1")
    with BufferPool(64) as pool:
        pool.acquire().release()
        s = pool.stats()
        assert s.stashed == 0
        assert s.core.debug & 4
