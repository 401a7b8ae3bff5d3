"""Memory goes back: trim and close unmap, retention is bounded, RSS follows."""

from __future__ import annotations

import os

import pytest

from poolalloc import SlabPool


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _fill(pool: SlabPool, n: int, size: int) -> list:  # type: ignore[type-arg]
    blocks = [pool.alloc(size) for _ in range(n)]
    for b in blocks:
        b.write(0, b"\xff" * size)  # touch every page
    return blocks


def test_trim_unmaps_empty_slabs() -> None:
    with SlabPool(retain_bytes=64 << 20) as pool:
        blocks = _fill(pool, 200, 64 << 10)
        full = pool.stats().mapped_bytes
        assert full >= 200 * (64 << 10)
        for b in blocks:
            b.free()
        assert pool.stats().mapped_bytes == full  # retained, within the budget
        released = pool.trim()
        after = pool.stats()
        assert released > 0
        assert after.mapped_bytes == full - released
        assert after.mapped_bytes <= 2 << 20
        assert after.trimmed_bytes >= released


def test_retention_is_bounded_without_trim() -> None:
    with SlabPool(retain_bytes=2 << 20) as pool:
        blocks = _fill(pool, 300, 64 << 10)
        for b in blocks:
            b.free()
        stats = pool.stats()
        # at most the retained chunks plus one kept slab per class stay mapped
        assert stats.mapped_bytes <= (2 << 20) + (4 << 20)
        assert stats.trims > 0


def test_close_unmaps_everything_when_empty() -> None:
    pool = SlabPool()
    blocks = _fill(pool, 100, 8192)
    for b in blocks:
        b.free()
    pool.close()
    assert pool.stats().mapped_bytes == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.skipif(
    os.environ.get("PA_UNDER_ASAN", "") not in ("", "0"),
    reason="ASan keeps the shadow pages of unmapped memory resident, so RSS cannot drop",
)
def test_rss_drops_after_trim() -> None:
    with SlabPool() as pool:
        base = _rss_bytes()
        blocks = _fill(pool, 400, 128 << 10)  # ~50 MiB touched
        grown = _rss_bytes()
        assert grown - base >= 40 << 20
        for b in blocks:
            b.free()
        pool.trim()
        assert _rss_bytes() - base <= 12 << 20
