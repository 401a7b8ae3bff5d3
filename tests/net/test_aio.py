"""asyncio PooledProtocol over loopback, on the default loop and on uvloop when installed."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import pytest

from poolalloc.net.aio import PooledProtocol
from poolalloc.net.sockets import LeaseLike

pytestmark = [pytest.mark.net, pytest.mark.timeout(30)]

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


class Echo(PooledProtocol):
    def lease_received(self, lease: LeaseLike, nbytes: int) -> bool:
        assert self.transport is not None
        self.transport.write(lease.view[:nbytes])
        return False


class Keeper(PooledProtocol):
    """Keeps every lease until the connection ends (a protocol that holds data)."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.kept: list[tuple[LeaseLike, int]] = []
        self.lost = asyncio.get_running_loop().create_future()

    def lease_received(self, lease: LeaseLike, nbytes: int) -> bool:
        self.kept.append((lease, nbytes))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set_result(b"".join(bytes(lease.view[:n]) for lease, n in self.kept))
        for lease, _ in self.kept:
            lease.release()


def loop_factories() -> list[Any]:
    params: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    if HAS_UVLOOP:
        import uvloop

        params.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    else:
        params.append(
            pytest.param(None, id="uvloop", marks=pytest.mark.skip(reason="uvloop not installed"))
        )
    return params


def run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.mark.parametrize("factory", loop_factories())
def test_echo_over_loopback(factory: Any, buffer_pool: Any) -> None:
    payload = os.urandom(200_000)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Echo(buffer_pool), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # let the server side see EOF
        return got

    assert run(factory, main()) == payload
    assert buffer_pool.outstanding() == 0


@pytest.mark.parametrize("factory", loop_factories())
def test_kept_leases_hold_data_and_return_on_connection_lost(
    factory: Any, buffer_pool: Any
) -> None:
    async def main() -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        protos: list[Keeper] = []

        def make() -> Keeper:
            protos.append(Keeper(buffer_pool))
            return protos[-1]

        server = await loop.create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(10):
            writer.write(bytes([65 + i]) * 5000)
            await writer.drain()
            await asyncio.sleep(0.005)
        while not protos or sum(n for _, n in protos[0].kept) < 50_000:
            await asyncio.sleep(0.01)
        held = buffer_pool.outstanding()
        writer.close()
        await writer.wait_closed()
        data = await asyncio.wait_for(protos[0].lost, 5)
        server.close()
        await server.wait_closed()
        return data, held

    data, held = run(factory, main())
    assert data == b"".join(bytes([65 + i]) * 5000 for i in range(10))
    assert held >= 1
    assert buffer_pool.outstanding() == 0


@pytest.mark.parametrize("factory", loop_factories())
def test_exhausted_pool_fails_only_that_connection(factory: Any) -> None:
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=1)

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        protos: list[Keeper] = []

        def make() -> Keeper:
            protos.append(Keeper(pool))
            return protos[-1]

        server = await loop.create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"first")  # the Keeper holds the only buffer
        while not protos or not protos[0].kept:
            await asyncio.sleep(0.01)
        _, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"second")
        await asyncio.wait_for(_second_lost(protos), 5)
        second_failed = protos[1].lost.done()
        first_alive = not protos[0].lost.done()
        for w in (w1, w2):
            w.close()
        await asyncio.wait_for(protos[0].lost, 5)
        server.close()
        await server.wait_closed()
        return second_failed, first_alive

    assert run(factory, main()) == (True, True)
    assert pool.outstanding() == 0
    pool.close()


async def _second_lost(protos: list[Keeper]) -> None:
    while len(protos) < 2:
        await asyncio.sleep(0.01)
    await protos[1].lost


class LogsLoss(PooledProtocol):
    """Looks at ``exc`` in its override before calling super(), as a user's protocol does."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)
        super().connection_lost(exc)


class LossMixin:
    """The same override in a mixin placed before PooledProtocol in the bases."""

    lost: asyncio.Future[Exception | None]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)
        super().connection_lost(exc)  # type: ignore[misc]


class MixedLoss(LossMixin, PooledProtocol):
    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.lost = asyncio.get_running_loop().create_future()


@pytest.mark.parametrize("protocol", [LogsLoss, MixedLoss], ids=["override", "mixin"])
@pytest.mark.parametrize("factory", loop_factories())
def test_exhausted_pool_reaches_connection_lost_as_pool_exhausted(
    factory: Any, protocol: Any
) -> None:
    # uvloop closes the connection with its own RuntimeError("unhandled error (or an empty
    # buffer) in get_buffer()"); asyncio passes the PoolExhausted: both now give PoolExhausted
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=1)
    held = pool.acquire()  # the only buffer: the first read of the server side fails

    async def main() -> Exception | None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)  # the fatal error is expected
        protos: list[Any] = []

        def make() -> Any:
            protos.append(protocol(pool))
            return protos[-1]

        server = await loop.create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        while not protos:
            await asyncio.sleep(0.01)
        exc = await asyncio.wait_for(protos[0].lost, 5)
        writer.close()
        server.close()
        await server.wait_closed()
        return exc

    exc = run(factory, main())
    assert isinstance(exc, poolalloc.PoolExhausted), repr(exc)
    if exc.__context__ is not None:  # uvloop: its RuntimeError is kept as the context
        assert isinstance(exc.__context__, RuntimeError)
        assert "get_buffer" in str(exc.__context__)
    held.release()
    assert pool.outstanding() == 0
    pool.close()


class CopyingEcho(PooledProtocol):
    """Echoes a copy of each read and notes its connection's end: a protocol that keeps no
    view of a lease, so a strict pool takes each lease back at once."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.events: list[str] = []
        self.lost = asyncio.get_running_loop().create_future()

    def lease_received(self, lease: LeaseLike, nbytes: int) -> bool:
        assert self.transport is not None
        self.transport.write(bytes(lease.view[:nbytes]))
        return False

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return super().eof_received()  # None: close once the echo is out

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set_result(exc)


@pytest.mark.parametrize("factory", loop_factories())
def test_a_strict_pool_serves_reads(factory: Any) -> None:
    """A strict pool refuses to take back a lease that is still viewed; the transport views
    the read's buffer until ``buffer_updated`` returns (uvloop exports it, asyncio holds it),
    so every connection failed on its first read with ``LeaseBusyError`` ("Fatal error:
    protocol.buffer_updated() call failed"), and at its EOF on ``eof_received``."""
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=4, strict=True)
    payload = os.urandom(50_000)
    errors: list[dict[str, Any]] = []

    async def main() -> tuple[bytes, list[str], Exception | None]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        protos: list[CopyingEcho] = []

        def make() -> CopyingEcho:
            protos.append(CopyingEcho(pool))
            return protos[-1]

        server = await loop.create_server(make, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(payload)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        exc = await asyncio.wait_for(protos[0].lost, 5)
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        return got, protos[0].events, exc

    got, events, exc = run(factory, main())
    assert errors == []
    assert exc is None
    assert events == ["eof"]
    assert got == payload
    assert pool.outstanding() == 0
    pool.close()
