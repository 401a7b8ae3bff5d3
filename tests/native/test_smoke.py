"""Smoke: the extension imports, the version is there, the class table is sane."""

from __future__ import annotations

import pytest

import poolalloc
from poolalloc import SlabPool, _ffi
from poolalloc.slab import size_classes


def test_import_and_version() -> None:
    assert isinstance(poolalloc.__version__, str)
    assert "SlabPool" in poolalloc.__all__
    assert _ffi.API_VERSION == 1


def test_class_table_spans_64_bytes_to_1_mib() -> None:
    classes = size_classes()
    sizes = [bs for bs, _ in classes]
    assert sizes[0] == 64
    assert sizes[-1] >= 1 << 20
    assert sizes == sorted(set(sizes))
    for bs, slab in classes:
        assert bs % 64 == 0
        assert bs < 4096 or bs % 4096 == 0
        assert slab >= bs


def test_roundtrip_one_block() -> None:
    with poolalloc.SlabPool() as pool:
        block = pool.alloc(100)
        block.write(0, b"poolalloc")
        assert block.read(0, 9) == b"poolalloc"
        block.free()


def test_api_table_address_is_stable() -> None:
    assert _ffi.api_address() != 0
    assert _ffi.api_address() == _ffi.api_address()


def test_demo_command_passes(capsys: pytest.CaptureFixture[str]) -> None:
    from poolalloc.cli import main

    assert main(["selfcheck", "--rounds", "1", "--threads", "4"]) == 0
    out = capsys.readouterr().out
    assert "selfcheck: ok" in out
    assert "1048576" in out  # the largest class shows in the table


API_CDEF = """
typedef struct pa_pool_s pa_pool_t;
typedef struct pa_api_s {
  unsigned version;
  int (*alloc)(pa_pool_t *, size_t, size_t, void **);
  int (*free)(void *);
  int (*alloc_batch)(pa_pool_t *, size_t, size_t, size_t, void **);
  int (*free_batch)(void *const *, size_t, size_t *);
  int (*block_size)(const void *, size_t *);
  int (*block_pool)(const void *, pa_pool_t **);
  void *pool_stats;
} pa_api_t;
"""


def test_function_table_works_from_another_binding() -> None:
    # what the lease extension does: call the one core through the table, by address
    from cffi import FFI

    other = FFI()
    other.cdef(API_CDEF)
    api = other.cast("pa_api_t *", _ffi.api_address())
    assert api.version == _ffi.API_VERSION
    with poolalloc.SlabPool() as pool:
        handle = other.cast("pa_pool_t *", _ffi.pool_address(pool._handle))
        out = other.new("void **")
        assert api.alloc(handle, 100, 64, out) == 0
        size, owner = other.new("size_t *"), other.new("pa_pool_t **")
        assert api.block_size(out[0], size) == 0
        assert size[0] == 128
        assert api.block_pool(out[0], owner) == 0
        assert owner[0] == handle
        assert pool.stats().in_use_blocks == 1
        assert api.free(out[0]) == 0
        assert api.free(out[0]) != 0  # double free refused through the table too


def test_one_thread_moving_between_two_pools_keeps_both_balanced() -> None:
    # pa_free's page->slab memo stands for "a slab of the pool whose cache this thread uses":
    # once the thread uses another pool's cache, a free on the same page must not be parked
    # by the memo in the first pool's cache with its bytes counted in the second's (a's
    # parked bytes would then fall short, and its in_use_peak come out at 7 blocks).
    a, b = SlabPool(), SlabPool()
    held = [a.alloc(64) for _ in range(4)]  # one slab, one page
    held[0].free()  # the memo now names that page's slab
    other = b.alloc(64)  # this thread's cache is now b's
    for block in held[1:]:
        block.free()
    sa, sb = a.stats(), b.stats()
    assert (sa.in_use_blocks, sa.in_use_bytes, sa.frees) == (0, 0, 4)
    assert (sb.in_use_blocks, sb.in_use_bytes, sb.frees) == (1, 64, 0)
    again = [a.alloc(64) for _ in range(4)]  # back to a's cache
    assert a.stats().in_use_peak == 4 * 64
    for block in again:
        block.free()
    a.check()
    b.check()
    other.free()
    for pool in (a, b):
        report = pool.close_report()
        assert (report.in_use_bytes, report.mapped_bytes) == (0, 0)
