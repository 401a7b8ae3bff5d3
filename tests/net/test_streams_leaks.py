"""Memory truth for pooled asyncio streams (second pass of `make test`, `--memray -m leaks`)."""

from __future__ import annotations

import asyncio
import gc

import pytest

import poolalloc
from poolalloc.net import streams

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

CLIENTS = 8
MESSAGES = 50


async def _load(pool: poolalloc.BufferPool, rounds: int) -> int:
    """An echo server (zero-copy relay of readuntil pieces) and CLIENTS clients, ``rounds``
    times over; returns the messages echoed."""

    async def echo(reader: streams.PooledStreamReader, writer: streams.PooledStreamWriter) -> None:
        while True:
            try:
                line = await reader.readuntil_lease(b"\n")
            except asyncio.IncompleteReadError:
                break
            writer.write(line)
            await writer.drain()
        writer.close()

    async def client(port: int) -> int:
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
        done = 0
        for i in range(MESSAGES):
            writer.write(b"m%05d " % i + b"x" * (i * 37 % 3000) + b"\n")
            reply = await reader.readline()
            done += reply.startswith(b"m%05d" % i)
        writer.close()
        await writer.wait_closed()
        return done

    echoed = 0
    server = await streams.start_server(echo, "127.0.0.1", 0, pool=pool)
    port = server.sockets[0].getsockname()[1]
    for _ in range(rounds):
        echoed += sum(await asyncio.gather(*(client(port) for _ in range(CLIENTS))))
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)  # server handlers see EOF and finish
    return echoed


def serve_rounds(rounds: int) -> int:
    with poolalloc.BufferPool(16384, capacity=256, name="streams-leaks") as pool:
        echoed = asyncio.run(_load(pool, rounds))
        gc.collect()
        assert pool.outstanding() == 0
    return echoed


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Module-level state (asyncio's, the default pool's, re caches) fills once here."""
    serve_rounds(2)


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_stream_server_under_load_leaks_nothing() -> None:
    assert serve_rounds(20) == 20 * CLIENTS * MESSAGES
