"""ObjectPool's waiting path: threads that share one object hand it over through the queue.

``--threads`` threads each run ``--ops`` rounds of ``with pool.acquire(): time.sleep(0)`` on
``ObjectPool(object, max_size=1)``. The ``sleep(0)`` lets the GIL go while the object is held,
so with more than one thread nearly every acquisition queues a waiter and every release grants
the object to the head of the queue and wakes it: this times the queue, the grant and the
wake-up, not the lock-free stash path (without it, one thread runs its whole GIL slice from its
own stash). Printed: wall and CPU
microseconds per acquisition (the process's CPU time, all threads).

Usage::

    .venv/bin/python bench/bench_object_handoff.py [--threads 2] [--ops 20000]

(after ``make install``; it imports the installed poolalloc, or whatever ``PYTHONPATH`` puts
first, which is how a before/after pair is run).
"""

from __future__ import annotations

import argparse
import threading
import time

from poolalloc import ObjectPool


def run(threads: int, ops: int) -> tuple[float, float]:
    pool: ObjectPool[object] = ObjectPool(object, max_size=1, timeout=30)
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        for _ in range(ops):
            with pool.acquire():
                time.sleep(0)  # lets the GIL go: the other threads queue while it is held

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    wall, cpu = time.perf_counter(), time.process_time()
    start.wait()
    for thread in workers:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    s = pool.stats()
    if not (s.is_balanced and s.acquires == threads * ops):
        raise SystemExit(f"the pool does not balance: {s}")
    pool.close()
    n = threads * ops
    return wall / n * 1e6, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", type=int, default=20000)
    args = parser.parse_args()
    wall, cpu = run(args.threads, args.ops)
    print(f"threads={args.threads} ops={args.ops} wall_us={wall:.2f} cpu_us={cpu:.2f}")


if __name__ == "__main__":
    main()
