"""``mmap`` failing at random during load, through the core's fault injection (``pa_fault_set``).

* Pools under threads: while four threads allocate and free (sizes that need new chunks and
  dedicated mappings; trims give chunks back so more maps are needed), a chaos thread keeps
  arming random failures. Every failure is a ``PoolMemoryError`` (a ``MemoryError``); every
  block handed out is intact and comes back; the counters balance; once the faults stop, the
  pools work as new.
* The HTTP server: with the OS refusing memory for its read buffers, connections wait (the
  Connection retries a refused lease) and are all answered once memory is back.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from relkit import TEST_SECONDS, ThreadedHttp

from poolalloc import Allocator, BufferPool, PoolMemoryError, SlabPool, _ffi


@pytest.fixture(autouse=True)
def _faults_cleared() -> Iterator[None]:
    yield
    _ffi.fault_set(_ffi.FAULT_MAP, 0, 0)


SIZES = (100, 5000, 70000, 300000, 1 << 20, (1 << 20) + 1, 3 << 20)  # the last: dedicated maps


def _load(pools: tuple[Allocator, BufferPool, SlabPool], seed: int, stop: float, out: list) -> None:
    alloc, bufs, slab = pools
    rng = random.Random(seed)
    held: list = []
    ok = failed = 0
    while time.monotonic() < stop:
        tag = rng.randrange(1, 256)
        try:
            kind = rng.randrange(3)
            if kind == 0:
                item = alloc.alloc(rng.choice(SIZES), timeout=0)
            elif kind == 1:
                item = bufs.acquire(timeout=0)
            else:
                item = slab.alloc(rng.choice(SIZES))
        except PoolMemoryError:  # the injected ENOMEM (PoolExhausted is a subclass: no cap here)
            failed += 1
        else:
            ok += 1
            _mark(item, tag)
            held.append((item, tag))
        if len(held) > 8 or (held and rng.random() < 0.4):
            _give_back(*held.pop(rng.randrange(len(held))))
        if rng.random() < 0.02:
            pools[rng.randrange(3)].trim()  # unmap empty chunks: later allocations map again
    for item, tag in held:
        _give_back(item, tag)
    out.append((ok, failed))


def _mark(item: object, tag: int) -> None:
    if hasattr(item, "write"):
        item.write(0, bytes([tag]) * 64)  # type: ignore[attr-defined]
    else:
        item[0] = tag  # type: ignore[index]


def _give_back(item: object, tag: int) -> None:
    if hasattr(item, "free"):
        assert item.read(0, 64) == bytes([tag]) * 64  # type: ignore[attr-defined]
        item.free()  # type: ignore[attr-defined]
    else:
        assert item[0] == tag  # type: ignore[index]
        item.release()  # type: ignore[attr-defined]


def _chaos(stop: float, armed: list[int]) -> None:
    rng = random.Random(99)
    while time.monotonic() < stop:
        _ffi.fault_set(_ffi.FAULT_MAP, rng.randrange(4), rng.randrange(1, 6))
        armed[0] += 1
        time.sleep(rng.uniform(0.001, 0.02))
    _ffi.fault_set(_ffi.FAULT_MAP, 0, 0)


def test_random_mmap_failures_under_threads_lose_nothing() -> None:
    pools = (
        Allocator(name="mmap-chaos"),
        BufferPool(256 * 1024, name="mmap-chaos-bufs"),
        SlabPool(retain_bytes=0),
    )
    stop = time.monotonic() + TEST_SECONDS
    results: list[tuple[int, int]] = []
    armed = [0]
    threads = [threading.Thread(target=_load, args=(pools, i, stop, results)) for i in range(4)]
    threads.append(threading.Thread(target=_chaos, args=(stop, armed)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(TEST_SECONDS + 30)
    assert len(results) == 4, "a load thread died (see the thread exception above)"
    ok, failed = sum(r[0] for r in results), sum(r[1] for r in results)
    assert failed > 0, f"no failure was injected ({armed[0]} arms)"
    assert ok > failed
    alloc, bufs, slab = pools
    for pool in (alloc, bufs):
        s = pool.stats()
        assert s.outstanding == 0
        assert s.acquires == s.releases
    core = slab.stats()
    assert core.in_use_blocks == 0
    assert core.allocs == core.frees
    assert core.failed_allocs > 0
    slab.check()
    # the faults are over: everything works as before
    assert alloc.alloc(3 << 20).nbytes == 3 << 20  # dropped at once: GC returns it
    with bufs.acquire() as b:
        b[:4] = b"done"
    slab.alloc(70000).free()
    for p in pools:
        p.close()


def test_http_server_waits_out_refused_memory_and_answers_everyone() -> None:
    # Buffers above the largest size class: every block the pool takes from the core is a
    # fresh mapping, so the injected failures really hit the server's reads once the ready
    # blocks in front of the core are trimmed away.
    pool = BufferPool(1536 * 1024, capacity=64, name="mmap-http")
    with ThreadedHttp(pool) as srv:
        srv.call(pool.trim)
        _ffi.fault_set(_ffi.FAULT_MAP, 0, 1_000_000)  # no memory at all for now
        clients = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(9)]
        for c in clients:
            c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        refused = pool.stats().core.failed_allocs
        _ffi.fault_set(_ffi.FAULT_MAP, 0, 0)  # memory is back
        answers = [c.recv(4096) for c in clients]
        for c in clients:
            c.close()
    assert refused > 0, "the server never asked for memory while it was refused"
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert all(a.endswith(b"Hello, World!") for a in answers)
