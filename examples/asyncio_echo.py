"""An asyncio echo server whose reads land in pooled buffers (``PooledProtocol``).

asyncio's BufferedProtocol asks the protocol for a buffer before each read; PooledProtocol
answers with a lease from a BufferPool, so the kernel copies the bytes straight into pooled
memory, and the echo writes them back from there. No ``bytes`` object is made per read.

    python examples/asyncio_echo.py --port 8888 --duration 60   # serve for a minute
    python examples/asyncio_echo.py --once                       # serve, check with clients, exit
"""

from __future__ import annotations

import argparse
import asyncio

from poolalloc.net.aio import PooledProtocol
from poolalloc.net.sockets import LeaseLike

import poolalloc


class Echo(PooledProtocol):
    """Writes every read back to the sender."""

    def lease_received(self, lease: LeaseLike, nbytes: int) -> bool:
        assert self.transport is not None
        view = lease.view
        self.transport.write(view[:nbytes])  # the transport copies what it cannot send now
        view.release()
        return False  # done with it: the lease goes back to the pool


async def check_with_clients(port: int, clients: int, messages: int) -> int:
    """Open ``clients`` connections, echo ``messages`` each, return how many came back intact."""

    async def one(client: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        good = 0
        for i in range(messages):
            line = f"client {client} message {i}\n".encode()
            writer.write(line)
            good += await reader.readline() == line
        writer.close()
        await writer.wait_closed()
        return good

    return sum(await asyncio.gather(*(one(c) for c in range(clients))))


async def main(args: argparse.Namespace) -> int:
    pool = poolalloc.BufferPool(16384, capacity=256, name="echo-read")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Echo(pool), "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"echo server on 127.0.0.1:{port}", flush=True)
    status = 0
    async with server:
        if args.once:
            good = await check_with_clients(port, clients=20, messages=50)
            print(f"{good}/1000 messages echoed intact")
            status = 0 if good == 1000 else 1
        else:
            await asyncio.sleep(args.duration)
    await asyncio.sleep(0)  # let connection_lost run for the last connections
    left = pool.outstanding()
    print(f"buffers still leased: {left}")
    pool.close()
    return status or (1 if left else 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free port)")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds to serve")
    parser.add_argument("--once", action="store_true", help="check with 20 clients, then exit")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
