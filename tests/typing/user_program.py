"""A small user program that must type-check under ``mypy --strict`` against the installed package.

It is also run (tests/typing/test_user_types.py), so every line here is real usage, not a stub.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import numpy as np
import numpy.typing as npt

import poolalloc
from poolalloc.net.aio import PooledProtocol
from poolalloc.net.epoll.connection import Connection
from poolalloc.net.sockets import recv_into, recvmsg_into, send_buffers, sendall_buffers
from poolalloc.net.transport import StreamTransport, Transport
from poolalloc.net.uring.connection import UringConnection


def checksum(lease: poolalloc.Buffer, n: int) -> int:
    # The guide's numpy recipe: a lease is a buffer (PEP 688), so numpy views it without a copy.
    # numpy's stubs for Python 3.11 accept only concrete types there (bytes, memoryview...).
    data: npt.NDArray[np.uint8]
    if sys.version_info >= (3, 12):
        data = np.frombuffer(lease, dtype=np.uint8, count=n)
    else:
        data = np.frombuffer(lease.view, dtype=np.uint8, count=n)
    return int(data.sum())


def sockets_roundtrip() -> int:
    a, b = socket.socketpair()
    with a, b, poolalloc.BufferPool(4096, capacity=4) as pool:
        header = pool.acquire()
        header[:5] = b"head:"
        sent = sendall_buffers(a, [b"x", header.view[:5], header, memoryview(b"tail")])
        header.release()
        got = recv_into(b, pool)
        assert got is not None
        lease, n = got
        words = lease.as_array("uint32", n // 4)  # a Buffer, not just LeaseLike: as_array is there
        total = checksum(lease, n) + int(words.size)
        lease.release()
        assert send_buffers(a, [b"more"]) == []
        parts = recvmsg_into(b, pool, 2)
        assert parts is not None
        for part, _filled in parts:
            part.release()
        return sent + total


class Counter(PooledProtocol[poolalloc.Buffer]):
    def __init__(self, pool: poolalloc.BufferPool) -> None:
        super().__init__(pool)
        self.seen = 0

    def lease_received(self, lease: poolalloc.Buffer, nbytes: int) -> bool:
        self.seen += int(lease.as_array()[:nbytes].size)
        return False


async def serve_once() -> int:
    pool = poolalloc.BufferPool(2048, capacity=8)
    loop = asyncio.get_running_loop()
    protocol = Counter(pool)
    server = await loop.create_server(lambda: protocol, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"12345")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(500):  # until the server saw the bytes and the connection is gone
        if protocol.seen and protocol.transport is None:
            break
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    pool.close()
    return protocol.seen


def objects() -> int:
    with poolalloc.ObjectPool(lambda: bytearray(16), max_size=2) as pool:
        with pool.acquire() as buf:
            buf[0] = 7
            first: int = buf[0]
        lease = pool.acquire(timeout=1.0)
        lease.release()
        return first


def first_byte() -> int:
    # Returned from inside the `with`: a checker may not think the lease could swallow the
    # exception (an __exit__ typed `-> bool` says it could: "missing return statement").
    with poolalloc.BufferPool(64, capacity=1) as pool, pool.acquire() as buf:
        buf[0] = 9
        return int(buf[0])


def allocated_byte() -> int:
    with poolalloc.Allocator(capacity=4096) as alloc, alloc.alloc(100) as buf:
        buf[0] = 3
        return int(buf[0])


def transports() -> int:
    # Both engines' connections are Transports, and an asyncio transport is a StreamTransport:
    # a protocol typed against them runs on any of them.
    conns: list[Transport] = [Connection(), UringConnection()]
    streams: list[StreamTransport] = [*conns, asyncio.Transport()]
    return len(streams)


def main() -> None:
    assert sockets_roundtrip() > 0
    assert transports() == 3
    assert asyncio.run(serve_once()) == 5
    assert objects() == 7
    assert first_byte() == 9
    assert allocated_byte() == 3
    print("ok")


if __name__ == "__main__":
    main()
