"""Memory truth for the ASGI server (second pass of `make test`, `--memray -m leaks`)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from poolalloc.net.asgi import AsgiServer

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

CLIENTS = 8
REQUESTS = 40


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:  # read the whole request body, as a real app does
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"got %d" % len(body)})


async def _load(rounds: int) -> int:
    server = AsgiServer(app, "127.0.0.1", 0, lifespan="off")
    await server.start()

    async def client(i: int) -> int:
        reader, writer = await asyncio.open_connection(*server.address)
        ok = 0
        for n in range(REQUESTS):
            size = (i * 997 + n * 131) % 5000
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"u" * size
            )
            await reader.readuntil(b"\r\n\r\n")
            ok += (await reader.readuntil(b"got %d" % size)).endswith(b"got %d" % size)
        writer.close()
        await writer.wait_closed()
        return ok

    answered = 0
    for _ in range(rounds):
        answered += sum(await asyncio.gather(*(client(i) for i in range(CLIENTS))))
    await server.shutdown(5)
    return answered


def serve_rounds(rounds: int) -> int:
    answered = asyncio.run(_load(rounds))
    gc.collect()
    return answered


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    """Module-level state (the head cache, status lines, asyncio's) fills once here."""
    serve_rounds(2)


@pytest.mark.leaks
@pytest.mark.limit_leaks("64 KB")
def test_asgi_server_under_load_leaks_nothing() -> None:
    assert serve_rounds(15) == 15 * CLIENTS * REQUESTS
