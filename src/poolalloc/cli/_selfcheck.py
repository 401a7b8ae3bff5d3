"""``poolalloc selfcheck``: allocate across every size class from several threads, check, print.

Each thread allocates blocks of sizes on both edges of every size class (plus one huge
request), writes a pattern, and fresh threads free them (every free is a cross-thread free);
then the pool checks its invariants and must show nothing in use.
"""

from __future__ import annotations

import random
import sys
import threading

from poolalloc.errors import PoolError
from poolalloc.slab import Block, SlabPool, size_classes
from poolalloc.stats import ClassStats, PoolStats


def _class_sizes() -> list[int]:
    """Request sizes hitting both edges of every class, plus one huge request."""
    sizes: list[int] = []
    previous = 0
    for block_size, _slab in size_classes():
        sizes += [previous + 1, block_size]
        previous = block_size
    return [*sizes, previous + 1]


def _producer(
    pool: SlabPool, sizes: list[int], seed: int, out: list[Block], errors: list[str]
) -> None:
    rng = random.Random(seed)
    for size in sizes:
        alignment = rng.choice((64, 128, 4096))
        try:
            block = pool.alloc(size, alignment)
            block.write(0, seed.to_bytes(1, "little") * min(size, 64))
        except Exception as exc:  # the check failed: said as one line, not a thread's traceback
            errors.append(f"thread {seed}: allocating {size} bytes ({alignment}-aligned): {exc}")
            return
        out.append(block)


def _consumer(blocks: list[Block], seed: int, errors: list[str]) -> None:
    for block in blocks:
        try:
            expected = seed.to_bytes(1, "little") * min(block.nbytes, 64)
            if block.read(0, len(expected)) != expected:
                errors.append(f"block {block!r} lost its contents")
            block.free()
        except Exception as exc:
            errors.append(f"thread {seed}: freeing {block!r}: {exc}")


def _run_threads(pool: SlabPool, rounds: int, threads: int) -> list[str]:
    """Each thread allocates; the next thread frees (cross-thread frees)."""
    errors: list[str] = []
    sizes = _class_sizes()
    for r in range(rounds):
        made: list[list[Block]] = [[] for _ in range(threads)]
        workers = [
            threading.Thread(
                target=_producer, args=(pool, sizes, r * threads + t + 1, made[t], errors)
            )
            for t in range(threads)
        ]
        _join(workers)
        # fresh threads free what the producers made: every free is a cross-thread free
        freers = [
            threading.Thread(target=_consumer, args=(made[t], r * threads + t + 1, errors))
            for t in range(threads)
        ]
        _join(freers)
    return errors


def _join(threads: list[threading.Thread]) -> None:
    started = []
    try:
        for t in threads:
            t.start()
            started.append(t)
    finally:  # threads that could start end before the pool closes, even if one could not
        for t in started:
            t.join()


def _table(rows: list[ClassStats], total: PoolStats) -> str:
    head = f"{'block':>9} {'slab':>9} {'slabs':>6} {'in use':>7} {'free':>6} {'allocs':>8} "
    head += f"{'frees':>8} {'hit %':>6} {'xchg':>6}"
    lines = [head, "-" * len(head)]
    for c in rows:
        if c.allocs == 0 and c.slabs == 0:
            continue
        lines.append(
            f"{c.block_size:>9} {c.slab_bytes:>9} {c.slabs:>6} {c.in_use_blocks:>7} "
            f"{c.free_blocks:>6} {c.allocs:>8} {c.frees:>8} {100 * c.hit_rate:>6.1f} "
            f"{c.depot_exchanges:>6}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"pool: allocs {total.allocs} frees {total.frees} in use {total.in_use_blocks} blocks "
        f"({total.in_use_bytes} B), mapped {total.mapped_bytes} B (peak {total.mapped_peak} B), "
        f"huge {total.huge_allocs}, hit rate {100 * total.hit_rate:.1f}%"
    )
    return "\n".join(lines)


def run(rounds: int = 3, threads: int = 4) -> int:
    """Allocate across every size class from ``threads`` threads; 0 when all checks pass."""
    with SlabPool() as pool:
        errors = _run_threads(pool, rounds, threads)
        try:
            pool.check()
        except PoolError as exc:
            errors.append(f"pool check failed: {exc}")
        stats = pool.stats()
        print(_table(pool.class_stats(), stats))
        if stats.in_use_blocks or stats.allocs != stats.frees:
            errors.append(f"{stats.in_use_blocks} blocks outstanding")
    for line in errors:
        print("FAIL:", line, file=sys.stderr)
    print("selfcheck:", "FAILED" if errors else "ok")
    return 1 if errors else 0
