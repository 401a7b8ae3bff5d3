"""An interpreter of random programs over the public pool API, for fuzzing and corpus replay.

A program is plain data (JSON in the corpus): ``{"config": [4 ints], "ops": [[name, a, b]...]}``.
It runs against one BufferPool, Allocator, ObjectPool and SlabPool plus a foreign BufferPool and
ObjectPool, keeping every lease, view, slice, array and block it made, released or not, so
later ops use freed and foreign objects too. After each op the model's counts must equal the
pools' counters; at the end everything is released, views dropped, and the pools must balance.

An op may fail only with a documented exception: :class:`PoolError` (which includes the
``MemoryError``/``ValueError``/``OverflowError`` subclasses), or the builtin ``ValueError`` /
``OverflowError`` for arguments Python cannot convert. Views are plain memoryviews, so the ops
on them may also raise what memoryview documents (``IndexError``, ``ValueError``,
``TypeError``).
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poolalloc import Allocator, BufferPool, ObjectPool, PoolError, SlabPool

POOL_ERRORS: tuple[type[BaseException], ...] = (PoolError, ValueError, OverflowError)
VIEW_ERRORS: tuple[type[BaseException], ...] = (PoolError, IndexError, ValueError, TypeError)

OPS = (
    "acquire", "acquire_many", "alloc", "release", "pool_release", "release_many", "view",
    "slice", "array", "drop_view", "write", "read", "gc", "trim", "close", "obj_acquire",
    "obj_release", "obj_foreign", "obj_use", "slab_alloc", "block_free", "block_io",
)  # fmt: skip


@dataclass
class State:
    bp: BufferPool
    al: Allocator
    op: ObjectPool[bytearray]
    sp: SlabPool
    other: BufferPool
    other_op: ObjectPool[bytearray]
    leases: list[Any] = field(default_factory=list)  # (Buffer, pattern byte)
    views: list[Any] = field(default_factory=list)
    objs: list[Any] = field(default_factory=list)
    blocks: list[Any] = field(default_factory=list)


def make_state(config: list[int]) -> State:
    size = (1, 64, 4096, 5000, 65536)[config[0] % 5]
    return State(
        bp=BufferPool(size, capacity=1 + config[1] % 8, strict=bool(config[2] & 1), name="fz"),
        al=Allocator(capacity=4096 + (config[1] % 64) * 4096, name="fz-alloc"),
        op=ObjectPool(bytearray, reset=lambda b: b.clear(), max_size=1 + config[2] % 4, timeout=0),
        # Bounded: an unbounded pool would map a 1 TiB request, which costs nothing in a normal
        # build but 128 GiB of shadow memory under ASan (make test-asan).
        sp=SlabPool(max_bytes=(1 + config[3] % 4) << 22, debug=bool(config[3] & 4)),
        other=BufferPool(64, name="fz-foreign"),
        other_op=ObjectPool(bytearray, timeout=0),
    )


def _pick(items: list[Any], i: int) -> Any:
    return items[i % len(items)] if items else None


def _lease_of(s: State, i: int) -> Any:
    if i < 0:  # a foreign lease, fresh from another pool
        buf = s.other.acquire()
        s.leases.append((buf, 0))
        return buf
    item = _pick(s.leases, i)
    return None if item is None else item[0]


def _keep(s: State, buf: Any) -> None:
    pattern = len(s.leases) % 251 + 1
    buf[0] = pattern
    s.leases.append((buf, pattern))


def _run_pool_op(s: State, name: str, a: int, b: int) -> None:
    if name == "acquire":
        _keep(s, s.bp.acquire(timeout=0))
    elif name == "acquire_many":
        for buf in s.bp.acquire_many(a % 12 - 2, timeout=0):
            _keep(s, buf)
    elif name == "alloc":
        _keep(s, s.al.alloc(a, (0, 1, 3, 64, 4096, 8192, b)[b % 7], timeout=0))
    elif name == "release":
        buf = _lease_of(s, a)
        if buf is not None:
            buf.release()
    elif name == "pool_release":
        buf = _lease_of(s, a)
        if buf is not None:
            (s.bp, s.al, s.other)[b % 3].release(buf)
    elif name == "release_many":
        bufs = [_lease_of(s, a + k) for k in range(b % 4)]
        s.bp.release_many([x for x in bufs if x is not None])
    elif name == "trim":
        (s.bp, s.al, s.sp)[a % 3].trim()
    elif name == "close":
        (s.bp, s.al, s.op, s.sp)[a % 4].close()
    elif name == "gc":
        gc.collect(a % 2)  # young generations: a full pass costs ms in a big test process
    else:
        _run_object_op(s, name, a, b)


def _run_object_op(s: State, name: str, a: int, b: int) -> None:
    if name == "obj_acquire":
        s.objs.append((s.op if a >= 0 else s.other_op).acquire(timeout=0))
    elif name == "obj_release" and s.objs:
        _pick(s.objs, a).release()
    elif name == "obj_foreign" and s.objs:
        (s.op, s.other_op)[b % 2].release(_pick(s.objs, a) if a >= 0 else object())
    elif name == "obj_use" and s.objs:
        _pick(s.objs, a).obj.extend(b"x" * (b % 16))
    elif name == "slab_alloc":
        s.blocks.append(s.sp.alloc(a, (1, 3, 64, 4096, 8192)[b % 5]))
    elif name == "block_free" and s.blocks:
        _pick(s.blocks, a).free()
    elif name == "block_io" and s.blocks:
        block = _pick(s.blocks, a)
        block.write(b % 128, b"z" * (a % 64)) if b & 1 else block.read(b % 128, a % 64)


def _run_view_op(s: State, name: str, a: int, b: int) -> None:
    if name == "view":
        buf = _lease_of(s, a)
        if buf is not None:
            s.views.append(buf.view if b & 1 else memoryview(buf))
    elif name == "slice" and s.views:
        s.views.append(_pick(s.views, a)[b % 97 : b % 97 + a % 300])
    elif name == "array":
        buf = _lease_of(s, a)
        if buf is not None:
            s.views.append(buf.as_array() if b & 1 else np.frombuffer(buf, dtype=np.uint8))
    elif name == "drop_view" and s.views:
        v = s.views.pop(a % len(s.views))
        if isinstance(v, memoryview) and b & 1:
            v.release()  # fails with BufferError only if exported further, which we never do
    elif name == "write" and s.views:
        v = _pick(s.views, a)
        v[1 + b % 50 : 4 + b % 50] = b"abc"
    elif name == "read" and s.views:
        bytes(_pick(s.views, a)[: b % 200])


def run_op(s: State, name: str, a: int, b: int) -> None:
    """Run one op; raise AssertionError only if it failed in an undocumented way."""
    view_op = name in ("view", "slice", "array", "drop_view", "write", "read")
    allowed = VIEW_ERRORS if view_op else POOL_ERRORS
    with contextlib.suppress(allowed):
        (_run_view_op if view_op else _run_pool_op)(s, name, a, b)


def check(s: State) -> None:
    """The pools' counters against the model, and no block shared by two live leases."""
    live = [(buf, pat) for buf, pat in s.leases if not buf.released]
    addresses = [buf.address for buf, _ in live]
    assert len(set(addresses)) == len(addresses), "two live leases share a block"
    for buf, pat in live:  # views write from offset 1 on: byte 0 is the lease's own mark
        assert pat == 0 or buf[0] == pat, "a live lease's memory was overwritten"
    for pool in (s.bp, s.al, s.other):
        st = pool.stats()
        assert st.acquires - st.releases == st.live
        assert st.outstanding == st.live + st.parked
    assert s.bp.stats().live + s.al.stats().live + s.other.stats().live == len(live)
    ost = s.op.stats()
    assert ost.is_balanced, ost
    assert ost.in_use == sum(1 for x in s.objs if x._pool is s.op and not x.is_released)
    core = s.sp.stats()
    assert core.allocs - core.frees == core.in_use_blocks
    assert core.in_use_blocks == sum(1 for blk in s.blocks if not blk.freed)


def release_all(s: State) -> None:
    """Drop every view, then release every lease, object and block still out."""
    s.views.clear()
    gc.collect(0)  # views die by reference counting; this catches one in a young cycle
    for buf, _ in s.leases:
        if not buf.released:
            buf.release()
    for lease in s.objs:
        if not lease.is_released:
            lease.release()
    for blk in s.blocks:
        if not blk.freed:
            blk.free()
    s.leases.clear()


def finish(s: State) -> None:
    """Release everything, drop every view, and require every pool to balance."""
    release_all(s)
    for pool in (s.bp, s.al, s.other):
        assert pool.outstanding() == 0, pool.stats()
        pool.close()
    for opool in (s.op, s.other_op):
        assert opool.stats().in_use == 0
        assert opool.close().is_clean
    assert s.sp.stats().in_use_blocks == 0
    s.sp.close()


def run_program(program: dict[str, Any]) -> None:
    """Run a whole program (config + ops), checking after every op."""
    s = make_state(program["config"])
    try:
        for name, a, b in program["ops"]:
            run_op(s, name, a, b)
            check(s)
    except BaseException:
        release_all(s)  # so that the failure is reported once, not again as leaked leases
        raise
    finish(s)
