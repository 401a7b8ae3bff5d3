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
        # 300 blocks of 64 KiB peaked at over 19 MiB. What may stay mapped: retain_bytes (empty
        # chunks plus empty slabs kept in their depots), the chunks pinned by this thread's
        # cached blocks (at most half its 4 MiB cache budget per class) and by the one spare
        # slab per class: 2 MiB + three 2 MiB chunks.
        assert stats.mapped_bytes <= (2 << 20) + 3 * (2 << 20)
        assert stats.trims > 0


def test_kept_empty_slabs_count_against_retain_bytes() -> None:
    # Empty slabs beyond one spare per class stay in their depot only within retain_bytes, so
    # with retain_bytes=0 freeing 19 MiB leaves only what this thread's cache pins (at most
    # 32 blocks of 64 KiB) and the spare slab: three 2 MiB chunks at most.
    with SlabPool(retain_bytes=0) as pool:
        blocks = _fill(pool, 300, 64 << 10)
        peak = pool.stats().mapped_bytes
        for b in blocks:
            b.free()
        after = pool.stats()
        assert peak >= 300 * (64 << 10)
        assert after.mapped_bytes <= 3 * (2 << 20)
        assert after.trims > 0


def _slabs(pool: SlabPool, block_size: int) -> int:
    return next(c.slabs for c in pool.class_stats() if c.block_size == block_size)


def test_class_in_use_evicts_idle_slabs_of_other_classes() -> None:
    # An earlier phase leaves the retention budget full of empty 16 KiB slabs; a class in use
    # afterwards (100 live 64 KiB blocks, allocated and freed five times) has those released
    # to keep its own empty slabs, instead of releasing and re-carving its slabs on every
    # swing while the stale ones stay.
    with SlabPool(retain_bytes=4 << 20) as pool:
        blocks = _fill(pool, 300, 16 << 10)
        for b in blocks:
            b.free()
        stale = _slabs(pool, 16 << 10)
        assert stale * (128 << 10) >= 4 << 20  # the budget is full of them
        for _ in range(5):
            swing = [pool.alloc(64 << 10) for _ in range(100)]
            for b in reversed(swing):
                b.free()
        assert _slabs(pool, 16 << 10) < stale // 2
        # 32 blocks cached pin 4 slabs of 8 blocks, one empty slab is the spare, and most of
        # the 4 MiB budget (eight 512 KiB slabs) now holds this class's empty slabs
        assert _slabs(pool, 64 << 10) >= 10
        stats = pool.stats()
        assert stats.in_use_blocks == 0
        pool.check()


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


def test_trim_returns_every_byte_it_unmapped() -> None:
    # With the default retention, the trim's own flush of this thread's cache empties slabs past
    # the bound, which unmap at once: those bytes went back to the OS during trim() too.
    with SlabPool() as pool:
        for b in [pool.alloc(3000) for _ in range(10000)]:
            b.free()
        before = pool.stats()
        released = pool.trim()
        after = pool.stats()
        assert after.mapped_bytes == 0
        assert released == before.mapped_bytes - after.mapped_bytes
        assert released == after.trimmed_bytes - before.trimmed_bytes


def test_buffer_pool_trim_returns_every_byte_it_unmapped() -> None:
    from poolalloc import BufferPool

    with BufferPool(1 << 20) as pool:
        pool.release_many(pool.acquire_many(200))
        before = pool.stats().core
        released = pool.trim()
        after = pool.stats().core
        assert after.mapped_bytes == 0
        assert released == before.mapped_bytes - after.mapped_bytes
