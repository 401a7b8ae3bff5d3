"""The index ``poolalloc bench`` reads: one ``run(quick) -> dict`` per suite (bench/README.md).

Each suite reuses the measuring code of the bench script that owns it (``bench_buffers``,
``bench_objects``, ``bench_sendfile``) and reports rows of ratios against the baseline measured
in the same rounds. ``net`` drives ``poolalloc serve`` with the built-in load generator, pooled
against ``--fresh-bytearray``, so it needs no external tool.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def row(case: str, unit: str, ours: list[float], base: list[float], baseline: str) -> Row:
    """A result row from per-round figures (lower is better) measured in the same rounds."""
    per_round = [b / a for a, b in zip(ours, base, strict=True) if a > 0]
    return {
        "case": case,
        "unit": unit,
        "value": statistics.median(ours),
        "baseline": baseline,
        "baseline_value": statistics.median(base),
        "ratio": statistics.median(base) / statistics.median(ours),
        "ratio_min": min(per_round),
        "ratio_max": max(per_round),
        "rounds": len(ours),
    }


def run_alloc(quick: bool) -> dict[str, Any]:
    """acquire + write + release from a BufferPool against bytearray(n) and np.empty(n)."""
    import bench_buffers as bb

    from poolalloc import BufferPool

    rounds, loops = (3, 20_000) if quick else (7, 200_000)
    sizes = {"4 KiB": 4096, "64 KiB": 65536} if quick else bb.SIZES
    rows = []
    for label, n in sizes.items():
        with BufferPool(n, capacity=64) as pool:
            runs = bb.candidates(n, pool)
            times = bb.measure(runs, bb.loops_for(n, loops), rounds)
        for base in ("bytearray", "np.empty"):
            rows.append(row(f"{label} vs {base}", "ns/cycle", times["pool"], times[base], base))
    command = f"poolalloc bench alloc{' --quick' if quick else ''}"
    return {"suite": "alloc", "command": command, "results": rows}


def run_objects(quick: bool) -> dict[str, Any]:
    """ObjectPool borrow/return against a queue.Queue pool and a fresh object each time."""
    import bench_objects as bo

    rounds, ops = (3, 20_000) if quick else (7, 200_000)
    rows = []
    for kind in ("small", "parser"):
        loops = bo.variants(kind, 1)
        names = list(loops)
        for run in loops.values():
            bo.timed(run, min(ops, 20_000), 1)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(bo.timed(loops[name], ops, 1))
        for base in ("queue", "fresh"):
            ours = samples["pool-with"]
            rows.append(row(f"{kind} object vs {base}", "ns/op", ours, samples[base], base))
    command = f"poolalloc bench objects{' --quick' if quick else ''}"
    return {"suite": "objects", "command": command, "results": rows}


def _serve_and_load(extra: list[str], connections: int, requests: int) -> float:
    """Requests per second of one ``poolalloc serve`` run under the built-in load generator."""
    from poolalloc import _cli_demo
    from poolalloc.cli.loadgen import http_request, run_load

    with _cli_demo.running_server(extra) as server:
        request = http_request(_cli_demo.HOST, server.port, _cli_demo.PATH)
        result = run_load(_cli_demo.HOST, server.port, connections, requests, request=request)
    if result.failed:
        raise RuntimeError(f"net bench: {result.failed} requests failed: {result.errors[:2]}")
    return result.requests_per_second


def run_net(quick: bool) -> dict[str, Any]:
    """HTTP keep-alive throughput: pooled read buffers against a fresh bytearray per read."""
    rounds, connections, requests = (2, 100, 50) if quick else (5, 1000, 100)
    pooled: list[float] = []
    fresh: list[float] = []
    for r in range(rounds):  # alternate which goes first
        order = [(pooled, ["--engine", "epoll"]), (fresh, ["--fresh-bytearray"])]
        for samples, extra in order if r % 2 == 0 else order[::-1]:
            samples.append(_serve_and_load(extra, connections, requests))
    # rows want "lower is better": use microseconds per request
    us_pooled = [1e6 / rps for rps in pooled]
    us_fresh = [1e6 / rps for rps in fresh]
    case = f"{connections} conns x {requests} req, us/request"
    rows = [row(case, "us/req", us_pooled, us_fresh, "fresh bytearray")]
    command = f"poolalloc bench net{' --quick' if quick else ''}"
    return {"suite": "net", "command": command, "results": rows, "rps_pooled": pooled,
            "rps_fresh_bytearray": fresh}  # fmt: skip


def run_zerocopy(quick: bool) -> dict[str, Any]:
    """CPU seconds per GiB sent: os.sendfile against readinto a pooled buffer + send."""
    import bench_sendfile as bs

    from poolalloc import BufferPool

    rounds, size_mib = (2, 32) if quick else (3, 256)
    recv = subprocess.Popen([sys.executable, "-c", bs.RECEIVER], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    port = int(recv.stdout.readline())
    size = size_mib << 20
    results: dict[str, list[float]] = {"sendfile": [], "read+send": []}
    methods: dict[str, Callable[..., int]] = {
        "sendfile": bs.send_with_sendfile,
        "read+send": bs.send_with_loop,
    }
    pool = BufferPool(256 << 10, capacity=4)
    try:
        with tempfile.TemporaryFile() as f:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                f.write(block)
            f.flush()
            for r in range(rounds):
                for name in list(methods) if r % 2 == 0 else list(methods)[::-1]:
                    with socket.create_connection(("127.0.0.1", port)) as sock:
                        cpu = bs.cpu_seconds()
                        assert methods[name](sock, f, size, pool) == size
                        results[name].append((bs.cpu_seconds() - cpu) / (size / (1 << 30)))
    finally:
        recv.kill()
        recv.wait()
        pool.close()
    ms = {name: [v * 1000 for v in values] for name, values in results.items()}
    rows = [row(f"{size_mib} MiB file", "ms CPU/GiB", ms["sendfile"], ms["read+send"],
                "readinto + send")]  # fmt: skip
    command = f"poolalloc bench zerocopy{' --quick' if quick else ''}"
    return {"suite": "zerocopy", "command": command, "results": rows}


SUITES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "alloc": run_alloc,
    "objects": run_objects,
    "net": run_net,
    "zerocopy": run_zerocopy,
}


if __name__ == "__main__":
    for name, run in SUITES.items():
        start = time.perf_counter()
        print(name, run(True)["results"], f"{time.perf_counter() - start:.1f}s")
