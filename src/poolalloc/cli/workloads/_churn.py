"""Workload 4, tail latency under churn: mixed message sizes, the GC and the allocator busy.

Each request asks the peer for a message of a log-uniform size (512 B to 1 MiB); the message
is read into a new buffer (a lease from an Allocator, or a fresh bytearray), a window of the
last messages is kept alive (so buffers of many sizes are live at once), and each message
also builds some cyclic garbage, so the garbage collector runs throughout. The latency is the
round trip of one request: asking, reading, keeping.
"""

from __future__ import annotations

import collections
import gc
import random
import socket
import time
from typing import Any

import poolalloc
from poolalloc.cli.loadgen import percentile
from poolalloc.cli.workloads._common import (
    HOST,
    MIB,
    Doc,
    Goal,
    Metric,
    Variant,
    build_doc,
    child,
)
from poolalloc.cli.workloads._peer import COUNT, frame_sizes

WINDOW = 64


def _garbage(n: int) -> None:
    for _ in range(n):
        a: dict[str, Any] = {}
        b = [a]
        a["b"] = b  # a cycle: only the garbage collector frees it


def run_once(sock: socket.socket, sizes: list[int], pooled: Any) -> list[float]:
    """The round-trip latencies of one pass over ``sizes``."""
    window: collections.deque[Any] = collections.deque()
    latencies = []
    send, recv_into, pack = sock.sendall, sock.recv_into, COUNT.pack
    for size in sizes:
        t0 = time.perf_counter()
        send(pack(size))
        buf = pooled.alloc(size) if pooled is not None else bytearray(size)
        if recv_into(buf, size, socket.MSG_WAITALL) != size:
            raise ConnectionError("the peer closed early")
        window.append(buf)
        if len(window) > WINDOW:
            old = window.popleft()
            if pooled is not None:
                old.release()
        _garbage(20)
        latencies.append(time.perf_counter() - t0)
    if pooled is not None:
        for buf in window:
            buf.release()
    return latencies


METRICS = [
    Metric("p99_ms", "p99 latency", "ms", True),
    Metric("p999_ms", "p99.9 latency", "ms", True),
    Metric("p50_ms", "median latency", "ms", True),
]


def run(*, quick: bool, scale: float = 1.0) -> list[Doc]:
    """Pooled and fresh in alternating passes over the same sizes; percentiles per pass."""
    rounds = 4 if quick else 8
    per_round = max(100, int((5000 if quick else 20000) * scale))
    variants = [Variant("pooled"), Variant("fresh bytearray")]
    allocator = poolalloc.Allocator()
    gc_was = gc.isenabled()
    gc.enable()
    try:
        with (
            child("_peer", "sizes") as peer,
            socket.create_connection((HOST, int(peer.ready[0]))) as sock,
        ):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for r in range(rounds):
                sizes = frame_sizes(per_round, random.Random(r).randrange(1 << 30), 512, MIB)
                for v in variants:
                    lat = run_once(sock, sizes, allocator if v.name == "pooled" else None)
                    v.add(
                        p50_ms=percentile(lat, 50) * 1e3,
                        p99_ms=percentile(lat, 99) * 1e3,
                        p999_ms=percentile(lat, 99.9) * 1e3,
                    )
    finally:
        if not gc_was:
            gc.disable()
    if allocator.outstanding():
        raise RuntimeError(f"churn: {allocator.outstanding()} leases never came back")
    allocator.close()
    goals = [
        Goal(
            "p99.9 latency under churn <= 0.7x fresh",
            "p999_ms",
            "pooled",
            "fresh bytearray",
            0.7,
            True,
        )
    ]
    return [
        build_doc(
            "churn",
            f"churn: messages of 512 B-1 MiB, {WINDOW} kept alive, cyclic garbage per message",
            {
                "messages_per_pass": per_round,
                "rounds": rounds,
                "window": WINDOW,
                "low": 512,
                "high": MIB,
            },
            METRICS,
            variants,
            goals,
        )
    ]
