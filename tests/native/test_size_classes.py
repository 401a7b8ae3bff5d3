"""Size classes: edges, alignment, bad arguments, huge requests and the waste bound."""

from __future__ import annotations

import pytest

from poolalloc import PoolOverflowError, PoolValueError, SlabPool, size_class_of, size_classes

CLASSES = [bs for bs, _ in size_classes()]
EDGES = sorted({n + d for n in CLASSES for d in (-1, 0, 1) if n + d > 0})


def _class_size(size: int, alignment: int = 64) -> int:
    cls = size_class_of(size, alignment)
    assert cls is not None
    return CLASSES[cls]


@pytest.mark.parametrize("size", EDGES[:-1])
def test_edges_get_the_smallest_fitting_class(size: int) -> None:
    got = _class_size(size)
    assert got >= size
    smaller = [c for c in CLASSES if c < got]
    assert not smaller or smaller[-1] < size


def test_edges_allocate_with_the_class_size(pool: SlabPool) -> None:
    for size in EDGES:
        block = pool.alloc(size)
        expected = _class_size(size) if size <= CLASSES[-1] else None
        if expected is not None:
            assert block.block_size == expected
        else:
            assert block.block_size >= size
        assert block.address % 64 == 0
        if block.block_size >= 4096:
            assert block.address % 4096 == 0
        block.free()


@pytest.mark.parametrize("alignment", [1, 2, 8, 64, 128, 256, 512, 1024, 2048, 4096])
@pytest.mark.parametrize("size", [1, 100, 4095, 4097, 70000, 2 << 20])
def test_alignment_is_honoured(pool: SlabPool, size: int, alignment: int) -> None:
    blocks = [pool.alloc(size, alignment) for _ in range(3)]
    for b in blocks:
        assert b.address % max(alignment, 64) == 0
        assert b.block_size >= size
    for b in blocks:
        b.free()


@pytest.mark.parametrize("alignment", [0, 3, 48, 100, 8192, 1 << 20])
def test_bad_alignment(pool: SlabPool, alignment: int) -> None:
    with pytest.raises(PoolValueError):
        pool.alloc(64, alignment)


@pytest.mark.parametrize("size", [0, -1])
def test_bad_size(pool: SlabPool, size: int) -> None:
    with pytest.raises(PoolValueError):
        pool.alloc(size)


@pytest.mark.parametrize("size", [1 << 64, 2**64 - 1, 1 << 62])
def test_overflowing_size(pool: SlabPool, size: int) -> None:
    with pytest.raises(PoolOverflowError):
        pool.alloc(size)


def test_huge_request_gets_its_own_mapping(pool: SlabPool) -> None:
    before = pool.stats()
    block = pool.alloc(3 << 20)
    block.write((3 << 20) - 4, b"tail")
    assert block.read((3 << 20) - 4, 4) == b"tail"
    mid = pool.stats()
    assert mid.huge_allocs == before.huge_allocs + 1
    assert mid.mapped_bytes >= before.mapped_bytes + (3 << 20)
    block.free()
    assert pool.stats().mapped_bytes == before.mapped_bytes
    assert size_class_of(3 << 20) is None


def _worst_waste(lo: int, hi: int) -> float:
    """Largest (block - request) / block over requests in (lo, hi], sizes as the pool rounds."""
    worst = 0.0
    for i, bs in enumerate(CLASSES):
        prev = CLASSES[i - 1] if i else 0
        first = max(prev + 1, lo + 1)
        if first <= min(bs, hi):
            worst = max(worst, (bs - first) / bs)
    return worst


# The bound stated in docs/design.md ("Size classes"): per range of request sizes.
STATED_BOUNDS = [
    ((0, 64), 63 / 64),
    ((64, 192), 63 / 128),
    ((192, 4096), 0.25),
    ((4096, 12288), 4095 / 8192),
    ((12288, 1 << 20), 0.25),
]


@pytest.mark.parametrize(("span", "bound"), STATED_BOUNDS)
def test_internal_fragmentation_bound(span: tuple[int, int], bound: float) -> None:
    worst = _worst_waste(*span)
    assert worst <= bound + 1e-12
    # the stated bound is the exact worst case, not a loose one
    assert worst == pytest.approx(bound, abs=0.02)


def test_batch_size_overflow(pool: SlabPool) -> None:
    from poolalloc import _ffi

    with pytest.raises(PoolOverflowError):
        _ffi.alloc_batch(pool._handle, 1 << 62, 64, 8)
    assert pool.stats().in_use_blocks == 0


def test_batch_is_all_or_nothing() -> None:
    from poolalloc import PoolExhausted, _ffi

    with SlabPool(max_bytes=2 << 20) as pool:
        with pytest.raises(PoolExhausted):
            _ffi.alloc_batch(pool._handle, 64 << 10, 64, 100)
        assert pool.stats().in_use_blocks == 0
        addresses = _ffi.alloc_batch(pool._handle, 64 << 10, 64, 10)
        assert len(set(addresses)) == 10
        assert _ffi.free_batch(addresses) == 10
