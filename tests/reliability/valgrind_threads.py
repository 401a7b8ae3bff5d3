"""A threaded workout of the public API, small enough to run under valgrind (``make valgrind``).

Four threads share one BufferPool, one Allocator, one SlabPool and one ObjectPool and hand
leases to each other, so blocks are freed on other threads than the one that took them; views
outlive releases (parked blocks). Prints ``ok`` when every count balances.
"""

from __future__ import annotations

import os
import queue
import threading

from poolalloc import Allocator, BufferPool, ObjectPool, PoolExhausted, SlabPool

ROUNDS = int(os.environ.get("PA_VG_ROUNDS", "300"))
THREADS = 4


def work(me: int, pools: tuple, boxes: list[queue.SimpleQueue], done: list[int]) -> None:
    bufs, alloc, slab, objs = pools
    n = 0
    for i in range(ROUNDS):
        while True:  # what waits in my box holds capacity: drain it while the pool is full
            n += drain(boxes[me])
            try:
                b = bufs.acquire(timeout=0.01)
                break
            except PoolExhausted:
                continue
        a = alloc.alloc(64 + (i * 37) % 70000)
        s = slab.alloc(100 + i % 5000)
        b[:2] = a[:2] = b"ok"
        s.write(0, b"ok")
        view = memoryview(a)[:2]
        boxes[(me + 1) % THREADS].put((b, a, s, view))
        with objs.acquire(timeout=5) as o:
            o.append(i)
    done.append(n)


def drain(box: queue.SimpleQueue) -> int:
    """Check and release what the previous thread handed over (blocks freed cross-thread)."""
    n = 0
    while True:
        try:
            b, a, s, view = box.get_nowait()
        except queue.Empty:
            return n
        assert bytes(b[:2]) == bytes(view) == s.read(0, 2) == b"ok"
        a.release()  # parked: the view still holds the block
        b.release()
        s.free()
        del view
        n += 1


def main() -> None:
    pools = (
        BufferPool(4096, capacity=4 * THREADS * 4),
        Allocator(),
        SlabPool(),
        ObjectPool(list, reset=lambda x: x.clear(), max_size=THREADS),
    )
    boxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(THREADS)]
    done: list[int] = []
    threads = [threading.Thread(target=work, args=(i, pools, boxes, done)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == THREADS
    for box in boxes:
        drain(box)
    bufs, alloc, slab, objs = pools
    assert bufs.outstanding() == 0
    assert alloc.outstanding() == 0
    assert slab.stats().in_use_blocks == 0
    assert objs.stats().in_use == 0
    for p in pools:
        p.close()
    print("ok", sum(done))


if __name__ == "__main__":
    main()
