"""The echo servers of the many-connections workload, one per process (``main(kind)``).

Every server echoes what it reads. The pooled one is the project's Reactor and TcpServer:
reads land in BufferPool leases that go back once written, and the per-connection state comes
from an ObjectPool. The baselines are what a user would otherwise write on asyncio or uvloop.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any

from poolalloc.cli.workloads._common import HOST, pin_to, raise_fd_limit, wait_stdin_closed

READ_SIZE = 65536
BACKLOG = 4096


class _Echo:
    """The pooled server's protocol: write the lease back, released once it is out."""

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        self.conn.write(lease.view[:nbytes], lease)
        return True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.conn = None


def run_pooled(engine: str) -> None:
    """The project's server: ``epoll`` (the Reactor) or ``uring`` (the io_uring Proactor)."""
    import poolalloc  # noqa: PLC0415
    from poolalloc.net.epoll.reactor import Reactor  # noqa: PLC0415
    from poolalloc.net.epoll.server import TcpServer, listen_socket  # noqa: PLC0415

    server_class: Any = TcpServer
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor  # noqa: PLC0415

        reactor: Reactor = Proactor()
        server_class = Proactor.server_class
    else:
        reactor = Reactor()
    pool = poolalloc.BufferPool(READ_SIZE, capacity=None)
    sock = listen_socket(HOST, 0, backlog=BACKLOG)
    server = server_class(
        reactor,
        _Echo,
        buffer_pool=pool,
        conn_pool=server_class.make_connection_pool(None),
        sock=sock,
        idle_timeout=3600.0,
    )
    server.start()
    print("READY", server.address[1], flush=True)
    threading.Thread(
        target=_stop_on_eof, args=(reactor.call_soon_threadsafe, reactor.stop), daemon=True
    ).start()
    reactor.run()
    server.close()
    reactor.close()


def _stop_on_eof(call: Any, stop: Any) -> None:
    wait_stdin_closed()
    call(stop)


class _Plain(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _Buffered(asyncio.BufferedProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = bytearray(READ_SIZE)  # the buffer each connection keeps for its life

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(self.buf[:nbytes])  # a copy: the buffer is read into again


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve_asyncio(kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "streams":
        server: Any = await asyncio.start_server(_stream_echo, HOST, 0, backlog=BACKLOG)
    else:
        factory: Any = _Plain if kind == "plain" else _Buffered
        server = await loop.create_server(factory, HOST, 0, backlog=BACKLOG)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    done = loop.create_future()
    threading.Thread(
        target=_stop_on_eof,
        args=(loop.call_soon_threadsafe, lambda: None if done.done() else done.set_result(None)),
        daemon=True,
    ).start()
    await done
    server.close()


def main(argv: list[str]) -> int:
    """``main([kind])``: kind is ``pooled``, ``pooled-uring``, ``asyncio-plain``..."""
    kind = argv[0]
    pin_to(0)
    raise_fd_limit(1 << 20)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if kind in ("pooled", "pooled-uring"):
        run_pooled("uring" if kind == "pooled-uring" else "epoll")
        return 0
    loop_name, _, style = kind.partition("-")
    if loop_name == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.run(_serve_asyncio(style))
    else:
        asyncio.run(_serve_asyncio(style))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
