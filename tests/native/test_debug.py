"""Debug modes: poison catches writes after free, canaries catch overruns, unpooled is real."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poolalloc import CorruptionError, DoubleReleaseError, SlabPool, _ffi

UNDER_ASAN = os.environ.get("PA_UNDER_ASAN", "") not in ("", "0")

WRITE_AFTER_FREE = """
from poolalloc import SlabPool, _ffi
pool = SlabPool(debug=True)
block = pool.alloc(100)
address = block.address
block.free()
_ffi.write(address + 10, b"oops")
"""


@pytest.mark.skipif(not UNDER_ASAN, reason="checks the AddressSanitizer build (make test-asan)")
def test_asan_reports_write_after_free_in_the_pool(tmp_path: Path) -> None:
    # free blocks are poisoned in ASan's shadow (track.h), so ASan stops the bad write itself.
    # cwd elsewhere: the source tree must not shadow the installed package
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_AFTER_FREE],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "use-after-poison" in proc.stderr


@pytest.mark.skipif(UNDER_ASAN, reason="under ASan the write itself is stopped (test above)")
def test_write_after_free_found_by_check() -> None:
    with SlabPool(debug=True) as pool:
        block = pool.alloc(100)
        address = block.address
        block.free()
        _ffi.write(address + 10, b"oops")  # the bug under test: a write after free
        with pytest.raises(CorruptionError) as info:
            pool.check()
        assert info.value.errno == errno.EILSEQ
        # the next allocation of that block reports it too, then the pool heals
        with pytest.raises(CorruptionError):
            pool.alloc(100)
        pool.check()
        pool.alloc(100).free()


def test_canary_overrun_found_at_free() -> None:
    with SlabPool(debug=True) as pool:
        block = pool.alloc(100)
        assert block.block_size == 100  # debug mode reports the requested size
        _ffi.write(block.address + 100, b"!")  # one byte past the end
        with pytest.raises(CorruptionError):
            pool.check()
        with pytest.raises(CorruptionError):
            block.free()
        assert pool.stats().in_use_blocks == 0  # freed all the same


def test_canary_on_huge_block() -> None:
    with SlabPool(debug=True) as pool:
        block = pool.alloc(3 << 20)
        _ffi.write(block.address + (3 << 20), b"!")
        with pytest.raises(CorruptionError):
            block.free()


def test_double_free_exact_in_debug_mode() -> None:
    with SlabPool(debug=True) as pool:
        address = _ffi.alloc(pool._handle, 64)
        keeper = pool.alloc(64)
        _ffi.free(address)
        with pytest.raises(DoubleReleaseError):
            _ffi.free(address)
        keeper.free()


def test_unpooled_mode_uses_real_allocations() -> None:
    flags = _ffi.DEBUG_UNPOOLED | _ffi.DEBUG_CANARY
    with SlabPool(debug=flags) as pool:
        blocks = [pool.alloc(size, 256) for size in (1, 100, 5000, 3 << 20)]
        stats = pool.stats()
        assert stats.in_use_blocks == 4
        assert stats.debug == flags
        for b in blocks:
            assert b.address % 256 == 0
            assert _ffi.block_pool_address(b.address) == _ffi.pool_address(pool._handle)
        _ffi.write(blocks[1].address + 100, b"x")
        with pytest.raises(CorruptionError):
            pool.check()
        with pytest.raises(CorruptionError):
            blocks[1].free()
        for b in (blocks[0], blocks[2], blocks[3]):
            b.free()
        with pytest.raises(DoubleReleaseError):
            blocks[0].free()
        assert pool.stats().mapped_bytes == 0


def test_env_turns_debug_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLALLOC_DEBUG", "1")
    with SlabPool() as pool:
        assert pool.stats().debug == _ffi.DEBUG_POISON | _ffi.DEBUG_CANARY
    monkeypatch.setenv("POOLALLOC_DEBUG", "0")
    with SlabPool() as pool:
        assert pool.stats().debug == 0
