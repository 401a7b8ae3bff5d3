"""One download by a client with a tiny receive buffer, from the HTTP server on each engine.

The client sets ``SO_RCVBUF`` before it connects (so its first window is already small), asks
for ``--kib`` KiB of a static route and reads ``--read`` bytes every ``--pause-ms`` ms until
the server closes or ``--limit-s`` has passed. Engines: ``uring`` (the Proactor as built by
default: writes of 64 KiB and more may go as ``SEND_ZC``), ``copy`` (the Proactor with
``zc_threshold=None``), ``epoll`` (the Reactor). Prints the bytes, the seconds and KB/s::

    python bench/tiny_window_download.py --engine uring --kib 384 --rcvbuf 1024 --pause-ms 10
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

from poolalloc.buffers import BufferPool
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http.server import HttpServer, Response
from poolalloc.net.uring.proactor import Proactor


def download(a: argparse.Namespace) -> str:
    engine, kib, rcvbuf, read, pause_ms, limit_s = (
        a.engine,
        a.kib,
        a.rcvbuf,
        a.read,
        a.pause_ms,
        a.limit_s,
    )
    if engine == "epoll":
        loop: Reactor = Reactor()
    else:
        loop = Proactor(zc_threshold=None) if engine == "copy" else Proactor()
    pool = BufferPool(16384, capacity=64)
    http = HttpServer(loop, buffer_pool=pool)
    http.route("/big", Response(body=b"z" * (kib << 10)))
    http.start()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    got = 0
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.connect(("127.0.0.1", http.address[1]))
        c.settimeout(limit_s)
        start = time.monotonic()
        c.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        while time.monotonic() - start < limit_s and (chunk := c.recv(read)):
            got += len(chunk)
            time.sleep(pause_ms / 1000)
        took = time.monotonic() - start
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    http.close()
    loop.close()
    return (
        f"{engine} rcvbuf={rcvbuf} read={read}/{pause_ms}ms: {got} B in {took:.2f} s"
        f" = {got / took / 1000:.1f} KB/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("uring", "copy", "epoll"), default="uring")
    ap.add_argument("--kib", type=int, default=384, help="body size in KiB")
    ap.add_argument("--rcvbuf", type=int, default=1024, help="the client's SO_RCVBUF")
    ap.add_argument("--read", type=int, default=1024, help="bytes per recv")
    ap.add_argument("--pause-ms", type=float, default=10.0, help="sleep after each recv")
    ap.add_argument("--limit-s", type=float, default=400.0, help="stop reading after this")
    a = ap.parse_args()
    print(download(a), flush=True)


if __name__ == "__main__":
    main()
