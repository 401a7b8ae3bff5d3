"""Each misuse reaches Python as the exception errors.py maps its C code to."""

from __future__ import annotations

import errno
import sys
import threading

import pytest

from poolalloc import (
    CorruptionError,
    DoubleReleaseError,
    ForeignBufferError,
    NumaError,
    PoolClosedError,
    PoolExhausted,
    PoolMemoryError,
    PoolOverflowError,
    PoolValueError,
    SlabPool,
    _ffi,
)
from poolalloc.errors import check_rc


def test_double_free_through_the_thread_cache(pool: SlabPool) -> None:
    address = _ffi.alloc(pool._handle, 200)
    _ffi.free(address)
    with pytest.raises(DoubleReleaseError) as info:
        _ffi.free(address)
    assert info.value.errno == errno.EALREADY


def test_double_free_after_the_cache_flushed(pool: SlabPool) -> None:
    keeper = pool.alloc(200)  # keeps the slab mapped through the trim
    address = _ffi.alloc(pool._handle, 200)
    _ffi.free(address)
    pool.trim()  # the block goes back to its slab: the bitmap now says it is free
    with pytest.raises(DoubleReleaseError):
        _ffi.free(address)
    keeper.free()
    pool.trim()
    with pytest.raises(ForeignBufferError):  # slab gone: the address is no longer ours
        _ffi.free(address)


def test_block_double_free(pool: SlabPool) -> None:
    block = pool.alloc(10)
    block.free()
    with pytest.raises(DoubleReleaseError):
        block.free()


def test_foreign_pointers(pool: SlabPool) -> None:
    buf = bytearray(4096)
    for address in (1, 4096, id(buf), id(pool), (1 << 47) - 64, 1 << 63):
        with pytest.raises(ForeignBufferError):
            _ffi.free(address)


def test_interior_pointer(pool: SlabPool) -> None:
    block = pool.alloc(256)
    with pytest.raises(ForeignBufferError):
        _ffi.free(block.address + 8)
    with pytest.raises(ForeignBufferError):
        _ffi.free(block.address + 64)  # inside the 256-byte block, a 64-aligned address
    # Odd addresses, up to the last byte of the block's 64 KiB slab page: refused before the
    # free reads the word a block starts with (a misaligned load, or one past the page, that
    # UBSan in `make test-asan` reports).
    for address in (block.address + 1, block.address + 255, block.address | 0xFFFF):
        with pytest.raises(ForeignBufferError):
            _ffi.free(address)
    block.free()


@pytest.mark.parametrize("size", [192, 320, 448, 3072])
def test_slab_tail_is_not_a_block(pool: SlabPool, size: int) -> None:
    """A multiple of the block size past a 64 KiB slab's last block is refused as foreign.

    A free of another block of the slab goes first, so that the free of the tail finds the
    slab through the per-thread memo (the hit path) as well as through the registry.
    """
    _, tail = _blocks_and_tail(size)
    first = _ffi.alloc(pool._handle, size)
    other = _ffi.alloc(pool._handle, size)
    base = first & ~0xFFFF
    assert other & ~0xFFFF == base
    address = base + tail
    assert address % 64 == 0
    assert (address - base) % size == 0
    for _ in range(2):
        with pytest.raises(ForeignBufferError):
            _ffi.free(address)
    _ffi.free(other)
    with pytest.raises(ForeignBufferError):
        _ffi.free(address)
    _ffi.free(first)
    with pytest.raises(DoubleReleaseError):
        _ffi.free(first)


def _blocks_and_tail(size: int) -> tuple[int, int]:
    """Blocks per slab and the offset of the first byte past the last block."""
    cls = _ffi.size_class(size)
    assert cls is not None
    block, slab = _ffi.class_info(cls)
    assert block == size
    assert slab == 1 << 16
    return slab // block, slab // block * block


def test_closed_pool_refuses_but_old_blocks_stay_valid() -> None:
    pool = SlabPool()
    block = pool.alloc(1000)
    block.write(0, b"kept")
    pool.close()
    with pytest.raises(PoolClosedError):
        pool.alloc(10)
    assert block.read(0, 4) == b"kept"
    assert pool.stats().mapped_bytes > 0
    block.free()
    assert pool.stats().mapped_bytes == 0


def test_capacity_gives_pool_exhausted() -> None:
    with SlabPool(max_bytes=4 << 20) as pool:
        blocks = []
        error: MemoryError | None = None
        for _ in range(1000):
            try:
                blocks.append(pool.alloc(64 << 10))
            except MemoryError as exc:
                error = exc
                break
        assert isinstance(error, PoolExhausted)
        stats = pool.stats()
        assert stats.mapped_bytes <= 4 << 20
        assert stats.failed_allocs >= 1
        assert len(blocks) >= 32  # most of the capacity was usable
        for b in blocks:
            b.free()
        pool.alloc(64 << 10).free()  # usable again


def test_capacity_applies_to_huge_blocks() -> None:
    with SlabPool(max_bytes=4 << 20) as pool, pytest.raises(PoolExhausted):
        pool.alloc(8 << 20)


def test_mmap_failure_is_memory_error_and_recoverable() -> None:
    with SlabPool() as pool:
        _ffi.fault_set(_ffi.FAULT_MAP, 0, 1)
        with pytest.raises(PoolMemoryError) as info:
            pool.alloc(100)
        assert info.value.errno == errno.ENOMEM
        assert not isinstance(info.value, PoolExhausted)
        block = pool.alloc(100)  # memory is available again
        block.free()
        assert pool.stats().failed_allocs == 1


def test_mmap_failure_midway_through_many_chunks() -> None:
    with SlabPool() as pool:
        _ffi.fault_set(_ffi.FAULT_MAP, 2, 3)
        blocks, failures = [], 0
        for _ in range(40):
            try:
                blocks.append(pool.alloc(256 << 10))
            except PoolMemoryError:
                failures += 1
        assert failures == 3
        pool.check()
        for b in blocks:
            b.free()


def test_numa_node_that_does_not_exist() -> None:
    count = _ffi.numa_node_count()
    with pytest.raises(NumaError) as info:
        SlabPool(numa_node=count)
    assert f"NUMA node {count}" in str(info.value)
    assert "nodes with memory: [0" in str(info.value)  # numa.resolve_node names them
    assert info.value.errno == errno.ENODEV


# every code the C core returns, the exception errors.check_rc makes of it, and the builtin
# that code which knows nothing of poolalloc would catch
C_CODES = [
    (errno.ENOMEM, PoolMemoryError, MemoryError),
    (errno.ENOSPC, PoolExhausted, MemoryError),
    (errno.EINVAL, PoolValueError, ValueError),
    (errno.EOVERFLOW, PoolOverflowError, OverflowError),
    (errno.EFAULT, ForeignBufferError, ValueError),
    (errno.EALREADY, DoubleReleaseError, ValueError),
    (errno.ESHUTDOWN, PoolClosedError, RuntimeError),
    (errno.EILSEQ, CorruptionError, RuntimeError),
    (errno.ENODEV, NumaError, ValueError),
]


@pytest.mark.parametrize(("code", "exc", "builtin"), C_CODES)
def test_each_c_code_maps_to_its_exception(
    code: int, exc: type[Exception], builtin: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        check_rc(code, "core")
    assert isinstance(info.value, builtin)
    assert info.value.errno == code  # type: ignore[attr-defined]


def test_a_null_pool_or_out_pointer_is_einval_from_every_thread_state() -> None:
    # pa_alloc's hit path compares the caller's pool with the thread's cached one and has no
    # NULL test of its own: a thread without a cache, one whose cache is in use and one whose
    # cache went with its pool's close must all say EINVAL, never hand out a block.
    from poolalloc._native import ffi, lib

    out = ffi.new("void **")

    def null_calls() -> tuple[int, int]:
        return lib.pa_alloc(ffi.NULL, 64, 64, out), lib.pa_alloc(ffi.NULL, 64, 64, ffi.NULL)

    results: list[tuple[int, int]] = []
    pool = SlabPool()

    def worker() -> None:
        results.append(null_calls())  # no cache yet
        block = pool.alloc(64)
        results.append(null_calls())  # this thread's cache is the pool's
        assert lib.pa_alloc(pool._handle, 64, 64, ffi.NULL) == errno.EINVAL
        block.free()
        pool.close()  # the cache goes with the pool
        results.append(null_calls())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert results == [(errno.EINVAL, errno.EINVAL)] * 3


def test_block_offsets_and_lengths_are_ints(pool: SlabPool) -> None:
    # a float offset became a float address, which the copy truncated: written, no error
    block = pool.alloc(16)
    block.write(0, bytes(16))
    for offset in (1.5, True, "0", None):
        with pytest.raises(PoolValueError, match="offset must be an int"):
            block.write(offset, b"x")  # type: ignore[arg-type]
        with pytest.raises(PoolValueError, match="offset must be an int"):
            block.read(offset, 1)  # type: ignore[arg-type]
    with pytest.raises(PoolValueError, match="n must be an int, not float"):
        block.read(0, 1.5)  # type: ignore[arg-type]
    assert block.read(0, 16) == bytes(16)
    block.free()


def test_a_block_freed_by_its_offsets_index_is_not_touched(pool: SlabPool) -> None:
    block = pool.alloc(64)

    class Freeing:
        def __index__(self) -> int:
            block.free()
            return 0

    with pytest.raises(DoubleReleaseError):
        block.write(Freeing(), b"abc")  # type: ignore[arg-type]
    assert pool.stats().in_use_blocks == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="a Python class exports a buffer from 3.12")
def test_block_write_copies_the_bytes_it_measured(pool: SlabPool) -> None:
    # write() measured one export of `data` and copied a second one, which may be longer
    exports = iter([b"12345678", bytes(range(256)) * 16])

    class Growing:
        def __buffer__(self, flags: int) -> memoryview:
            return memoryview(next(exports))

    block, neighbour = pool.alloc(64), pool.alloc(64)
    neighbour.write(0, b"\xaa" * 64)
    block.write(0, Growing())  # type: ignore[arg-type]
    assert block.read(0, 8) == b"12345678"
    assert neighbour.read(0, 64) == b"\xaa" * 64
    block.free()
    neighbour.free()


@pytest.mark.parametrize(
    ("debug", "exc"),
    [("x", TypeError), (1.0, TypeError), (-1, PoolValueError), (8, PoolValueError)],
)
def test_debug_flags_are_checked_by_name(debug: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="debug must be"):
        SlabPool(debug=debug)  # type: ignore[arg-type]
