"""ObjectPool acquire+release against the alternatives, single-threaded and with 4 threads.

Compared per round, in rotating (A/B alternating) order, same process, same loop shape:

* ``pool-with``    ``with pool.acquire() as obj:``
* ``pool-lease``   ``lease = pool.acquire(); lease.obj; lease.release()``
* ``queue``        a ``queue.Queue`` pre-filled with objects: ``obj = q.get(); q.put(obj)``
* ``fresh``        construct a new object each time (no pool at all)

for two objects: ``Small`` (a class with a 4 KiB ``bytearray`` field) and ``Parser`` (a
dict-heavy parser state; its pool resets it on return, and the queue pool resets it too).

With ``--threads 4`` each of 4 threads runs the loop on the shared pool (CPython's GIL makes
this a contention test, not a parallel speed-up); the figure is wall time per operation summed
over all threads. Printed: median and min-max ns per acquire+release over the rounds, and the
per-round ratios pool/queue and pool/fresh (median, min-max).

Usage::

    .venv/bin/python bench/bench_objects.py [--rounds 7] [--ops 200000] [--threads 1 4]

(after ``make install``; it imports the installed poolalloc).
"""

from __future__ import annotations

import argparse
import gc
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable

from poolalloc import ObjectPool


class Small:
    __slots__ = ("buf", "used")

    def __init__(self) -> None:
        self.buf = bytearray(4096)
        self.used = 0


class Parser:
    """What an HTTP/1 parser keeps between messages: headers, counters, a small buffer."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {f"x-header-{i}": "" for i in range(16)}
        self.state: dict[str, int] = {"line": 0, "col": 0, "length": 0, "chunked": 0}
        self.params: dict[str, str] = {}
        self.pending: list[bytes] = []

    def reset(self) -> None:
        self.state["line"] = self.state["col"] = self.state["length"] = 0
        self.params.clear()
        self.pending.clear()


Loop = Callable[[int], None]


def pool_with(pool: ObjectPool[object]) -> Loop:
    acquire = pool.acquire

    def run(n: int) -> None:
        for _ in range(n):
            with acquire():
                pass

    return run


def pool_lease(pool: ObjectPool[object]) -> Loop:
    acquire = pool.acquire

    def run(n: int) -> None:
        for _ in range(n):
            lease = acquire()
            lease.obj  # noqa: B018 - the user's access is part of the cost
            lease.release()

    return run


def queue_pool(q: queue.Queue[object], reset: Callable[[object], None] | None) -> Loop:
    get, put = q.get, q.put

    def run(n: int) -> None:
        if reset is None:
            for _ in range(n):
                put(get())
        else:
            for _ in range(n):
                obj = get()
                reset(obj)
                put(obj)

    return run


def fresh(factory: Callable[[], object]) -> Loop:
    def run(n: int) -> None:
        for _ in range(n):
            factory()

    return run


def variants(kind: str, threads: int) -> dict[str, Loop]:
    factory: Callable[[], object] = Small if kind == "small" else Parser
    reset = None if kind == "small" else Parser.reset
    pool: ObjectPool[object] = ObjectPool(factory, reset=reset, max_size=threads * 2)  # type: ignore[arg-type]
    q: queue.Queue[object] = queue.Queue()
    for _ in range(threads * 2):
        q.put(factory())
    return {
        "pool-with": pool_with(pool),
        "pool-lease": pool_lease(pool),
        "queue": queue_pool(q, reset),  # type: ignore[arg-type]
        "fresh": fresh(factory),
    }


def timed(run: Loop, ops: int, threads: int) -> float:
    """Nanoseconds per operation: wall time of all threads / total operations."""
    per_thread = ops // threads
    gc.collect()
    if threads == 1:
        start = time.perf_counter_ns()
        run(per_thread)
        return (time.perf_counter_ns() - start) / per_thread
    gate = threading.Barrier(threads + 1)

    def worker() -> None:
        gate.wait()
        run(per_thread)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter_ns()
    gate.wait()
    for w in workers:
        w.join()
    return (time.perf_counter_ns() - start) / (per_thread * threads)


def fmt(values: list[float], digits: int = 0) -> str:
    mid, low, high = statistics.median(values), min(values), max(values)
    return f"{mid:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def bench(kind: str, threads: int, rounds: int, ops: int) -> None:
    loops = variants(kind, threads)
    names = list(loops)
    for run in loops.values():  # warm-up: first objects, thread stashes, specialisation
        timed(run, min(ops, 20_000), threads)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: A/B alternation
        for name in order:
            samples[name].append(timed(loops[name], ops, threads))
    title = f"{kind} object, {threads} thread(s), {rounds} rounds x {ops} ops"
    print(f"\n{title} (ns/op: median [min-max])")
    for name in names:
        print(f"  {name:<11} {fmt(samples[name])}")
    for name in ("pool-with", "pool-lease"):
        vs_queue = [a / b for a, b in zip(samples[name], samples["queue"], strict=True)]
        vs_fresh = [a / b for a, b in zip(samples[name], samples["fresh"], strict=True)]
        print(f"  {name}/queue {fmt(vs_queue, 2)}   {name}/fresh {fmt(vs_fresh, 2)}")


def only(name: str, ops: int) -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=8)
    q: queue.Queue[object] = queue.Queue()
    for _ in range(8):
        q.put(object())
    run = pool_with(pool) if name == "pool-with" else queue_pool(q, None)
    run(ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--kinds", nargs="+", default=["small", "parser"])
    parser.add_argument(
        "--only",
        choices=["pool-with", "queue"],
        help="run just this loop --ops times on a plain object and print nothing (for timing "
        "whole processes: the same script and imports either way)",
    )
    args = parser.parse_args()
    if args.only:
        only(args.only, args.ops)
        return
    print(f"Python {sys.version.split()[0]}")
    for kind in args.kinds:
        for threads in args.threads:
            bench(kind, threads, args.rounds, args.ops)


if __name__ == "__main__":
    main()
