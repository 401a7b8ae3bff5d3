"""The relay workload's two event-loop variants alone: the epoll Reactor and the io_uring Proactor.

The same code as ``poolalloc bench workloads --workload relay`` runs for these two rows
(``poolalloc.cli.workloads._loops``), with the same peer process, but without the other seven
variants, so that A/B runs of a change to either engine take a minute, not ten. Engines
alternate inside each round; CPU is ``time.thread_time`` of the relaying thread, per GiB.

    python bench/relay_loops.py --rounds 4 --mib 512 --chunk 1024 --chunk 64

Prints one line per run and, per read size, the median (min-max) of each engine and the ratio
of the medians (io_uring / epoll). ``--ring-bytes 0`` runs the Proactor without its bound on
staged receive blocks, ``--min-high-water 0`` the relay with its marks at four reads only (the
relay before these two settings); against a tree without them, leave both out.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

from poolalloc.cli.workloads._common import GIB, KIB, MIB, child
from poolalloc.cli.workloads._loops import relay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mib", type=int, default=512, help="MiB relayed per run")
    ap.add_argument("--chunk", type=int, action="append", help="read size in KiB (repeatable)")
    ap.add_argument("--ring-bytes", type=int, help="Proactor ring_bytes (0: no bound)")
    ap.add_argument("--min-high-water", type=int, help="floor of the sink's high-water mark")
    args = ap.parse_args()
    options: dict[str, int | None] = {}
    if args.ring_bytes is not None:
        options["ring_bytes"] = args.ring_bytes or None
    if args.min_high_water is not None:
        options["min_high_water"] = args.min_high_water
    engines = {name: functools.partial(relay, name, **options) for name in ("epoll", "uring")}
    chunks = [c * KIB for c in (args.chunk or [1024, 64])]
    total = args.mib * MIB
    print(f"load average at start: {os.getloadavg()}")
    with child("_peer", "source", "sink") as peer:
        src_port, sink_port = (int(p) for p in peer.ready)
        for chunk in chunks:
            cpu: dict[str, list[float]] = {name: [] for name in engines}
            for rnd in range(args.rounds):
                order = list(engines) if rnd % 2 == 0 else list(reversed(engines))
                for name in order:
                    c0, t0 = time.thread_time(), time.perf_counter()
                    engines[name](src_port, sink_port, total, chunk)
                    c, w = time.thread_time() - c0, time.perf_counter() - t0
                    cpu[name].append(c / (total / GIB))
                    print(
                        f"chunk {chunk // KIB} KiB round {rnd} {name}: "
                        f"{c / (total / GIB):.3f} s/GiB CPU, {total / GIB / w:.2f} GiB/s"
                    )
            med = {n: statistics.median(v) for n, v in cpu.items()}
            for n, v in cpu.items():
                print(f"  {chunk // KIB} KiB {n}: {med[n]:.3f} ({min(v):.3f}-{max(v):.3f}) s/GiB")
            print(f"  {chunk // KIB} KiB uring/epoll: {med['uring'] / med['epoll']:.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
