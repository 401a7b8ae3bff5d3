"""RSS of an idle SlabPool over time, with and without ``decay_ms``.

Each configuration runs in a fresh child process: it records the process RSS (from
``/proc/self/statm``), allocates and touches ``--mib`` MiB of 64 KiB blocks, frees them all, and
then idles for ``--seconds``, sampling RSS and the pool's ``mapped_bytes`` every 20 ms. A timer
(what an event loop would do) calls ``pool.decay()`` every ``--tick-ms``. Without ``decay_ms``
the pool keeps what its retention budget allows (``retain_bytes``, 8 MiB by default per thread
using the pool; one thread here) for good;
with it, what stayed idle for ``decay_ms`` goes back. Prints a JSON summary; with matplotlib,
``--png`` draws both curves.

Usage:
    python bench/decay_rss.py --decay-ms 500 --png docs/img/decay_rss.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def child(decay_ms: int | None, mib: int, seconds: float, tick_ms: int) -> dict[str, object]:
    from poolalloc import SlabPool

    pool = SlabPool(decay_ms=decay_ms)
    base = rss_bytes()
    blocks = [pool.alloc(64 << 10) for _ in range(mib * 16)]
    for b in blocks:
        b.write(0, b"\xff" * (64 << 10))
    peak = rss_bytes() - base
    for b in blocks:
        b.free()
    del blocks
    samples: list[tuple[float, float, float]] = []
    start = time.monotonic()
    next_tick = start
    while (now := time.monotonic()) - start < seconds:
        if decay_ms is not None and now >= next_tick:
            pool.decay()
            next_tick = now + tick_ms / 1000
        samples.append(
            (now - start, (rss_bytes() - base) / 2**20, pool.stats().mapped_bytes / 2**20)
        )
        time.sleep(0.02)
    pool.close()
    return {"decay_ms": decay_ms, "peak_rss_mib": peak / 2**20, "samples": samples}


def plot(runs: list[dict[str, object]], png: str, mib: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for run in runs:
        samples = run["samples"]
        assert isinstance(samples, list)
        label = "no decay_ms" if run["decay_ms"] is None else f"decay_ms={run['decay_ms']}"
        ax.plot([s[0] for s in samples], [s[1] for s in samples], lw=1.4, label=f"RSS, {label}")
        ax.plot(
            [s[0] for s in samples], [s[2] for s in samples], lw=1, ls="--",
            label=f"mapped, {label}",
        )  # fmt: skip
    ax.set_xlabel("seconds idle after freeing everything")
    ax.set_ylabel("MiB above the start")
    ax.set_title(f"Idle SlabPool after {mib} MiB of 64 KiB blocks were freed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decay-ms", type=int, default=500)
    p.add_argument("--mib", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--tick-ms", type=int, default=100, help="how often the timer calls decay()")
    p.add_argument("--png", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        decay = None if args.child == "none" else int(args.child)
        print(json.dumps(child(decay, args.mib, args.seconds, args.tick_ms)))
        return 0
    runs = []
    for cfg in ("none", str(args.decay_ms)):
        out = subprocess.run(
            [sys.executable, __file__, "--child", cfg, "--mib", str(args.mib),
             "--seconds", str(args.seconds), "--tick-ms", str(args.tick_ms)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        runs.append(json.loads(out.stdout))
    summary = []
    for run in runs:
        samples = run["samples"]
        floor_at = next((t for t, _, mapped in samples if mapped == 0), None)
        summary.append(
            {
                "decay_ms": run["decay_ms"],
                "peak_rss_mib": round(run["peak_rss_mib"], 1),
                "rss_mib_first_sample": round(samples[0][1], 1),
                "rss_mib_last_sample": round(samples[-1][1], 1),
                "mapped_mib_last_sample": round(samples[-1][2], 1),
                "seconds_until_nothing_mapped": None if floor_at is None else round(floor_at, 2),
            }
        )
    print(json.dumps(summary, indent=2))
    if args.png:
        plot(runs, args.png, args.mib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
