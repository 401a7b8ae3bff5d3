"""Baseline HTTP servers on asyncio/uvloop for bench_http.py (uvloop examples/bench style).

One script, three styles: ``--loop asyncio|uvloop`` and ``--style proto|buffered``. Each
answers every request head it sees (counted by its blank line) with a canned keep-alive
``Hello, World!`` response: no parsing, no pools, the cheapest a Protocol server can be.
"""

from __future__ import annotations

import argparse
import asyncio

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\n\r\nHello, World!"
)


class Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE * data.count(b"\r\n\r\n"))  # type: ignore[attr-defined]


class Buffered(asyncio.BufferedProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        n = self.buf.count(b"\r\n\r\n", 0, nbytes)
        self.transport.write(RESPONSE * n)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--style", choices=["proto", "buffered"], default="proto")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    factory = Proto if args.style == "proto" else Buffered

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", args.port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
