"""Workload 2, many connections: server memory per connection and latency under a light load.

Each server runs in a process of its own pinned to CPU 0, the load generator in another on
CPU 1. Memory per connection is (peak RSS - RSS when listening) / connections, both read from
``/proc/PID/status`` (VmHWM, VmRSS) of the server.
"""

from __future__ import annotations

import json
import time

from poolalloc.cli.loadgen import percentile
from poolalloc.cli.workloads._common import (
    KIB,
    Child,
    Doc,
    Goal,
    Metric,
    Variant,
    build_doc,
    has_uvloop,
    proc_cpu,
    proc_status,
)
from poolalloc.cli.workloads._relay import uring_available

SERVERS = [
    ("pooled", "pooled"),
    ("pooled io_uring", "pooled-uring"),
    ("asyncio Protocol", "asyncio-plain"),
    ("uvloop Protocol", "uvloop-plain"),
    ("asyncio BufferedProtocol", "asyncio-buffered"),
    ("uvloop BufferedProtocol", "uvloop-buffered"),
    ("asyncio streams", "asyncio-streams"),
]

METRICS = [
    Metric("kib_per_conn", "server memory per connection", "KiB", True),
    Metric("p99_ms", "p99 latency", "ms", True),
    Metric("cpu_s", "server CPU", "s", True),
]


def measure(
    kind: str, connections: int, seconds: float, interval: float, share: float, *, seed: int
) -> dict[str, float]:
    """One server under one load run: its memory per connection, the client's latencies."""
    server = Child("_connserver", kind)
    try:
        port = server.wait_ready()[0]
        time.sleep(0.2)
        idle = proc_status(server.pid)["VmRSS"]
        cpu0 = proc_cpu(server.pid)
        client = Child(
            "_connclient",
            port,
            str(connections),
            str(seconds),
            str(interval),
            str(share),
            str(seed),
        )
        try:
            client.wait_ready()
            out = client.result(timeout=seconds + 120)
        finally:
            client.stop()
        status = proc_status(server.pid)
        cpu = proc_cpu(server.pid) - cpu0
    finally:
        server.stop()
    doc = json.loads(out.strip().splitlines()[-1])
    if "error" in doc:
        raise RuntimeError(f"{kind}: {doc['error']}")
    lat = doc["latencies"]
    return {
        "kib_per_conn": (status["VmHWM"] - idle) / connections / KIB,
        "p99_ms": percentile(lat, 99) * 1e3,
        "cpu_s": cpu,
        "messages": float(len(lat)),
    }


def run(
    *,
    quick: bool,
    connections: int | None = None,
    seconds: float | None = None,
    servers: list[str] | None = None,
) -> list[Doc]:
    """Every server in turn (A B C ... A B C ...), the same load each time."""
    n = connections or (1000 if quick else 10000)
    secs = seconds or (4.0 if quick else 15.0)
    interval = 1.5 if quick else 3.0
    share = 0.02
    rounds = 1 if quick else 2
    chosen = [s for s in SERVERS if servers is None or s[0] in servers]
    variants = [Variant(name) for name, _ in chosen]
    for v, (_, kind) in zip(variants, chosen, strict=True):
        if kind.startswith("uvloop") and not has_uvloop():
            v.available, v.note = False, "not installed"
        if kind == "pooled-uring":
            ok, why = uring_available()
            if not ok:
                v.available, v.note = False, why
    for r in range(rounds):
        for v, (_, kind) in zip(variants, chosen, strict=True):
            if v.available:
                v.add(**measure(kind, n, secs, interval, share, seed=r))
    goals = [
        Goal(
            "io_uring memory per connection <= the epoll Reactor's",
            "kib_per_conn",
            "pooled io_uring",
            "pooled",
            1.0,
            True,
        ),
        Goal(
            "memory per connection <= 0.5x uvloop's plain Protocol server",
            "kib_per_conn",
            "pooled",
            "uvloop Protocol",
            0.5,
            True,
        ),
    ]
    # a goal between servers not asked for says nothing (the demo runs no io_uring server):
    # only one whose server was asked for and could not run is "not measured"
    asked = {name for name, _ in chosen}
    goals = [g for g in goals if g.a in asked and g.b in asked]
    return [
        build_doc(
            "connections",
            f"{n:,} connections, a 64 B message every {interval:g} s, 2% of them 256 KiB",
            {
                "connections": n,
                "seconds": secs,
                "interval_s": interval,
                "burst_share": share,
                "burst_bytes": 256 * KIB,
                "rounds": rounds,
            },
            METRICS,
            variants,
            goals,
        )
    ]
