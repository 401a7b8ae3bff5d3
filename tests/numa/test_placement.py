"""Placement on this machine, verified page by page with the kernel (get_mempolicy)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import platform
import re
from collections.abc import Iterator

import pytest

from poolalloc import _ffi, numa
from poolalloc.errors import ForeignBufferError, NumaError, PoolValueError
from poolalloc.slab import Block, SlabPool

PAGE = mmap.PAGESIZE
# One block per kind of memory: a small class, a page-aligned class, a run of pages, and a block
# above the largest class (a dedicated mapping).
SIZES = [100, 4096, 60_000, 3 << 20]
_SYS_MBIND = 237  # x86_64; the probe below is only trusted there


def _kernel_lets_us_bind() -> bool:
    """Ask the kernel directly (not through poolalloc) whether mbind to node 0 works here."""
    if platform.machine() != "x86_64":
        pytest.skip("the mbind probe knows only the x86_64 syscall number")
    libc = ctypes.CDLL(None, use_errno=True)
    region = mmap.mmap(-1, PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    mask = ctypes.c_ulong(1)
    rc = libc.syscall(
        _SYS_MBIND, ctypes.c_void_p(address), ctypes.c_ulong(PAGE), 2, ctypes.byref(mask), 64, 0
    )
    del address
    region.close()
    return int(rc) == 0


_held: list[Block] = []


def _touch_all(pool: SlabPool) -> list[tuple[int, int]]:
    """One block of each size, written whole; freed when the test ends."""
    spans = []
    for size in SIZES:
        block = pool.alloc(size)
        _held.append(block)
        _ffi.write(block.address, b"\xa5" * size)  # first touch: the pages exist from here on
        spans.append((block.address, size))
    return spans


@pytest.fixture(autouse=True)
def _free_held_blocks() -> Iterator[None]:
    yield
    while _held:
        _held.pop().free()


def test_node_0_pool_is_on_node_0_page_by_page() -> None:
    with SlabPool(numa_node=0) as pool:
        for address, size in _touch_all(pool):
            nodes = numa.page_nodes(address, size)
            assert len(nodes) == -(-(address % PAGE + size) // PAGE)
            assert set(nodes) == {0}
        stats = pool.stats()
        assert stats.numa_node == 0
        # The pool says it is bound exactly when the kernel lets this process bind.
        assert stats.numa_bound == int(_kernel_lets_us_bind())
        node = pool.node_stats(0)
        assert node.mapped_bytes == stats.mapped_bytes  # one node holds all the pool's memory
        assert node.in_use_blocks >= len(SIZES) - 1  # the huge block is not a slab block


def test_refused_bind_leaves_a_working_unbound_pool() -> None:
    _ffi.fault_set(_ffi.FAULT_BIND, 0, 1000, errno.EPERM)  # as a seccomp profile would
    try:
        with SlabPool(numa_node=0) as pool:
            spans = _touch_all(pool)
            stats = pool.stats()
    finally:
        _ffi.fault_set(_ffi.FAULT_BIND, 0, 0)
    assert stats.numa_bound == 0
    assert stats.in_use_blocks == len(SIZES)
    for address, size in spans:  # the memory is usable, wherever the kernel put it
        assert _ffi.read(address, 1) == b"\xa5"
        assert set(numa.page_nodes(address, size)) <= set(numa.topology().node_ids)


def test_node_past_the_last_is_refused_naming_the_real_nodes() -> None:
    topo = numa.topology()
    missing = max(topo.node_ids) + 1
    expected = (
        f"NUMA node {missing} does not exist; nodes with memory: {list(topo.nodes_with_memory)}"
    )
    with pytest.raises(NumaError, match=re.escape(expected)) as caught:
        SlabPool(numa_node=missing)
    assert caught.value.errno == errno.ENODEV


def test_node_1_on_a_one_node_machine() -> None:
    if len(numa.topology().nodes) != 1:
        pytest.skip("this machine has more than one node")
    with pytest.raises(
        NumaError, match=re.escape("NUMA node 1 does not exist; nodes with memory: [0]")
    ):
        SlabPool(numa_node=1)
    assert numa.available().is_single_node


@pytest.mark.parametrize("bad", ["remote", -5, 1.5, True])
def test_bad_numa_node_values(bad: object) -> None:
    with pytest.raises(PoolValueError):
        SlabPool(numa_node=bad)  # type: ignore[arg-type]


def test_local_pool_serves_the_current_node() -> None:
    with SlabPool(numa_node="local") as pool:
        spans = _touch_all(pool)
        here = numa.current_node()
        stats = pool.stats()
        per_node = [pool.node_stats(n) for n in numa.topology().node_ids]
    assert stats.numa_node == numa.NUMA_LOCAL
    if numa.available().is_single_node:
        for address, size in spans:
            assert set(numa.page_nodes(address, size)) == {here} == {0}
    assert sum(s.mapped_bytes for s in per_node) == stats.mapped_bytes
    assert stats.in_use_blocks == len(SIZES)


def test_unbound_pool_reports_no_binding() -> None:
    with SlabPool() as pool:
        address, size = _touch_all(pool)[0]
        assert pool.stats().numa_node == numa.NUMA_ANY
        assert pool.stats().numa_bound == 0
        assert set(numa.page_nodes(address, size)) <= set(numa.topology().node_ids)


def test_page_nodes_of_ordinary_buffers() -> None:
    buf = bytearray(5 * PAGE)
    buf[::PAGE] = b"\x01" * 5
    assert len(numa.page_nodes(buf)) in (5, 6)  # 6 when the buffer straddles a page boundary
    assert set(numa.page_nodes(buf)) <= set(numa.topology().node_ids)
    assert numa.page_nodes(memoryview(buf)[:1]) == numa.page_nodes(buf)[:1]
    assert numa.page_nodes(buf, 0) == []
    assert len(numa.page_nodes(bytes(PAGE * 2))) >= 2  # read-only buffers work too


def test_page_nodes_refuses_bad_arguments() -> None:
    buf = bytearray(PAGE)
    with pytest.raises(PoolValueError, match="outside the buffer"):
        numa.page_nodes(buf, PAGE + 1)
    with pytest.raises(PoolValueError, match="nbytes is required"):
        numa.page_nodes(12345)
    with pytest.raises(PoolValueError, match="contiguous"):
        numa.page_nodes(memoryview(buf)[::2])


def test_page_nodes_of_unmapped_memory_is_an_error() -> None:
    region = mmap.mmap(-1, PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    region.close()  # the page is gone; the kernel must say so, not invent a node
    with pytest.raises(ForeignBufferError):
        numa.page_nodes(address, PAGE)


def test_verify_placement_and_report_on_this_machine() -> None:
    check = numa.verify_placement(0, 64 * PAGE)
    assert (check.node, check.pages) == (0, 64)
    assert check.pages_on_node == 64
    assert check.pool_says_bound == _kernel_lets_us_bind()
    text = numa.report()
    assert text.startswith(f"NUMA source: {numa.available().source}")
    for node in numa.topology().nodes:
        assert f"node {node.id}: cpus " in text
    assert "placement on node 0: 256/256 pages there" in text
    with pytest.raises(NumaError):
        numa.verify_placement(max(numa.topology().node_ids) + 1)


def test_verify_placement_reports_a_refused_bind() -> None:
    _ffi.fault_set(_ffi.FAULT_BIND, 0, 1000, errno.EPERM)
    try:
        check = numa.verify_placement(0, 4 * PAGE)
    finally:
        _ffi.fault_set(_ffi.FAULT_BIND, 0, 0)
    assert not check.pool_says_bound
    assert check.pages == 4
