"""acquire + write one byte + release, against fresh allocations.

Candidates per size n (256 B, 4 KiB, 64 KiB, 1 MiB):
  pool       b = pool.acquire(); b[0] = 1; b.release()     (BufferPool, capacity 64)
  pool-with  with pool.acquire() as b: b[0] = 1
  pool-x32   bs = pool.acquire_many(32); for b in bs: b[0] = 1; pool.release_many(bs)  (per buffer)
  bytearray  b = bytearray(n); b[0] = 1
  np.empty   b = np.empty(n, np.uint8); b[0] = 1
  ffi.new    b = ffi.new("char[]", n); b[0] = b"\\x01"

Method: each candidate is an inline loop (no call per iteration, so the loop overhead is the
same for all) timed with perf_counter, or with this thread's CPU time with --clock cpu.
Candidates alternate within each round (the order rotates every round), for --rounds rounds in
one process; we report the median and min-max per cycle and the ratio of medians against each
baseline. A tracemalloc pass then checks how many bytes a cycle allocates in steady state.

Run: .venv/bin/python bench/bench_buffers.py [--rounds 9] [--loops 200000] [--clock wall|cpu]
     [--sizes "256 B,4 KiB"]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from cffi import FFI

from poolalloc import BufferPool

SIZES = {"256 B": 256, "4 KiB": 4096, "64 KiB": 65536, "1 MiB": 1 << 20}
Loop = Callable[[int], float]

#: the clock the loops read: wall (perf_counter) or this thread's CPU time (--clock cpu), which
#: a machine shared with other processes disturbs less
clock: Callable[[], float] = time.perf_counter


def pool_loop(pool: BufferPool) -> Loop:
    acquire = pool.acquire

    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops):
            b = acquire()
            b[0] = 1
            b.release()
        return clock() - start

    return run


def pool_with_loop(pool: BufferPool) -> Loop:
    acquire = pool.acquire

    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops):
            with acquire() as b:
                b[0] = 1
        return clock() - start

    return run


def pool_batch_loop(pool: BufferPool, batch: int = 32) -> Loop:
    acquire_many, release_many = pool.acquire_many, pool.release_many

    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops // batch):
            bufs = acquire_many(batch)
            for b in bufs:
                b[0] = 1
            release_many(bufs)
        return clock() - start

    return run


def bytearray_loop(n: int) -> Loop:
    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops):
            b = bytearray(n)
            b[0] = 1
        return clock() - start

    return run


def numpy_loop(n: int) -> Loop:
    empty, uint8 = np.empty, np.uint8

    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops):
            b = empty(n, uint8)
            b[0] = 1
        return clock() - start

    return run


def ffi_loop(n: int) -> Loop:
    new = FFI().new

    def run(loops: int) -> float:
        start = clock()
        for _ in itertools.repeat(None, loops):
            b = new("char[]", n)
            b[0] = b"\x01"
        return clock() - start

    return run


def candidates(n: int, pool: BufferPool) -> dict[str, Loop]:
    return {
        "pool": pool_loop(pool),
        "pool-with": pool_with_loop(pool),
        "pool-x32": pool_batch_loop(pool),
        "bytearray": bytearray_loop(n),
        "np.empty": numpy_loop(n),
        "ffi.new": ffi_loop(n),
    }


def loops_for(n: int, loops: int) -> int:
    # the slow baselines at 1 MiB (zero-filled) would take minutes at the full count
    return max(2000, loops // 10) if n >= (1 << 20) else loops


def measure(runs: dict[str, Loop], loops: int, rounds: int) -> dict[str, list[float]]:
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: stash, freelists, caches
        runs[name](max(1, loops // 10))
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(runs[name](loops) / loops * 1e9)
    return times


def peak_above_empty_loop(run: Loop, cycles: int) -> int:
    """Traced peak of `cycles` cycles minus that of a loop of none: 0 means no cycle allocated
    anything, not even a lease object (one object alive at a time would show as its size)."""
    run(1000)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run(0)
        _, empty_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        run(cycles)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - empty_peak


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=200_000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES)
    )
    args = parser.parse_args()
    global clock  # noqa: PLW0603 - chosen once, before any loop runs
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(
        f"rounds={args.rounds} loops={args.loops} (1 MiB: {loops_for(1 << 20, args.loops)})"
        f" clock={args.clock}"
    )
    for label in args.sizes.split(","):
        n = SIZES[label.strip()]
        with BufferPool(n, capacity=64) as pool:
            runs = candidates(n, pool)
            times = measure(runs, loops_for(n, args.loops), args.rounds)
            med = {name: statistics.median(v) for name, v in times.items()}
            best = {name: min(v) for name, v in times.items()}
            print(f"\n## {label}: ns per cycle, median (min-max)")
            for name, values in times.items():
                print(f"  {name:10s} {fmt(values)}")
            # the with statement against the explicit release() it stands for
            print(f"  pool-with / pool = {med['pool-with'] / med['pool']:.3f}")
            for base in ("bytearray", "np.empty", "ffi.new"):
                ratios = "   ".join(
                    f"{mine} / {base} = {med[mine] / med[base]:.3f}"
                    for mine in ("pool", "pool-with", "pool-x32")
                )
                print(f"  {ratios}")
            # on a shared machine the fastest round is the least disturbed: shown beside
            print(
                f"  min-based: pool / bytearray = {best['pool'] / best['bytearray']:.3f}"
                f"   pool / np.empty = {best['pool'] / best['np.empty']:.3f}"
            )
            for name in ("pool", "bytearray"):
                peak = peak_above_empty_loop(runs[name], 100_000)
                print(f"  tracemalloc: {name} peak above an empty loop, 100000 cycles: {peak} B")


if __name__ == "__main__":
    main()
