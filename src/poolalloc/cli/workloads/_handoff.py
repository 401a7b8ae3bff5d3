"""Workload 3, hand-off: frames read from a socket and kept by worker threads until processed.

The reader cannot reuse its buffer: each frame goes to a queue and a worker checksums it
(``zlib.crc32``, which releases the GIL) before letting it go. Frame latency runs from the
sender's timestamp (``time.monotonic``, the same clock in both processes) to the end of the
worker's processing; CPU per frame is this whole process's (reader and workers) CPU time.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

import poolalloc
from poolalloc.cli.loadgen import percentile
from poolalloc.cli.workloads._common import (
    HOST,
    KIB,
    MIB,
    Doc,
    Goal,
    Metric,
    Variant,
    build_doc,
    child,
    self_cpu,
)
from poolalloc.cli.workloads._peer import HEAD, REQUEST

WORKERS = 2
QUEUE = 4

# A source of frame buffers: size -> (buffer, what to call when the frame is processed)
Source = Callable[[int], tuple[Any, Callable[[], None] | None]]


def _nothing() -> None:
    return None


def run_once(
    port: int, count: int, low: int, high: int, *, seed: int, source: Source
) -> dict[str, float]:
    """Receive ``count`` frames into buffers from ``source`` and process them on workers."""
    work: queue.Queue[tuple[Any, float, Callable[[], None] | None] | None] = queue.Queue(QUEUE)
    latencies: list[float] = []

    def worker() -> None:
        while (item := work.get()) is not None:
            buf, sent, done = item
            zlib.crc32(buf)
            latencies.append(time.monotonic() - sent)  # list.append is atomic
            if done is not None:
                done()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    cpu0, t0 = self_cpu(), time.perf_counter()
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(REQUEST.pack(count, seed, low, high))
        head = bytearray(HEAD.size)
        for _ in range(count):
            if sock.recv_into(head, HEAD.size, socket.MSG_WAITALL) != HEAD.size:
                raise ConnectionError("the frame sender closed early")
            size, sent = HEAD.unpack(head)
            buf, done = source(size)
            if sock.recv_into(buf, size, socket.MSG_WAITALL) != size:
                raise ConnectionError("the frame sender closed early")
            work.put((buf, sent, done))
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, self_cpu() - cpu0
    return {
        "frames_per_s": count / wall,
        "cpu_us_per_frame": cpu / count * 1e6,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def fresh_bytearray(size: int) -> tuple[Any, None]:
    return bytearray(size), None


def numpy_empty(size: int) -> tuple[Any, None]:
    return np.empty(size, dtype=np.uint8), None


METRICS = [
    Metric("frames_per_s", "frames/s", "frames/s", False),
    Metric("cpu_us_per_frame", "CPU per frame", "us", True),
    Metric("p99_ms", "p99 frame latency", "ms", True),
]


def run(*, quick: bool, scale: float = 1.0, mixed: bool = True) -> list[Doc]:
    """Fixed 1 MiB frames (pooled: a BufferPool) and mixed 16 KiB-4 MiB (pooled: an Allocator)."""
    rounds = 3 if quick else 5
    cases = [("1 MiB", MIB, MIB, 300), ("16 KiB-4 MiB", 16 * KIB, 4 * MIB, 300)][
        : 2 if mixed else 1
    ]
    docs = []
    with child("_peer", "frames") as peer:
        port = int(peer.ready[0])
        for label, low, high, base in cases:
            count = max(10, int(base * (1 if quick else 4) * scale))
            if low == high:
                pool: Any = poolalloc.BufferPool(low, capacity=QUEUE + WORKERS + 2)

                def pooled(size: int, pool: Any = pool) -> tuple[Any, Callable[[], None]]:
                    lease = pool.acquire()
                    return lease, lease.release
            else:
                pool = poolalloc.Allocator()

                def pooled(size: int, pool: Any = pool) -> tuple[Any, Callable[[], None]]:
                    lease = pool.alloc(size)
                    return lease, lease.release

            sources: list[tuple[str, Source]] = [
                ("pooled", pooled),
                ("fresh bytearray", fresh_bytearray),
                ("np.empty", numpy_empty),
            ]
            variants = [Variant(name) for name, _ in sources]
            for r in range(rounds):
                for v, (_, source) in zip(variants, sources, strict=True):
                    v.add(**run_once(port, count, low, high, seed=r, source=source))
            if pool.outstanding():
                raise RuntimeError(f"hand-off: {pool.outstanding()} leases never came back")
            pool.close()
            goals = []
            if low == high == MIB:
                goals.append(
                    Goal(
                        "hand-off frames/s >= 2x a fresh bytearray per frame at 1 MiB",
                        "frames_per_s",
                        "pooled",
                        "fresh bytearray",
                        2.0,
                        False,
                    )
                )
            docs.append(
                build_doc(
                    "handoff_" + ("1mib" if low == high else "mixed"),
                    f"hand-off to {WORKERS} worker threads, {label} frames",
                    {
                        "frames_per_run": count,
                        "rounds": rounds,
                        "workers": WORKERS,
                        "queue": QUEUE,
                        "low": low,
                        "high": high,
                    },
                    METRICS,
                    variants,
                    goals,
                )
            )
    return docs
