"""Fake 2- and 4-node machines: a sysfs tree for Python and pa_numa_fake for the C core.

Every claim is checked through the core's own record of where each chunk was bound
(``page_nodes`` under a simulation answers from that record), never assumed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolalloc import _ffi, numa
from poolalloc.errors import NumaError, PoolValueError
from poolalloc.slab import Block, SlabPool

FakeTree = Callable[..., Path]
CPUS_PER_NODE = 2
SMALL, PAGED, HUGE = 256, 8192, 3 << 20  # a small class, a page class, a dedicated mapping


@pytest.fixture(params=[2, 4], ids=["2-nodes", "4-nodes"])
def machine(request: pytest.FixtureRequest, fake_tree: FakeTree) -> Iterator[numa.Simulation]:
    with numa.simulate(fake_tree(request.param, CPUS_PER_NODE)) as sim:
        yield sim


def node_of(block: Block) -> int:
    nodes = set(numa.page_nodes(block.address, block.nbytes))
    assert len(nodes) == 1, f"a block spans nodes {nodes}"
    return nodes.pop()


def in_thread(fn: Callable[[], object]) -> object:
    """Run fn in a fresh thread (whose cache is flushed when it exits) and return its result."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "worker thread hung"
    assert out, "worker thread failed"
    return out[0]


def settled(read: Callable[[], object], expected: object, seconds: float = 5.0) -> object:
    """read() once it equals expected, or its last value after `seconds`.

    A worker's thread cache goes back to the depot from its TLS destructor, which the OS runs
    after Python's join() has already returned; per-node counts reach their exact value then.
    """
    deadline = time.monotonic() + seconds
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.002)
    return got


def test_simulation_answers_for_the_fake_machine(machine: numa.Simulation) -> None:
    count = len(machine.topology.nodes)
    info = numa.available()
    assert (info.source, info.node_count) == ("sysfs", count)
    assert numa.topology().node_ids == tuple(range(count))
    assert _ffi.numa_node_count() == count
    for cpu in range(count * CPUS_PER_NODE):
        machine.set_cpu(cpu)
        assert numa.current_node() == cpu // CPUS_PER_NODE
    with pytest.raises(PoolValueError):
        machine.set_cpu(count * CPUS_PER_NODE)  # no such CPU


def test_fixed_node_pool_binds_every_chunk_there(machine: numa.Simulation) -> None:
    last = len(machine.topology.nodes) - 1
    with SlabPool(numa_node=last) as pool:
        blocks = [pool.alloc(size) for size in (SMALL, PAGED, HUGE)]
        assert [node_of(b) for b in blocks] == [last] * 3
        assert pool.stats().numa_bound == 1
        assert pool.node_stats(last).mapped_bytes == pool.stats().mapped_bytes
        with pytest.raises(NumaError):
            pool.node_stats(last - 1)  # a fixed-node pool has chunks on its node only
        for b in blocks:
            b.free()


def test_verify_placement_on_every_fake_node(machine: numa.Simulation) -> None:
    for node in range(len(machine.topology.nodes)):
        check = numa.verify_placement(node, 16 * 4096)
        assert (check.pages, check.pages_on_node, check.pool_says_bound) == (16, 16, True)
    text = numa.report()
    assert f"{len(machine.topology.nodes)} NUMA nodes" in text
    assert "node 1: cpus 2-3; memory 2048 MiB (1024 MiB free); distances [21, 10" in text


def test_missing_fake_node_is_refused_by_name(machine: numa.Simulation) -> None:
    count = len(machine.topology.nodes)
    message = f"NUMA node {count} does not exist; nodes with memory: {list(range(count))}"
    with pytest.raises(NumaError, match=re.escape(message)):
        SlabPool(numa_node=count)


def test_memoryless_fake_node_is_refused(fake_tree: FakeTree) -> None:
    with (
        numa.simulate(fake_tree(2, memoryless=frozenset({1}))),
        pytest.raises(
            NumaError, match=re.escape("NUMA node 1 has no memory; nodes with memory: [0]")
        ),
    ):
        SlabPool(numa_node=1)


def test_local_placement_follows_a_moving_thread(machine: numa.Simulation) -> None:
    """Each hop to another node: at most a cache's worth of old blocks, then only new ones."""
    cpus = list(range(len(machine.topology.nodes) * CPUS_PER_NODE))
    hops = cpus + cpus[::-1]  # walk across every node and back
    with SlabPool(numa_node="local") as pool:

        def walk() -> list[tuple[int, list[int], int]]:
            seen = []
            for cpu in hops:
                machine.set_cpu(cpu)
                blocks = [pool.alloc(SMALL) for _ in range(600)]
                huge = pool.alloc(HUGE)
                seen.append((cpu // CPUS_PER_NODE, [node_of(b) for b in blocks], node_of(huge)))
                for b in [*blocks, huge]:
                    b.free()
            return seen

        seen = in_thread(walk)
    assert isinstance(seen, list)
    for expected, small_nodes, huge_node in seen:
        assert huge_node == expected  # a dedicated mapping is bound where the thread runs now
        switch = small_nodes.index(expected)  # blocks already in the thread's cache come first
        assert switch < 300, f"still on the old node after {switch} allocations"
        assert set(small_nodes[switch:]) == {expected}, "went back to another node after the switch"


def test_remote_frees_go_home(machine: numa.Simulation) -> None:
    count = len(machine.topology.nodes)
    with SlabPool(numa_node="local") as pool:

        def alloc_on(node: int, n: int) -> list[Block]:
            machine.set_cpu(node * CPUS_PER_NODE)
            return [pool.alloc(SMALL) for _ in range(n)]

        home = in_thread(lambda: alloc_on(0, 200))
        assert isinstance(home, list)
        addresses = {b.address for b in home}
        expected = [200] + [0] * (count - 1)
        assert (
            settled(lambda: [pool.node_stats(n).in_use_blocks for n in range(count)], expected)
            == expected
        )

        def free_remotely_then_alloc() -> list[int]:
            machine.set_cpu((count - 1) * CPUS_PER_NODE)
            for b in home:
                b.free()
            fresh = [pool.alloc(SMALL) for _ in range(200)]
            got = [b.address for b in fresh if b.address in addresses]
            assert {node_of(b) for b in fresh} == {count - 1}
            for b in fresh:
                b.free()
            return got

        reused = in_thread(free_remotely_then_alloc)
        assert reused == [], "a block freed on another node was served from the wrong node"
        after = settled(
            lambda: [pool.node_stats(n).in_use_blocks for n in range(count)], [0] * count
        )
        assert after == [0] * count
        back_home = in_thread(lambda: [b.address for b in alloc_on(0, 200)])
        assert isinstance(back_home, list)
        assert set(back_home) & addresses, "node 0's blocks did not come back to node 0"
        for b in list(pool.outstanding()):
            b.free()


def test_per_node_stats_balance(machine: numa.Simulation) -> None:
    count = len(machine.topology.nodes)
    per_node = {n: 50 * (n + 1) for n in range(count)}
    with SlabPool(numa_node="local") as pool:
        barrier = threading.Barrier(count)
        held: dict[int, list[Block]] = {}

        def worker(node: int) -> None:
            machine.set_cpu(node * CPUS_PER_NODE + 1)
            barrier.wait(timeout=10)  # all nodes allocate at once
            held[node] = [pool.alloc(PAGED) for _ in range(per_node[node])]

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        expected = [per_node[n] for n in range(count)]
        # Python's join can return while the thread still retires its cache (a key destructor
        # taking depot locks): the figures are read once that has settled, all of them
        settled(lambda: [pool.node_stats(n).in_use_blocks for n in range(count)], expected)
        settled(lambda: pool.stats().in_use_blocks, sum(per_node.values()))
        stats = pool.stats()
        nodes = [pool.node_stats(n) for n in range(count)]
        assert [s.in_use_blocks for s in nodes] == expected
        assert stats.in_use_blocks == sum(per_node.values())
        assert sum(s.mapped_bytes for s in nodes) == stats.mapped_bytes
        assert sum(s.in_use_bytes for s in nodes) == stats.in_use_bytes
        for node, blocks in held.items():
            assert {node_of(b) for b in blocks} == {node}
        for blocks in held.values():
            for b in blocks:
                b.free()  # from this thread: blocks of its own node park in its cache
        pool.close()  # hands this thread's cache back, so every node's count can reach 0
        assert (
            settled(lambda: [pool.node_stats(n).in_use_blocks for n in range(count)], [0] * count)
            == [0] * count
        )
        assert pool.stats().allocs == pool.stats().frees == sum(per_node.values())


def test_simulation_is_undone_on_exit(fake_tree: FakeTree) -> None:
    real = _ffi.numa_node_count()
    with numa.simulate(fake_tree(4)):
        assert _ffi.numa_node_count() == 4
        with pytest.raises(PoolValueError, match="already active"):
            numa.simulate(fake_tree(2)).__enter__()
    assert _ffi.numa_node_count() == real
    assert numa.available().node_count == len(numa.topology().nodes)


def test_unusable_trees_are_refused(fake_tree: FakeTree, tmp_path: Path) -> None:
    with pytest.raises(PoolValueError, match="no NUMA node tree"):
        numa.simulate(tmp_path / "nothing")
    with pytest.raises(PoolValueError, match=r"numbered 0\.\.n-1"):
        numa.simulate(fake_tree(2, node_ids=[0, 2]))


def test_a_fake_given_to_the_core_alone_is_the_authority() -> None:
    """pa_numa_fake without numa.simulate (the core's own tests): Python defers to the core."""
    _ffi.numa_fake(4, [cpu // 2 for cpu in range(8)])
    try:
        with SlabPool(numa_node=3) as pool:
            block = pool.alloc(100)
            assert _ffi.numa_page_node(block.address) == 3
            block.free()
        with pytest.raises(NumaError, match="does not exist"):
            SlabPool(numa_node=4)  # refused by the core (ENODEV)
    finally:
        _ffi.numa_fake(0, [])
    missing = max(numa.topology().node_ids) + 1
    with pytest.raises(NumaError, match=re.escape("nodes with memory: ")):
        SlabPool(numa_node=missing)  # real topology again: Python's own message
