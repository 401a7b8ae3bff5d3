"""NUMA paths give back what they take: pools bound to a node, simulations, topology reads."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest

from poolalloc import _ffi, numa
from poolalloc.slab import SlabPool


def _bound_pool_round(spec: numa.NumaSpec) -> None:
    pool = SlabPool(numa_node=spec)
    blocks = [pool.alloc(size) for size in (256, 8192, 3 << 20)]
    for b in blocks:
        _ffi.write(b.address, b"x" * b.nbytes)
        assert set(numa.page_nodes(b.address, b.nbytes)) <= set(numa.topology().node_ids)
        b.free()
    pool.close()
    del pool


@pytest.mark.leaks
@pytest.mark.limit_leaks("1 MB")
def test_bound_and_local_pools_leak_nothing() -> None:
    for _ in range(20):
        _bound_pool_round(0)
        _bound_pool_round("local")
        numa.available()
        numa.topology()
    gc.collect()


@pytest.mark.leaks
@pytest.mark.limit_leaks("1 MB")
def test_simulations_leak_nothing(fake_tree: Callable[..., Path]) -> None:
    root = fake_tree(4)
    for _ in range(10):
        with numa.simulate(root) as sim:
            sim.set_cpu(5)
            _bound_pool_round("local")
            _bound_pool_round(3)
    gc.collect()
