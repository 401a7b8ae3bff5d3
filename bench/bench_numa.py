"""What NUMA placement costs and buys: read bandwidth local vs remote, and allocation cost.

Two measurements:

1. Read bandwidth (numpy ``sum`` over a large buffer), only where two or more nodes exist: the
   thread is pinned to the CPUs of one node and reads a buffer from a pool bound to the same
   node (local) and to another node (remote), alternating A/B. Placement is verified with
   ``numa.page_nodes`` before any figure is printed.
2. Allocation cost of ``numa_node='local'`` (and of a pool bound to node 0) against an unbound
   pool, alternating A/B in the same run: one alloc+free pair at a time through Python (the
   thread-cache path), and batches of 1000 in one C call each way (refills and flushes, where
   the node is read). Both figures include the Python call overhead of ``_ffi``.

On a one-node machine it says so and runs only the second part: there is no remote memory to
measure, and no figure is invented for it.

Run:  .venv/bin/python bench/bench_numa.py [--repeats 9] [--mib 256] [--pairs 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from poolalloc import _ffi, numa
from poolalloc.slab import SlabPool

# ---- helpers ----


def summary(values: Sequence[float]) -> str:
    return (
        f"median {statistics.median(values):8.2f}  (min {min(values):8.2f}, max {max(values):8.2f})"
    )


def alternate(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, rounds repeated: A B C A B C ... (drift hits all alike)."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            results[name].append(run())
    return results


# ---- 1. read bandwidth ----


def bound_buffer(pool: SlabPool, nbytes: int) -> tuple[object, np.ndarray]:
    block = pool.alloc(nbytes)
    view = _ffi.buffer(block.address, nbytes)  # the pool's own memory, no copy
    array = np.frombuffer(view, dtype=np.uint64)
    array[:] = 1  # first touch, after the pool bound the mapping
    return block, array


def read_gbps(array: np.ndarray) -> float:
    start = time.perf_counter()
    array.sum()
    return array.nbytes / (time.perf_counter() - start) / 1e9


def bandwidth(topo: numa.Topology, mib: int, repeats: int) -> None:
    nodes = [n for n in topo.nodes if n.cpus and n.has_memory]
    print(f"\n== read bandwidth: numpy sum over {mib} MiB, one thread, GB/s, {repeats} rounds ==")
    for cpu_node in nodes:
        os.sched_setaffinity(0, set(cpu_node.cpus))
        pools = {m.id: SlabPool(numa_node=m.id) for m in nodes}
        buffers = {m: bound_buffer(pool, mib << 20) for m, pool in pools.items()}
        for m, (_, array) in buffers.items():
            placed = numa.page_nodes(array)
            share = placed.count(m) / len(placed)
            print(f"cpus of node {cpu_node.id}: buffer on node {m}: {share:.1%} of pages there")
        cases = {f"node {m}": (lambda a=array: read_gbps(a)) for m, (_, array) in buffers.items()}
        results = alternate(cases, repeats)
        local = statistics.median(results[f"node {cpu_node.id}"])
        for name, values in results.items():
            print(
                f"  cpus of node {cpu_node.id} reading {name}: {summary(values)}  "
                f"ratio to local {statistics.median(values) / local:.2f}"
            )
        for block, _ in buffers.values():
            block.free()  # type: ignore[attr-defined]
        for pool in pools.values():
            pool.close()
    os.sched_setaffinity(0, {c for n in topo.nodes for c in n.cpus})


# ---- 2. allocation cost ----


def pair_loop(pool: SlabPool, n: int) -> Callable[[], float]:
    handle = pool._handle  # the C pool: time the allocator, not Python's Block object

    def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            _ffi.free(_ffi.alloc(handle, 256))
        return (time.perf_counter() - start) / n * 1e9

    return run


def burst_loop(pool: SlabPool, n: int) -> Callable[[], float]:
    handle = pool._handle

    def run() -> float:
        start = time.perf_counter()
        for _ in range(n // 1000):  # one C call per 1000: mostly allocator time
            _ffi.free_batch(_ffi.alloc_batch(handle, 256, 64, 1000))
        return (time.perf_counter() - start) / n * 1e9

    return run


def allocation_cost(pairs: int, repeats: int) -> None:
    pools = {
        "unbound": SlabPool(),
        "local": SlabPool(numa_node="local"),
        "node 0": SlabPool(numa_node=0),
    }
    for name, make in (
        ("alloc+free pairs", pair_loop),
        ("batches of 1000 (pa_alloc_batch/pa_free_batch)", burst_loop),
    ):
        cases = {label: make(pool, pairs) for label, pool in pools.items()}
        for run in cases.values():
            run()  # warm: first slabs carved, caches filled
        results = alternate(cases, repeats)
        base = statistics.median(results["unbound"])
        print(f"\n== {name}, 256-byte blocks, ns per alloc+free, {repeats} rounds of {pairs} ==")
        for label, values in results.items():
            ratio = statistics.median(values) / base
            print(f"  {label:8s} {summary(values)}  ratio to unbound {ratio:.3f}")
    for label, pool in pools.items():
        stats = pool.stats()
        print(
            f"  {label:8s} numa_node={stats.numa_node} numa_bound={stats.numa_bound} "
            f"allocs={stats.allocs} frees={stats.frees}"
        )
        pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--mib", type=int, default=256, help="bandwidth buffer size")
    parser.add_argument("--pairs", type=int, default=20_000, help="allocations per round")
    args = parser.parse_args(argv)
    info = numa.available()
    topo = numa.topology()
    print(f"NUMA: {info.note}")
    print(f"CPUs usable here: {sorted(os.sched_getaffinity(0))}")
    if len([n for n in topo.nodes if n.cpus and n.has_memory]) >= 2:
        bandwidth(topo, args.mib, args.repeats)
    else:
        print("only one node with CPUs and memory: no local-vs-remote bandwidth to measure here")
    allocation_cost(args.pairs, args.repeats)


if __name__ == "__main__":
    main()
