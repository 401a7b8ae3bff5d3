"""poolalloc.net.anyio.recv_lease over loopback, under anyio's asyncio and trio backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import poolalloc
from poolalloc.net.anyio import reads_in_place, recv_lease

pytestmark = [pytest.mark.anyio, pytest.mark.net, pytest.mark.timeout(30)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def connected(
    serve: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[anyio.abc.SocketStream]:
    """A client stream connected to ``serve`` over loopback; all torn down on exit."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await serve(stream)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            yield client
        tg.cancel_scope.cancel()
    await listener.aclose()


async def drain(stream: Any, pool: Any, **kw: Any) -> tuple[bytes, int]:
    """Everything until EOF through recv_lease; also the number of reads."""
    parts: list[bytes] = []
    while (got := await recv_lease(stream, pool, **kw)) is not None:
        lease, n = got
        parts.append(bytes(lease.view[:n]))
        lease.release()
    return b"".join(parts), len(parts)


async def test_receives_everything_then_none(anyio_backend: str, buffer_pool: Any) -> None:
    payload = os.urandom(500_000)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(payload)

    async with connected(serve) as client:
        assert reads_in_place(client) is (anyio_backend == "trio")
        data, reads = await drain(client, buffer_pool)
    assert data == payload
    assert reads >= len(payload) // buffer_pool.size


async def test_max_bytes_caps_each_read(anyio_backend: str, buffer_pool: Any) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"0123456789" * 10)

    async with connected(serve) as client:
        got = await recv_lease(client, buffer_pool, max_bytes=7)
        assert got is not None
        assert got[1] <= 7
        got[0].release()
        with pytest.raises(ValueError, match="max_bytes"):
            await recv_lease(client, buffer_pool, max_bytes=0)
        rest, _ = await drain(client, buffer_pool, max_bytes=7)
    assert len(rest) == 100 - got[1]


@pytest.mark.parametrize("max_bytes", [2.5, 7.0, "7"])
async def test_max_bytes_that_is_no_integer_takes_no_lease(
    anyio_backend: str, buffer_pool: Any, max_bytes: Any
) -> None:
    """A float failed at the slice of the lease's view, outside the code that gives the lease
    back: the lease stayed out, held by the traceback, until the collector came by."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"data")

    async with connected(serve) as client:
        with pytest.raises(TypeError):
            await recv_lease(client, buffer_pool, max_bytes=max_bytes)
        assert buffer_pool.outstanding() == 0
        data, _ = await drain(client, buffer_pool)
    assert data == b"data"  # nothing was read
    assert buffer_pool.stats().gc_returns == 0


async def test_buffered_wrapper_uses_the_copy_path(anyio_backend: str, buffer_pool: Any) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"head\r\nbody-bytes")

    async with connected(serve) as client:
        buffered = BufferedByteReceiveStream(client)
        assert await buffered.receive_until(b"\r\n", 100) == b"head"
        assert not reads_in_place(buffered)
        data, _ = await drain(buffered, buffer_pool)
    assert data == b"body-bytes"  # nothing the wrapper had buffered was lost


async def test_cancelled_receive_holds_no_lease(anyio_backend: str, buffer_pool: Any) -> None:
    gate = anyio.Event()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await gate.wait()
        await stream.send(b"late")

    async with connected(serve) as client:
        with anyio.move_on_after(0.1) as scope:
            await recv_lease(client, buffer_pool)
        assert scope.cancelled_caught
        assert buffer_pool.outstanding() == 0
        gate.set()
        data, _ = await drain(client, buffer_pool)
    assert data == b"late"


async def test_waits_for_a_lease_at_capacity(anyio_backend: str) -> None:
    pool = poolalloc.BufferPool(1024, capacity=1)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"x" * 3000)

    async with connected(serve) as client:
        held = pool.acquire()
        got: list[Any] = []

        async def reader() -> None:
            got.append(await recv_lease(client, pool))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.sleep(0.05)
            assert not got
            held.release()
        assert got[0] is not None
        got[0][0].release()
        rest, _ = await drain(client, pool)
    assert got[0][1] + len(rest) == 3000
    pool.close()


async def test_reset_connection_is_broken_resource(anyio_backend: str, buffer_pool: Any) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        import socket
        import struct

        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async with connected(serve) as client:
        await anyio.sleep(0.1)
        with pytest.raises(anyio.BrokenResourceError):
            await drain(client, buffer_pool)
    assert buffer_pool.outstanding() == 0
