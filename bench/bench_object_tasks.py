"""ObjectPool under asyncio contention: four tasks per object, each acquiring, yielding once
and releasing in a loop, so nearly every acquisition queues and every release hands over.

Printed: process CPU microseconds per acquisition for each ``--max-size``; it shows whether the
cost of a hand-over grows with the number of objects and waiting tasks.

Usage::

    .venv/bin/python bench/bench_object_tasks.py [--max-size 32 512 2048] [--ops 40000]

(after ``make install``; it imports the installed poolalloc, or whatever ``PYTHONPATH`` puts
first, which is how a before/after pair is run).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from poolalloc import ObjectPool


async def run(max_size: int, ops: int) -> float:
    pool: ObjectPool[object] = ObjectPool(object, max_size=max_size)
    tasks = 4 * max_size
    rounds = max(ops // tasks, 1)

    async def worker() -> None:
        for _ in range(rounds):
            async with pool.acquire_async():
                await asyncio.sleep(0)

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    spent = time.process_time() - start
    s = pool.stats()
    if not (s.is_balanced and s.acquires == tasks * rounds):
        raise SystemExit(f"the pool does not balance: {s}")
    pool.close()
    return spent / (tasks * rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-size", type=int, nargs="+", default=[32, 512, 2048])
    parser.add_argument("--ops", type=int, default=40000)
    args = parser.parse_args()
    figures = [f"{m}={asyncio.run(run(m, args.ops)):.1f}" for m in args.max_size]
    print("cpu_us_per_acquisition", " ".join(figures))


if __name__ == "__main__":
    main()
