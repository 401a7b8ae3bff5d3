"""Alternating A/B runs of the many-connections workload's server measurement.

Each variant is ``NAME=PYTHON:KIND``: the interpreter whose installed poolalloc runs the server
(a second virtual environment holds the code before a change) and the server kind of
``poolalloc.cli.workloads._connserver`` (``pooled`` is the epoll Reactor, ``pooled-uring`` the
io_uring Proactor). Every round runs every variant once, in order, each with the same load as
``poolalloc bench workloads --workload connections`` (a 64 B message every 3 s per connection,
2% of them 256 KiB); it prints each run and the median (min-max) of memory per connection
(peak RSS over the listening RSS), p99 latency and server CPU, with the 1-minute load average.

Usage::

    .venv/bin/python bench/conn_memory_ab.py --rounds 3 \\
        epoll=.venv/bin/python:pooled uring=.venv/bin/python:pooled-uring \\
        uring-before=/tmp/before/.venv/bin/python:pooled-uring
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

CODE = (
    "import json, sys\n"
    "from poolalloc.cli.workloads._conns import measure\n"
    "print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), 3.0, 0.02,"
    " seed=int(sys.argv[4]))))"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME=PYTHON:KIND")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    variants = []
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        python, _, kind = rest.rpartition(":")
        variants.append((name, os.path.abspath(python), kind))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for name, python, kind in variants:
            load = os.getloadavg()[0]
            cmd = [python, "-P", "-c", CODE, kind, str(args.connections), str(args.seconds), str(r)]
            out = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=600, cwd="/"
            )
            if out.returncode:
                print(f"{r} {name} failed: {out.stderr[-600:]}", flush=True)
                continue
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            doc["load1"] = load
            results[name].append(doc)
            print(r, name, json.dumps(doc), flush=True)
    for name, docs in results.items():
        for key in ("kib_per_conn", "p99_ms", "cpu_s", "load1"):
            vals = [d[key] for d in docs]
            if vals:
                print(
                    f"{name:14} {key:13} median {statistics.median(vals):.3f} "
                    f"({min(vals):.3f}-{max(vals):.3f}) n={len(vals)}"
                )


if __name__ == "__main__":
    main()
