"""Topology, sources, validation and the numa_node converter, on this machine and fake ones."""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from poolalloc import numa
from poolalloc.errors import NumaError, PoolValueError
from poolalloc.numa.kernel import Libnuma, LinuxNumaOs
from poolalloc.numa.sysfs import format_list, parse_list, read_topology

FakeTree = Callable[..., Path]
REAL = Path(numa.DEFAULT_SYSFS_ROOT)
needs_sysfs = pytest.mark.skipif(not REAL.is_dir(), reason="kernel publishes no NUMA node tree")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ()), ("\n", ()), ("0", (0,)), ("0-3", (0, 1, 2, 3)), ("0-1,4,6-7\n", (0, 1, 4, 6, 7))],
)
def test_parse_list(text: str, expected: tuple[int, ...]) -> None:
    assert parse_list(text) == expected


@pytest.mark.parametrize(
    "values", [(), (0,), (0, 1), (0, 2, 3, 4, 9), tuple(range(64)), (5, 7, 8, 9, 10, 12)]
)
def test_format_list_is_the_inverse_of_parse_list(values: tuple[int, ...]) -> None:
    assert parse_list(format_list(values)) == values


@pytest.mark.parametrize("nodes", [2, 4])
def test_fake_tree_is_read_completely(fake_tree: FakeTree, nodes: int) -> None:
    topo = numa.topology(fake_tree(nodes, cpus_per_node=3))
    assert topo.source == "sysfs"
    assert topo.node_ids == tuple(range(nodes))
    assert topo.nodes_with_memory == tuple(range(nodes))
    for k, node in enumerate(topo.nodes):
        assert node.cpus == tuple(range(3 * k, 3 * k + 3))
        assert node.memory_total == (k + 1) * 1024 * 1024 * 1024
        assert node.memory_free == node.memory_total // 2
        assert topo.distance(k, k) == 10
        assert all(topo.distance(k, other) == 21 for other in range(nodes) if other != k)
    assert topo.cpu_to_node() == tuple(c // 3 for c in range(3 * nodes))
    assert topo.node_of_cpu(3 * nodes) is None


def test_sparse_memoryless_tree_without_list_files(fake_tree: FakeTree) -> None:
    root = fake_tree(3, node_ids=[0, 2, 5], memoryless=frozenset({2}), list_files=False)
    topo = numa.topology(root)
    assert topo.node_ids == (0, 2, 5)
    assert topo.nodes_with_memory == (0, 5)  # derived from MemTotal when has_memory is missing
    assert topo.distance(2, 5) == 21
    with pytest.raises(KeyError):
        topo.distance(0, 1)


def test_missing_tree_stands_for_one_node(tmp_path: Path) -> None:
    assert read_topology(tmp_path / "absent") is None
    topo = numa.topology(tmp_path / "absent")
    assert topo.source == "none"
    assert topo.node_ids == (0,)
    assert topo.nodes[0].cpus == tuple(range(os.cpu_count() or 1))
    assert topo.nodes[0].memory_total > topo.nodes[0].memory_free > 0


@needs_sysfs
def test_real_machine_matches_sysfs_files() -> None:
    topo = numa.topology()
    online = parse_list((REAL / "online").read_text())
    assert topo.node_ids == online
    for node in topo.nodes:
        assert node.cpus == parse_list((REAL / f"node{node.id}" / "cpulist").read_text())
        assert node.memory_total > 0
    assert set(topo.has_memory) <= set(online)
    for cpu in os.sched_getaffinity(0):
        assert topo.node_of_cpu(cpu) is not None


@needs_sysfs
def test_libnuma_present_is_the_reported_source_when_it_agrees() -> None:
    lib = Libnuma.load()
    if lib is None:
        pytest.skip("libnuma.so.1 is not installed on this machine")
    topo = numa.topology()
    assert lib.disagreement(topo) is None
    assert lib.max_node() == max(topo.node_ids)
    info = numa.NumaSystem().info()
    assert (info.source, info.libnuma) == ("libnuma", "libnuma.so.1")


@needs_sysfs
def test_libnuma_absent_falls_back_to_sysfs() -> None:
    assert Libnuma.load("libnuma-missing.so.9") is None
    info = numa.NumaSystem(libnuma_name="libnuma-missing.so.9").info()
    assert info.source == "sysfs"
    assert info.libnuma is None
    assert info.node_count == len(numa.topology().nodes)
    assert "source: sysfs" in info.note


def test_libnuma_disagreeing_with_the_tree_is_not_trusted(fake_tree: FakeTree) -> None:
    if Libnuma.load() is None:
        pytest.skip("libnuma.so.1 is not installed on this machine")
    info = numa.NumaSystem(fake_tree(4)).info()  # libnuma sees the real machine, not 4 nodes
    assert info.source == "sysfs"
    assert "libnuma ignored" in info.note


def test_no_tree_and_no_libnuma_reports_none(tmp_path: Path) -> None:
    with numa.using(numa.NumaSystem(tmp_path / "absent", libnuma_name=None)):
        info = numa.available()
        assert (info.source, info.node_count, info.nodes_with_memory) == ("none", 1, (0,))
        assert info.is_single_node
        assert numa.resolve_node(0) == 0


def test_one_node_machine_says_everything_runs_on_node_0(fake_tree: FakeTree) -> None:
    system = numa.NumaSystem(fake_tree(1), libnuma_name=None)
    info = system.info()
    assert info.is_single_node
    assert "one NUMA node (node 0)" in info.note
    assert system.resolve_node(0) == 0
    assert system.resolve_node("local") == numa.NUMA_LOCAL
    with pytest.raises(NumaError, match=r"NUMA node 1 does not exist; nodes with memory: \[0\]"):
        system.resolve_node(1)


def test_real_machine_refuses_a_node_past_the_last() -> None:
    missing = max(numa.topology().node_ids) + 1
    usable = list(numa.topology().nodes_with_memory)
    with pytest.raises(NumaError) as caught:
        numa.validate_node(missing)
    assert str(caught.value) == f"NUMA node {missing} does not exist; nodes with memory: {usable}"
    assert caught.value.errno == errno.ENODEV
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("nodes", [2, 4])
def test_fake_machine_accepts_its_nodes_and_names_them(fake_tree: FakeTree, nodes: int) -> None:
    system = numa.NumaSystem(fake_tree(nodes, memoryless=frozenset({1})), libnuma_name=None)
    with_memory = [n for n in range(nodes) if n != 1]
    for node in with_memory:
        assert system.resolve_node(node) == node
    with pytest.raises(
        NumaError, match=re.escape(f"NUMA node 1 has no memory; nodes with memory: {with_memory}")
    ):
        system.resolve_node(1)
    with pytest.raises(NumaError, match=rf"NUMA node {nodes} does not exist"):
        system.resolve_node(nodes)
    with pytest.raises(NumaError, match="NUMA node -3 does not exist"):
        system.resolve_node(-3)


def test_resolve_node_maps_the_three_forms() -> None:
    assert numa.resolve_node(None) == numa.NUMA_ANY == -1
    assert numa.resolve_node("local") == numa.NUMA_LOCAL == -2
    assert numa.resolve_node(0) == 0


@pytest.mark.parametrize("bad", [True, 1.0, b"local", [0]])
def test_resolve_node_refuses_other_types(bad: object) -> None:
    with pytest.raises(PoolValueError, match="a NUMA node is an int"):
        numa.resolve_node(bad)  # type: ignore[arg-type]


def test_resolve_node_refuses_other_strings() -> None:
    with pytest.raises(PoolValueError, match="'remote'"):
        numa.resolve_node("remote")  # type: ignore[arg-type]


def test_current_node_comes_from_the_os_layer(fake_tree: FakeTree) -> None:
    class OnCpu:
        def __init__(self) -> None:
            self.cpu = 0

        def getcpu(self) -> tuple[int, int]:
            return self.cpu, self.cpu // 2

    fake = OnCpu()
    with numa.using(numa.NumaSystem(fake_tree(4), libnuma_name=None, os_layer=fake)):
        seen = []
        for cpu in (0, 3, 7, 2):
            fake.cpu = cpu
            seen.append(numa.current_node())
    assert seen == [0, 1, 3, 1]
    assert numa.system().sysfs_root == numa.DEFAULT_SYSFS_ROOT  # restored after the block


def test_real_getcpu_agrees_with_the_topology() -> None:
    cpu, node = LinuxNumaOs().getcpu()
    assert cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1)
    assert numa.topology().node_of_cpu(cpu) in (node, None)
    assert numa.current_node() in numa.topology().node_ids


def test_getcpu_follows_a_pinned_thread() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    seen: dict[int, int] = {}

    def run_on(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0 is the calling thread on Linux
        seen[cpu] = LinuxNumaOs().getcpu()[0]

    for cpu in allowed[:4]:
        t = threading.Thread(target=run_on, args=(cpu,))
        t.start()
        t.join(timeout=10)
    assert seen == {cpu: cpu for cpu in allowed[:4]}
