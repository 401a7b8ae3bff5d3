"""Workload 1, bulk relay: bytes from a source to a sink through this process, in big reads.

Each variant relays the same number of bytes; the relay's own CPU time is measured with
``time.thread_time`` (the relay runs in this thread; the peer runs in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable

import poolalloc
from poolalloc.cli.workloads._common import (
    GIB,
    HOST,
    KIB,
    MIB,
    Doc,
    Goal,
    Metric,
    Variant,
    build_doc,
    child,
    has_uvloop,
)
from poolalloc.cli.workloads._loops import relay_epoll, relay_uring
from poolalloc.cli.workloads._peer import COUNT, recv_exact


def uring_available() -> tuple[bool, str]:
    from poolalloc.net.uring.proactor import available  # noqa: PLC0415 (loads the ring only here)

    return available()


Relay = Callable[[int, int, int, int], None]  # (source port, sink port, bytes, chunk)


def _open(src_port: int, sink_port: int, total: int) -> tuple[socket.socket, socket.socket]:
    src = socket.create_connection((HOST, src_port))
    src.sendall(COUNT.pack(total))
    dst = socket.create_connection((HOST, sink_port))
    return src, dst


def _finish(src: socket.socket, dst: socket.socket, total: int) -> None:
    dst.shutdown(socket.SHUT_WR)
    (got,) = COUNT.unpack(recv_exact(dst, COUNT.size))
    src.close()
    dst.close()
    if got != total:
        raise RuntimeError(f"relay lost data: the sink got {got} of {total} bytes")


def relay_pooled(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    with poolalloc.BufferPool(chunk, capacity=4) as pool:
        src, dst = _open(src_port, sink_port, total)
        recv_into, sendall, acquire = src.recv_into, dst.sendall, pool.acquire
        while True:
            lease = acquire()
            n = recv_into(lease)
            if not n:
                lease.release()
                break
            with lease.view as view:
                sendall(view[:n])
            lease.release()
        _finish(src, dst, total)


def relay_bytes(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    src, dst = _open(src_port, sink_port, total)
    recv, sendall = src.recv, dst.sendall
    while data := recv(chunk):
        sendall(data)
    _finish(src, dst, total)


def relay_fresh(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    src, dst = _open(src_port, sink_port, total)
    recv_into, sendall = src.recv_into, dst.sendall
    while True:
        buf = bytearray(chunk)
        n = recv_into(buf)
        if not n:
            break
        with memoryview(buf) as view:
            sendall(view[:n])
    _finish(src, dst, total)


def relay_reused(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    src, dst = _open(src_port, sink_port, total)
    recv_into, sendall = src.recv_into, dst.sendall
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := recv_into(buf):
        sendall(view[:n])
    _finish(src, dst, total)


def relay_splice(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    src, dst = _open(src_port, sink_port, total)
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, 1031, chunk)  # F_SETPIPE_SZ: room for one read
        sfd, dfd, splice = src.fileno(), dst.fileno(), os.splice
        while n := splice(sfd, w, chunk):
            while n:
                n -= splice(r, dfd, n)
    finally:
        os.close(r)
        os.close(w)
    _finish(src, dst, total)


async def _streams(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, src_port, limit=chunk)
    writer.write(COUNT.pack(total))
    sink_reader, sink_writer = await asyncio.open_connection(HOST, sink_port, limit=chunk)
    while data := await reader.read(chunk):
        sink_writer.write(data)
        await sink_writer.drain()
    sink_writer.write_eof()
    (got,) = COUNT.unpack(await sink_reader.readexactly(COUNT.size))
    writer.close()
    sink_writer.close()
    if got != total:
        raise RuntimeError(f"relay lost data: the sink got {got} of {total} bytes")


def relay_asyncio(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    asyncio.run(_streams(src_port, sink_port, total, chunk))


def relay_uvloop(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    import uvloop  # noqa: PLC0415 (optional)

    uvloop.run(_streams(src_port, sink_port, total, chunk))


VARIANTS: list[tuple[str, Relay]] = [
    ("pooled", relay_pooled),
    ("fresh bytes (recv)", relay_bytes),
    ("fresh bytearray", relay_fresh),
    ("reused bytearray", relay_reused),
    ("asyncio streams", relay_asyncio),
    ("uvloop streams", relay_uvloop),
    ("epoll Reactor", relay_epoll),
    ("io_uring Proactor", relay_uring),
    ("splice (kernel floor)", relay_splice),
]

METRICS = [
    Metric("cpu_s_per_gib", "relay CPU per GiB", "s/GiB", True),
    Metric("gib_per_s", "throughput", "GiB/s", False),
]


def run(*, quick: bool, scale: float = 1.0) -> list[Doc]:
    """One document per read size; every variant relays the same bytes, in alternating rounds."""
    chunks = [MIB] if quick else [64 * KIB, MIB]
    per_variant = int((256 * MIB if quick else 2 * GIB) * scale)
    rounds = 2 if quick else 4
    total = max(MIB, per_variant // rounds)
    docs = []
    with child("_peer", "source", "sink") as peer:
        src_port, sink_port = (int(p) for p in peer.ready)
        for chunk in chunks:
            variants = [Variant(name) for name, _ in VARIANTS]
            funcs = dict(VARIANTS)
            by_name = {v.name: v for v in variants}
            if not has_uvloop():
                by_name["uvloop streams"].available = False
                by_name["uvloop streams"].note = "not installed"
            uring_ok, why = uring_available()
            if not uring_ok:
                by_name["io_uring Proactor"].available = False
                by_name["io_uring Proactor"].note = why
            for _ in range(rounds):
                for v in variants:
                    if not v.available:
                        continue
                    cpu0, t0 = time.thread_time(), time.perf_counter()
                    funcs[v.name](src_port, sink_port, total, chunk)
                    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - t0
                    v.add(cpu_s_per_gib=cpu / (total / GIB), gib_per_s=total / GIB / wall)
            size = f"{chunk // KIB} KiB" if chunk < MIB else f"{chunk // MIB} MiB"
            goals = [
                Goal(
                    "relay CPU per GiB <= 1.5x the splice floor",
                    "cpu_s_per_gib",
                    "pooled",
                    "splice (kernel floor)",
                    1.5,
                    True,
                ),
                Goal(
                    "io_uring relay CPU per GiB <= 0.8x the epoll Reactor",
                    "cpu_s_per_gib",
                    "io_uring Proactor",
                    "epoll Reactor",
                    0.8,
                    True,
                ),
                Goal(
                    "relay CPU per GiB <= 0.5x asyncio streams",
                    "cpu_s_per_gib",
                    "pooled",
                    "asyncio streams",
                    0.5,
                    True,
                ),
            ]
            docs.append(
                build_doc(
                    f"relay_{size.replace(' ', '').lower()}",
                    f"bulk relay, {size} reads",
                    {"bytes_per_run": total, "rounds": rounds, "read_size": chunk},
                    METRICS,
                    variants,
                    goals,
                )
            )
    return docs
