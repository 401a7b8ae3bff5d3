"""Memory truth with pytest-memray: nothing leaks, and a real leak in debug mode is caught.

These run in the second pass of ``make test`` (``pytest --memray -m leaks``).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poolalloc import Allocator, BufferPool

CYCLES = 1_000_000


@pytest.fixture(autouse=True, scope="module")
def _core_initialised() -> None:
    """First use of the core sets up process-wide tables once (the chunk registry): that is
    initialisation, not a leak, so it happens before the measured tests."""
    with BufferPool(4096, capacity=8) as pool, Allocator() as alloc:
        pool.acquire().release()
        alloc.alloc(3000).release()


@pytest.mark.leaks
@pytest.mark.limit_leaks("16 KB")
def test_a_million_acquire_release_cycles_leak_nothing() -> None:
    with BufferPool(4096, capacity=64) as pool:
        acquire = pool.acquire
        for _ in itertools.repeat(None, CYCLES):
            buf = acquire()
            buf[0] = 1
            buf.release()
        assert pool.stats().acquires == CYCLES


@pytest.mark.leaks
@pytest.mark.limit_memory("8 MB")
def test_a_million_cycles_stay_within_one_chunk_of_memory() -> None:
    with BufferPool(65536, capacity=16) as pool:
        acquire = pool.acquire
        for _ in itertools.repeat(None, CYCLES):
            buf = acquire()
            buf[65535] = 1
            buf.release()


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_a_thousand_pool_create_close_cycles_leak_nothing() -> None:
    for i in range(1000):
        with BufferPool(4096, capacity=8, name=f"cycle-{i}") as pool:
            bufs = pool.acquire_many(4)
            bufs[0][0] = 1
            pool.release_many(bufs)
        with Allocator(capacity=1 << 20) as alloc:
            alloc.alloc(3000).release()


LEAKY_TEST = """
import pytest
from poolalloc import BufferPool

KEPT = []

@pytest.mark.limit_leaks("1 MB")
def test_debug_pool():
    release = {release}
    pool = BufferPool(1 << 20, debug=True)
    for _ in range(8):
        buf = pool.acquire()
        buf[0] = 1
        KEPT.append(buf)
    if release:
        pool.release_many(KEPT)
        KEPT.clear()
    pool.close()
"""


def _run_memray(tmp_path: Path, release: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / f"test_debug_leak_{release}.py"
    test.write_text(textwrap.dedent(LEAKY_TEST.replace("{release}", str(release))))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--memray", "-q", "-p", "no:cacheprovider", str(test)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip


@pytest.mark.leaks
def test_memray_catches_a_deliberate_leak_in_unpooled_debug_mode(tmp_path: Path) -> None:
    leaked = _run_memray(tmp_path, release=False)
    assert leaked.returncode != 0, leaked.stdout
    assert "MEMORY PROBLEMS" in leaked.stdout, leaked.stdout
    assert "leaked" in leaked.stdout, leaked.stdout
    clean = _run_memray(tmp_path, release=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
