"""How close the pool's ``with`` form can come to its explicit form on this interpreter.

A ``with`` costs the interpreter two type lookups, two bindings and two calls where an
explicit ``release()`` costs one method call. ``floor.c`` (built here with this interpreter's
headers) has context managers that do no work at all, one with the cheapest bindings CPython
3.11-3.13 allow (a cached builtin method, an INCREF each). So

    floor = t(with Cached: pass) - t(Cached.release())

is what a ``with`` must add over an explicit release on this interpreter, whatever the lease
type does, and (explicit + floor) / explicit is the best ``with / explicit`` any lease type can
reach. The pool's own two forms run in the same rounds (4 KiB BufferPool, capacity 64):

    explicit  b = acquire(); b[0] = 1; b.release()
    with      with acquire() as b: b[0] = 1

Method: inline loops of --loops cycles, this thread's CPU time, the cases alternating in every
round (order rotating); median and min-max over --rounds rounds, in ns per cycle (the loop's
own cost included, as in ``bench_buffers.py``). Needs gcc.

    taskset -c 1 .venv/bin/python bench/with_floor/run.py [--rounds 9] [--loops 200000]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

from poolalloc import BufferPool

HERE = pathlib.Path(__file__).resolve().parent


def build_floor(folder: str) -> ModuleType:
    target = pathlib.Path(folder) / f"floor{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
         "-Wno-missing-field-initializers",
         f"-I{sysconfig.get_paths()['include']}", str(HERE / "floor.c"), "-o", str(target)],
        check=True,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("floor", target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(floor: ModuleType) -> dict[str, Callable[[int], None]]:
    cached, vector, plain = floor.Cached(), floor.Vector(), floor.Plain()
    acquire = BufferPool(4096, capacity=64).acquire

    def loop(n: int) -> None:
        for _ in range(n):
            pass

    def release(n: int) -> None:
        for _ in range(n):
            cached.release()

    def with_of(obj: object) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                with obj:  # type: ignore[attr-defined]
                    pass

        return run

    def explicit(n: int) -> None:
        for _ in range(n):
            b = acquire()
            b[0] = 1
            b.release()

    def with_form(n: int) -> None:
        for _ in range(n):
            with acquire() as b:
                b[0] = 1

    return {
        "loop": loop, "release()": release, "with Cached": with_of(cached),
        "with Vector": with_of(vector), "with Plain": with_of(plain),
        "pool explicit": explicit, "pool with": with_form,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--loops", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = cases(build_floor(folder))
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.thread_time_ns()
            runs[name](args.loops)
            times[name].append((time.thread_time_ns() - start) / args.loops)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds x {args.loops} cycles, "
          "CPU ns per cycle, median (min-max)\n")  # fmt: skip
    print("| case | ns |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {med[name]:.1f} ({min(t):.1f}-{max(t):.1f}) |")
    floor = min(med["with Cached"], med["with Vector"]) - med["release()"]
    explicit = med["pool explicit"]
    print(f"\nfloor of a with over one method call: {floor:.1f} ns")
    print(f"best possible with / explicit: {(explicit + floor) / explicit:.3f}")
    print(
        f"pool with / explicit: {med['pool with'] / explicit:.3f} "
        f"({med['pool with'] - explicit - floor:.1f} ns above the floor)"
    )


if __name__ == "__main__":
    main()
