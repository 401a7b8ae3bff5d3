"""asyncio streams on pooled reads (poolalloc.net.streams), on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import os
import socket
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import poolalloc
from poolalloc.net import streams
from poolalloc.net.streams import PooledBytes, PooledStreamReader

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


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


@pytest.fixture(params=loop_factories())
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    factory = request.param

    def runner(coro: Awaitable[Any]) -> Any:
        loop = factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, 30))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return runner


@pytest.fixture
def small_pool() -> Any:
    """16-byte blocks: every few bytes land in a new lease, so data spans many blocks."""
    pool = poolalloc.BufferPool(16, capacity=4096, name="tiny")
    yield pool
    for _ in range(3):
        gc.collect()
    assert pool.outstanding() == 0
    pool.close()


async def serve(handler: Any, pool: Any, **kw: Any) -> tuple[asyncio.Server, int]:
    server = await streams.start_server(handler, "127.0.0.1", 0, pool=pool, **kw)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server, *writers: Any) -> None:
    for w in writers:
        w.close()
        # wait_closed raises the error a connection was lost with, as asyncio's does
        with contextlib.suppress(ConnectionError, poolalloc.PoolExhausted):
            await w.wait_closed()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.02)  # the server side sees EOF and lets its pieces go


async def read_from(handler: Any, pool: Any) -> bytes:
    """What a client reads from ``handler`` until the server closes: the client side of the
    tests where the server writes."""
    server, port = await serve(handler, pool)
    reader, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
    got = await reader.read()
    await stop(server, writer)
    return got


async def echo_leases(reader: Any, writer: Any) -> None:
    """Relay every received piece back without copying it."""
    while (data := await reader.read_lease()) is not None:
        writer.write(data)
        await writer.drain()
    writer.close()


def test_echo_relays_pooled_pieces_zero_copy(run: Any, buffer_pool: Any) -> None:
    payload = os.urandom(300_000)

    async def main() -> bytes:
        server, port = await serve(echo_leases, buffer_pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        writer.write(payload)
        writer.write_eof()
        got = await reader.read()
        await stop(server, writer)
        return got

    assert run(main()) == payload


def test_drop_in_bytes_api_and_partial_reads(run: Any, buffer_pool: Any) -> None:
    async def handler(reader: Any, writer: Any) -> None:
        line = await reader.readline()
        head = await reader.readexactly(4)
        rest = await reader.readuntil(b"END")
        some = await reader.read(3)
        writer.write(b"|".join([line, head, rest, some]))
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server, port = await serve(handler, buffer_pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        for part in (b"hel", b"lo\nab", b"cdxyEN", b"Dtail-and-more"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate segments on the wire
        got = await reader.read()
        await stop(server, writer)
        return got

    assert run(main()) == b"hello\n|abcd|xyEND|tai"


def test_readuntil_across_lease_boundaries(run: Any, small_pool: Any) -> None:
    sep = b"\r\n\r\n"
    messages = [b"A" * 13 + sep, b"B" * 40 + sep, b"C" + sep]

    async def main() -> list[tuple[bytes, int]]:
        got: list[tuple[bytes, int]] = []

        async def handler(reader: Any, writer: Any) -> None:
            for _ in messages:
                with await reader.readuntil_lease(sep) as data:
                    got.append((bytes(data), len(data.views)))
            writer.close()

        server, port = await serve(handler, small_pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=small_pool)
        blob = b"".join(messages)
        for i in range(0, len(blob), 7):  # 7-byte writes: separators straddle blocks
            writer.write(blob[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.002)
        while len(got) < len(messages):
            await asyncio.sleep(0.01)
        await stop(server, writer)
        return got

    got = run(main())
    assert [data for data, _ in got] == messages
    assert max(pieces for _, pieces in got) > 1  # really spanned several 16-byte leases


@pytest.mark.parametrize(
    "pieces",
    [
        [b"ab\r", b"\n\r\nrest"],
        [b"ab", b"\r", b"\n", b"\r", b"\nrest"],
        [b"ab\r\n", b"\r", b"\nrest"],
        [b"\r\n\r", b"\r\n\r\nrest"],
    ],
)
def test_find_straddling_separator_fed_piecewise(pieces: list[bytes]) -> None:
    async def main() -> bytes:
        reader = PooledStreamReader()
        for piece in pieces:
            reader.feed_data(piece)
        reader.feed_eof()
        return await reader.readuntil(b"\r\n\r\n")

    blob = b"".join(pieces)
    assert asyncio.run(main()) == blob[: blob.index(b"\r\n\r\n") + 4]


def test_limit_overrun_as_asyncio(run: Any, buffer_pool: Any) -> None:
    async def main() -> tuple[int, int, bytes, str, bytes]:
        server, port = await serve(echo_leases, buffer_pool)
        reader, writer = await streams.open_connection(
            "127.0.0.1", port, pool=buffer_pool, limit=64
        )
        writer.write(b"x" * 200 + b"\n" + b"y" * 10 + b"\n")
        while reader._size < 212:
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.LimitOverrunError) as not_found:
            await reader.readuntil(b"!")
        with pytest.raises(asyncio.LimitOverrunError) as too_long:
            await reader.readuntil(b"\n")
        kept = await reader.readexactly(200)  # both errors left the data in place
        nl = await reader.readexactly(1)
        writer.write(b"z" * 100 + b"\n" + b"ok\n")
        await reader.readline()  # y...y
        with pytest.raises(ValueError, match="limit") as line_error:
            await reader.readline()
        after = await reader.readline()
        await stop(server, writer)
        return (
            not_found.value.consumed,
            too_long.value.consumed,
            kept + nl,
            str(line_error.value),
            after,
        )

    not_found, too_long, kept, message, after = run(main())
    assert not_found > 64
    assert too_long == 200
    assert kept == b"x" * 200 + b"\n"
    assert "limit" in message
    assert after == b"ok\n"  # readline dropped the long line through its newline, as asyncio


def test_eof_incomplete_and_at_eof(run: Any, buffer_pool: Any) -> None:
    async def main() -> Any:
        async def handler(reader: Any, writer: Any) -> None:
            writer.write(b"partial")
            writer.close()

        server, port = await serve(handler, buffer_pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        with pytest.raises(asyncio.IncompleteReadError) as e:
            await reader.readexactly(100)
        eof_read = await reader.read(10)
        eof_lease = await reader.read_lease()
        with pytest.raises(asyncio.IncompleteReadError) as e2:
            await reader.readuntil(b"\n")
        await stop(server, writer)
        return (
            e.value.partial,
            e.value.expected,
            eof_read,
            eof_lease,
            e2.value.partial,
            reader.at_eof(),
        )

    assert run(main()) == (b"partial", 100, b"", None, b"", True)


def test_cancelled_read_leaves_no_lease_out(run: Any, buffer_pool: Any) -> None:
    async def main() -> tuple[int, int]:
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def handler(reader: Any, writer: Any) -> None:
            tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            started.set()
            try:
                await reader.readexactly_lease(100_000)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        tasks: list[asyncio.Task[Any]] = []
        server, port = await serve(handler, buffer_pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        writer.write(b"q" * 5000)
        await writer.drain()
        await started.wait()
        while buffer_pool.outstanding() == 0:
            await asyncio.sleep(0.005)
        held = buffer_pool.outstanding()
        for t in tasks:
            t.cancel()
        await cancelled.wait()
        await stop(server, writer)
        gc.collect()
        return held, buffer_pool.outstanding()

    held, after = run(main())
    assert held >= 1
    assert after == 0


def test_backpressure_pauses_and_resumes(run: Any, buffer_pool: Any) -> None:
    total = 2_000_000

    async def main() -> tuple[int, int, bool]:
        server_reader: list[Any] = []
        done = asyncio.Event()
        peak = 0

        async def handler(reader: Any, writer: Any) -> None:
            server_reader.append(reader)
            await done.wait()
            writer.close()

        server, port = await serve(handler, buffer_pool, limit=16384)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        writer.write(b"p" * total)
        deadline = asyncio.get_running_loop().time() + 20
        while not (server_reader and server_reader[0]._paused):  # slow machines take longer
            assert asyncio.get_running_loop().time() < deadline, "reading never paused"
            await asyncio.sleep(0.01)
            peak = max(peak, buffer_pool.outstanding())
        await asyncio.sleep(0.1)  # paused: nothing more may arrive
        reader = server_reader[0]
        paused = reader._paused
        buffered = reader._size
        got = 0
        while got < total:
            with await reader.read_lease() as data:
                got += len(data)
        done.set()
        await stop(server, writer)
        return buffered, got, paused

    buffered, got, paused = run(main())
    assert paused
    assert buffered < 2 * 16384 + 262144 + 16384  # at most one transport read past 2*limit
    assert got == total


def test_tiny_writes_do_not_pin_a_block_each(run: Any, buffer_pool: Any) -> None:
    """A peer sending a byte at a time to a reader that does not read yet: each transport read
    used to pin a whole block (16 KiB for one byte here), so 400 bytes held 400 blocks and
    exhausted the 256-block pool (with no capacity: 2 * limit bytes pinned 2 * limit blocks, GiBs).
    Reads now fill a block before taking the next, and an idle reader holds none."""
    count = 400
    payload = bytes(i % 251 for i in range(count))

    async def main() -> tuple[int, bytes, int]:
        readers: list[Any] = []
        done = asyncio.Event()

        async def handler(reader: Any, writer: Any) -> None:
            readers.append(reader)
            await done.wait()
            writer.close()

        server, port = await serve(handler, buffer_pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count):
            writer.write(payload[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.0005)  # one read each on the server side
        while not readers or readers[0]._size < count:
            await asyncio.sleep(0.005)
        pinned = buffer_pool.outstanding()
        got = await readers[0].readexactly(count)
        idle = buffer_pool.outstanding()
        done.set()
        await stop(server, writer)
        return pinned, got, idle

    pinned, got, idle = run(main())
    assert got == payload
    assert pinned <= 2
    assert idle == 0


def test_tiny_writes_over_a_strict_pool_are_joined(run: Any) -> None:
    """A strict pool copies each read: one copy per read cost a view object and a bytes object
    (~250 bytes) per byte sent, up to 2 * limit of them per connection. Copies now join while
    they fit in 4 KiB."""
    count = 400
    payload = bytes(i % 251 for i in range(count))
    pool = poolalloc.BufferPool(4096, capacity=16, strict=True)

    async def main() -> tuple[int, bytes]:
        readers: list[Any] = []
        done = asyncio.Event()

        async def handler(reader: Any, writer: Any) -> None:
            readers.append(reader)
            await done.wait()
            writer.close()

        server, port = await serve(handler, pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count):
            writer.write(payload[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.0005)
        while not readers or readers[0]._size < count:
            await asyncio.sleep(0.005)
        pieces = len(readers[0]._pieces)
        got = await readers[0].readexactly(count)
        done.set()
        await stop(server, writer)
        return pieces, got

    pieces, got = run(main())
    assert got == payload
    assert pieces <= 2
    for _ in range(3):
        gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def test_reads_mixed_with_arrivals_into_one_block_keep_every_byte(run: Any) -> None:
    """Arrivals that fill a block in several reads, taken by every kind of read in between
    (part of the last piece read, the rest grown by the next arrival): the bytes come out
    whole and in order, and every block goes back."""
    import random

    rng = random.Random(7)
    lines = [bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(1, 300))) for _ in range(300)]
    payload = b"".join(line + b"|" for line in lines)
    pool = poolalloc.BufferPool(4096, capacity=64)

    async def main() -> bytes:
        got = bytearray()

        async def handler(reader: Any, writer: Any) -> None:
            step = 0
            while True:
                step += 1
                try:
                    if step % 4 == 0:
                        data = await reader.read_lease(rng.randrange(1, 200))
                        if data is None:
                            break
                        with data:
                            got.extend(bytes(data))
                    elif step % 4 == 1:
                        got.extend(await reader.readuntil(b"|"))
                    elif step % 4 == 2:
                        with await reader.readexactly_lease(rng.randrange(0, 50)) as data:
                            got.extend(bytes(data))
                    else:
                        got.extend(await reader.read(rng.randrange(1, 700)))
                except asyncio.IncompleteReadError as exc:
                    got.extend(exc.partial)
                    break
            writer.close()

        server, port = await serve(handler, pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        at = 0
        while at < len(payload):
            size = rng.randrange(1, 900)
            writer.write(payload[at : at + size])
            at += size
            await writer.drain()
            if rng.random() < 0.5:
                await asyncio.sleep(0.0005)
        writer.write_eof()
        while len(got) < len(payload):
            await asyncio.sleep(0.01)
        await stop(server, writer)
        return bytes(got)

    assert run(main()) == payload
    for _ in range(3):
        gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def test_writer_gives_leases_back(run: Any, buffer_pool: Any) -> None:
    async def main() -> tuple[bytes, int]:
        async def handler(reader: Any, writer: Any) -> None:
            lease = buffer_pool.acquire()
            lease.view[:5] = b"lease"
            writer.writelines([b"<", PooledBytes([lease.view[:5]]), b">"])
            lease.release()
            raw = buffer_pool.acquire()
            raw.view[:] = b"z" * raw.nbytes
            writer.write(raw)  # a whole lease, released by the writer
            await writer.drain()
            writer.close()

        got = await read_from(handler, buffer_pool)
        gc.collect()
        return got, buffer_pool.outstanding()

    got, out = run(main())
    assert got == b"<lease>" + b"z" * buffer_pool.size
    assert out == 0


def test_a_refused_write_still_gives_the_leases_back(run: Any, buffer_pool: Any) -> None:
    """A lease or PooledBytes handed to ``write``/``writelines`` is the writer's even when the
    transport refuses it (``write()`` after ``write_eof()`` raises ``RuntimeError``): it stayed
    out of the pool, with nothing saying whose it was. A bad item among them (not bytes-like)
    is refused before anything is taken: those leases stay the caller's."""

    async def main() -> tuple[list[str], list[bool], bool, int]:
        refused: list[str] = []
        given: list[Any] = []

        async def handler(reader: Any, writer: Any) -> None:
            kept = buffer_pool.acquire()
            with contextlib.suppress(TypeError):
                writer.writelines([kept, "text"])
            given.append(kept.released)  # False: still the caller's
            kept.release()
            writer.write(b"ok")
            writer.write_eof()
            pieces = PooledBytes([memoryview(b"abc")])
            for call, items in (
                (writer.write, buffer_pool.acquire()),
                (writer.write, pieces),
                (writer.writelines, [buffer_pool.acquire(), b"x", buffer_pool.acquire()]),
            ):
                for item in items if isinstance(items, list) else [items]:
                    if not isinstance(item, bytes):
                        given.append(item)
                try:
                    call(items)
                except RuntimeError:
                    refused.append(call.__name__)
            await writer.drain()
            writer.close()

        got = await read_from(handler, buffer_pool)
        assert got == b"ok"
        caller_kept, *taken = given
        return refused, [item.released for item in taken], caller_kept, buffer_pool.outstanding()

    refused, released, caller_kept, out = run(main())
    assert refused == ["write", "write", "writelines"]
    assert released == [True, True, True, True]
    assert caller_kept is False
    assert out == 0


def test_writer_refuses_what_is_not_bytes_like_as_asyncio_does(run: Any, buffer_pool: Any) -> None:
    # a str reached the lease branch and raised AttributeError ('str' has no 'view'); asyncio's
    # writer raises TypeError, and the connection goes on
    async def main() -> tuple[bytes, list[str]]:
        errors: list[str] = []

        async def handler(reader: Any, writer: Any) -> None:
            for bad in ("text", 5):
                for call in (writer.write, lambda d: writer.writelines([d])):
                    try:
                        call(bad)
                    except TypeError:
                        errors.append(type(bad).__name__)
            writer.write(b"ab")
            writer.writelines([b"c", b"d"])
            await writer.drain()
            writer.close()

        return await read_from(handler, buffer_pool), errors

    got, errors = run(main())
    assert got == b"abcd"
    assert errors == ["str", "str", "int", "int"]


def test_readexactly_lease_spans_blocks_zero_copy(run: Any, small_pool: Any) -> None:
    async def main() -> tuple[bytes, int, bool]:
        result: list[Any] = []

        async def handler(reader: Any, writer: Any) -> None:
            data = await reader.readexactly_lease(100)
            result.append((bytes(data), len(data.views), data.views[0].readonly))
            data.release()
            writer.close()

        server, port = await serve(handler, small_pool)
        _, writer = await streams.open_connection("127.0.0.1", port, pool=small_pool)
        writer.write(bytes(range(100)))
        while not result:
            await asyncio.sleep(0.01)
        await stop(server, writer)
        return result[0]

    data, pieces, readonly = run(main())
    assert data == bytes(range(100))
    assert pieces >= 100 // 16
    assert readonly is False  # the pooled block itself, not a copy


def test_strict_pool_copies_and_works(run: Any) -> None:
    pool = poolalloc.BufferPool(4096, capacity=64, strict=True)

    async def main() -> bytes:
        server, port = await serve(echo_leases, pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
        writer.write(b"strict" * 1000)
        writer.write_eof()
        got = await reader.read()
        await stop(server, writer)
        return got

    assert run(main()) == b"strict" * 1000
    gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def test_exhausted_pool_fails_the_connection(run: Any) -> None:
    pool = poolalloc.BufferPool(8, capacity=2)

    async def main() -> list[BaseException]:
        errors: list[BaseException] = []

        async def handler(reader: Any, writer: Any) -> None:
            try:
                await reader.readexactly(1000)  # every 8 bytes hold one of 2 blocks
            except poolalloc.PoolExhausted as e:
                errors.append(e)

        server, port = await serve(handler, pool)
        reader, writer = await streams.open_connection("127.0.0.1", port)  # default pool
        writer.write(b"y" * 1000)
        await writer.drain()
        with pytest.raises(ConnectionResetError):  # closed with unread data: a reset
            await reader.read()
        await stop(server, writer)
        return errors

    errors = run(main())
    assert len(errors) == 1
    gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def test_exhausted_pool_raises_in_the_reader(run: Any) -> None:
    pool = poolalloc.BufferPool(8, capacity=2)

    async def main() -> Any:
        async def handler(reader: Any, writer: Any) -> None:
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()

        server, port = await serve(handler, None)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=pool)
        deadline = asyncio.get_running_loop().time() + 20
        while reader.exception() is None:  # nothing is read: two 8-byte reads exhaust it
            assert asyncio.get_running_loop().time() < deadline, "the pool never ran out"
            await asyncio.sleep(0.01)
        with pytest.raises(poolalloc.PoolExhausted):
            await reader.readexactly(1)
        reader.discard()
        await stop(server, writer)

    run(main())
    gc.collect()
    assert pool.outstanding() == 0
    pool.close()


def test_handler_error_closes_connection(run: Any, buffer_pool: Any) -> None:
    async def main() -> tuple[bytes, list[str]]:
        reports: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: reports.append(ctx["message"])
        )

        async def handler(reader: Any, writer: Any) -> None:
            await reader.readexactly(1)
            raise RuntimeError("boom")

        server, port = await serve(handler, buffer_pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        writer.write(b"!")
        got = await reader.read()
        await stop(server, writer)
        return got, reports

    got, reports = run(main())
    assert got == b""
    assert reports == ["Unhandled exception in client_connected_cb"]


def test_a_writer_dropped_unclosed_closes_its_connection(run: Any, buffer_pool: Any) -> None:
    """A handler that returns without ``close()``: its writer, once garbage, closes the
    connection (a ``ResourceWarning`` says so), as asyncio's does from Python 3.13 on; the
    client reads what was written, then EOF, and the server's ``wait_closed`` returns."""

    async def main() -> tuple[bytes, list[str]]:
        async def handler(reader: Any, writer: Any) -> None:
            writer.write(b"bye\n")  # and no close()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            server, port = await serve(handler, buffer_pool)
            reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
            await asyncio.sleep(0.05)
            gc.collect()
            got = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        return got, [str(w.message) for w in caught if w.category is ResourceWarning]

    got, warned = run(main())
    assert got == b"bye\n"
    assert any(m.startswith("unclosed <PooledStreamWriter") for m in warned)


def test_concurrent_readers_are_refused() -> None:
    async def main() -> None:
        reader = PooledStreamReader()
        first = asyncio.ensure_future(reader.read(1))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already waiting"):
            await reader.read(1)
        reader.feed_data(b"a")
        assert await first == b"a"

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Limit"):
        PooledStreamReader(limit=0)

    async def main() -> None:
        reader = PooledStreamReader()
        with pytest.raises(ValueError, match="one-byte"):
            await reader.readuntil(b"")
        with pytest.raises(ValueError, match="less than zero"):
            await reader.readexactly(-1)
        with pytest.raises(TypeError, match="tuple"):
            await reader.readuntil((b"a", b"b"))  # type: ignore[arg-type]

    asyncio.run(main())


@pytest.mark.parametrize("method", ["read", "readexactly", "read_lease", "readexactly_lease"])
@pytest.mark.parametrize("size", [2.5, 3.0, "2"])
def test_a_size_that_is_no_integer_is_refused_and_consumes_nothing(method: str, size: Any) -> None:
    """asyncio's reader raises TypeError with its buffer intact; a float used to take the first
    pieces, then fail half way, leaving the reader's count out of step (every later read broke)."""

    async def main() -> None:
        reader = PooledStreamReader()
        reader.feed_data(b"ab")
        reader.feed_data(b"cd")
        reader.feed_eof()
        with pytest.raises(TypeError):
            await getattr(reader, method)(size)
        assert await reader.read() == b"abcd"

    asyncio.run(main())


def test_async_iteration_yields_lines(run: Any, buffer_pool: Any) -> None:
    async def main() -> list[bytes]:
        async def handler(reader: Any, writer: Any) -> None:
            writer.write(b"one\ntwo\nthree")
            writer.close()

        server, port = await serve(handler, buffer_pool)
        reader, writer = await streams.open_connection("127.0.0.1", port, pool=buffer_pool)
        lines = [line async for line in reader]
        await stop(server, writer)
        return lines

    assert run(main()) == [b"one\n", b"two\n", b"three"]
