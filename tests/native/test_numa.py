"""NUMA mechanics with a fake topology (2 and 4 nodes), and the real one-node machine."""

from __future__ import annotations

import threading

import pytest

from poolalloc import NumaError, SlabPool, _ffi


def _fake(nodes: int, cpus_per_node: int = 2) -> list[int]:
    table = [cpu // cpus_per_node for cpu in range(nodes * cpus_per_node)]
    _ffi.numa_fake(nodes, table)
    return table


@pytest.mark.parametrize("nodes", [2, 4])
def test_local_placement_follows_the_cpu(nodes: int) -> None:
    table = _fake(nodes)
    pool = SlabPool(numa_node="local")
    blocks = []
    for cpu, node in enumerate(table):
        _ffi.numa_fake_set_cpu(cpu)
        for size in (1000, 3 << 20):  # a slab block and a huge block
            b = pool.alloc(size)
            assert _ffi.numa_page_node(b.address) == node
            blocks.append((b, node))
    for node in range(nodes):
        stats = pool.node_stats(node)
        assert stats.mapped_bytes > 0
        assert stats.in_use_blocks >= sum(1 for _, n in blocks if n == node)
    assert pool.stats().numa_bound == 1
    _ffi.numa_fake_set_cpu(0)
    for b, _ in blocks:
        b.free()
    pool.trim()
    for node in range(nodes):
        assert pool.node_stats(node).in_use_blocks == 0
    pool.close()


def test_remote_free_goes_home() -> None:
    _fake(2)
    pool = SlabPool(numa_node="local")
    _ffi.numa_fake_set_cpu(2)  # node 1
    blocks = [pool.alloc(256) for _ in range(10)]
    assert all(_ffi.numa_page_node(b.address) == 1 for b in blocks)
    # blocks out of node 1's slabs: the ten, plus the rest of the batch parked in our cache
    out_before = pool.node_stats(1).in_use_blocks
    assert out_before >= 10
    seen: list[tuple[int, int]] = []

    def free_on_node0() -> None:
        _ffi.numa_fake_set_cpu(0)
        for b in blocks:
            b.free()
        # freed straight to node 1's depot, not parked in this node-0 thread's cache
        seen.append((pool.node_stats(1).in_use_blocks, pool.node_stats(0).in_use_blocks))

    t = threading.Thread(target=free_on_node0)
    t.start()
    t.join()
    assert seen == [(out_before - 10, 0)]
    pool.trim()  # our own cache goes back too
    assert pool.node_stats(1).in_use_blocks == 0
    assert pool.node_stats(0).in_use_blocks == 0
    assert pool.stats().in_use_blocks == 0
    pool.close()


def test_fixed_node_binds_every_chunk() -> None:
    _fake(4)
    with SlabPool(numa_node=3) as pool:
        blocks = [pool.alloc(size) for size in (64, 5000, 200000, 3 << 20)]
        for b in blocks:
            assert _ffi.numa_page_node(b.address) == 3
        assert pool.stats().numa_bound == 1
        assert pool.node_stats(3).mapped_bytes > 0
        with pytest.raises(NumaError):
            pool.node_stats(0)
        for b in blocks:
            b.free()


def test_bind_failure_keeps_the_pool_working() -> None:
    _fake(2)
    _ffi.fault_set(_ffi.FAULT_BIND, 0, 100)
    with SlabPool(numa_node=1) as pool:
        b = pool.alloc(100)
        assert pool.stats().numa_bound == 0
        b.free()


def test_node_that_does_not_exist_in_fake_topology() -> None:
    _fake(2)
    with pytest.raises(NumaError, match="nodes present: 0-1"):
        SlabPool(numa_node=2)


def test_real_machine_node_count() -> None:
    count = _ffi.numa_node_count()
    assert count >= 1
    with pytest.raises(NumaError):
        SlabPool(numa_node=count)
    with SlabPool(numa_node=0) as pool:  # the real node 0 always exists
        b = pool.alloc(4096)
        node = pool.stats().numa_bound
        b.free()
        assert node in (0, 1)  # mbind may be refused by a container's seccomp profile


def test_node_stats_refuses_what_is_no_node_by_name() -> None:
    with SlabPool() as pool:
        for bad in (True, "0", 1.0):
            with pytest.raises(TypeError, match="node must be an int"):
                pool.node_stats(bad)  # type: ignore[arg-type]
        for far in (-5, 1 << 40):
            with pytest.raises(NumaError, match="no such NUMA node"):
                pool.node_stats(far)
