"""CPU cost of one ObjectPool lease cycle: the ``with`` form against explicit acquire/release.

Loops, each on ``ObjectPool(object)`` (no reset, no limits: the plain fast path):

* ``explicit``  ``lease = acquire(); lease.release()``
* ``with``      ``with acquire() as obj: pass``
* ``dropped``   ``acquire()`` and drop the lease unreleased (its finalizer gives it back)
* ``obj``       ``lease = acquire(); lease.obj; lease.release()`` (attribute read included)

Each round runs every loop once, rotating the order; a figure is CPU ns (``time.thread_time``,
the shared machine's other jobs do not count) per cycle. Printed: median and min-max over the
rounds per loop, and the per-round ratio ``with / explicit``.

``--builds DIR [DIR ...]`` runs the same rounds in child processes, one per build, alternating
between them round by round: each DIR is put first on ``sys.path`` ("-" for the installed
package), so an old build installed with ``pip install --target DIR`` is measured against the
current one in the same run. ``DIR+nodel`` is DIR with the Python ``Lease.__del__`` (builds that
have one) deleted before the rounds: what the finalizer costs per lease freed.

Usage::

    .venv/bin/python bench/bench_object_with.py [--rounds 9] [--ops 200000]
    .venv/bin/python bench/bench_object_with.py --builds /tmp/old - --rounds 9
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

Loop = Callable[[int], None]
LOOPS = ("explicit", "with", "dropped", "obj")


def make_loops(pool: Any) -> dict[str, Loop]:
    acquire = pool.acquire

    def explicit(n: int) -> None:
        for _ in range(n):
            lease = acquire()
            lease.release()

    def with_form(n: int) -> None:
        for _ in range(n):
            with acquire():
                pass

    def dropped(n: int) -> None:
        for _ in range(n):
            acquire()

    def obj(n: int) -> None:
        for _ in range(n):
            lease = acquire()
            lease.obj  # noqa: B018
            lease.release()

    return {"explicit": explicit, "with": with_form, "dropped": dropped, "obj": obj}


def one_round(loops: dict[str, Loop], ops: int, shift: int) -> dict[str, float]:
    names = list(loops)
    names = names[shift % len(names) :] + names[: shift % len(names)]
    out: dict[str, float] = {}
    for name in names:
        loops[name](ops // 10)  # warm
        gc.collect()
        gc.disable()
        start = time.thread_time_ns()
        loops[name](ops)
        out[name] = (time.thread_time_ns() - start) / ops
        gc.enable()
    return out


def child(ops: int, rounds: int, first: int, nodel: bool) -> None:
    from poolalloc import ObjectPool
    from poolalloc.objects.lease import Lease

    if nodel:
        del Lease.__del__  # type: ignore[attr-defined]

    pool: Any = ObjectPool(object)
    loops = make_loops(pool)
    for r in range(rounds):
        print(json.dumps(one_round(loops, ops, first + r)), flush=True)
    pool.close()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(label: str, rows: list[dict[str, float]]) -> None:
    cells = [summary([r[name] for r in rows]) for name in LOOPS]
    ratios = [r["with"] / r["explicit"] for r in rows]
    ratio = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
    print(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--builds", nargs="+", help="sys.path entries to compare ('-': installed)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--nodel", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.ops, 1, args.child, args.nodel)
        return
    print(f"# Python {platform.python_version()}, load average {os.getloadavg()}")
    header = "| build | " + " | ".join(f"`{n}`" for n in LOOPS) + " | `with / explicit` |"
    print(header)
    print("|---" * (len(LOOPS) + 2) + "|")
    if not args.builds:
        from poolalloc import ObjectPool

        pool: Any = ObjectPool(object)
        loops = make_loops(pool)
        report("installed", [one_round(loops, args.ops, r) for r in range(args.rounds)])
        return
    rows: dict[str, list[dict[str, float]]] = {b: [] for b in args.builds}
    for r in range(args.rounds):
        for build in args.builds if r % 2 == 0 else reversed(args.builds):
            env = dict(os.environ)
            path, _, flag = build.partition("+")
            if path != "-":
                env["PYTHONPATH"] = path
            cmd = [sys.executable, __file__, "--child", str(r), "--ops", str(args.ops)]
            if flag == "nodel":
                cmd.append("--nodel")
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rows[build].append(json.loads(res.stdout.splitlines()[-1]))
    for build in args.builds:
        report(build, rows[build])
    print(f"# load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
