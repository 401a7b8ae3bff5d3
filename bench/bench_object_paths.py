"""ObjectPool's three acquire+release paths, one thread, in ns per pair (process CPU time).

* ``stash``   the default: the thread's own lock-free stash (the fast path)
* ``shared``  ``stash_size=0``: every return and borrow goes through the shared list and lock
* ``create``  ``max_idle=0, stash_size=0``: every return disposes, every borrow builds anew
  (a permit, the factory, a new slot), the path a pool pays while it grows

Each figure is the best of ``--repeat`` runs of ``--ops`` pairs.

Usage::

    .venv/bin/python bench/bench_object_paths.py [--ops 200000] [--repeat 5]

(after ``make install``; it imports the installed poolalloc, or whatever ``PYTHONPATH`` puts
first, which is how a before/after pair is run).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from poolalloc import ObjectPool

PATHS: dict[str, dict[str, Any]] = {
    "stash": {},
    "shared": {"stash_size": 0},
    "create": {"max_idle": 0, "stash_size": 0},
}


def run(options: dict[str, Any], ops: int) -> float:
    pool: ObjectPool[list[int]] = ObjectPool(list, **options)
    acquire = pool.acquire
    for _ in range(1000):
        acquire().release()
    start = time.process_time()
    for _ in range(ops):
        acquire().release()
    spent = time.process_time() - start
    pool.close()
    return spent / ops * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    best = {
        name: min(run(opts, args.ops) for _ in range(args.repeat)) for name, opts in PATHS.items()
    }
    print(" ".join(f"{name}_ns={ns:.0f}" for name, ns in best.items()))


if __name__ == "__main__":
    main()
