"""Python heap per idle connection on a TcpServer echo, measured with tracemalloc.

Usage: ``.venv/bin/python bench/idle_connection_memory.py [N] [epoll|uring]`` (default 2,000
connections on the epoll Reactor; ``uring``: the io_uring Proactor and its server).
Prints bytes per connection with the connections fresh and after one echo round trip; the
figure includes the measuring script's own client socket objects.
"""

from __future__ import annotations

import gc
import socket
import sys
import time
import tracemalloc
from typing import Any

import poolalloc
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer


class Echo:
    """Writes back what it reads."""

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.conn.write(lease.view[:n], owner=lease)
        return True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def pump(r: Reactor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r.call_later(0.001, lambda: None)
        r.run_once()


def grown(snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot) -> int:
    return sum(st.size_diff for st in snapshot.compare_to(base, "filename"))


def main(n: int, engine: str = "epoll") -> None:
    server_class: Any = TcpServer
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor

        r: Reactor = Proactor()
        server_class = Proactor.server_class
    else:
        r = Reactor()
    pool = poolalloc.BufferPool(4096, capacity=n + 64)
    srv = server_class(r, Echo, buffer_pool=pool, idle_timeout=600)
    srv.start()
    warm = [socket.create_connection(srv.address) for _ in range(50)]  # caches filled first
    pump(r, 0.3)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    clients = []
    for i in range(n):
        clients.append(socket.create_connection(srv.address))
        if i % 100 == 99:
            pump(r, 0.01)
    pump(r, 0.5)
    assert len(srv.connections) == n + len(warm), len(srv.connections)
    gc.collect()
    fresh = grown(tracemalloc.take_snapshot(), base)
    for c in clients:
        c.sendall(b"ping")
    pump(r, 0.5)
    for c in clients:
        assert c.recv(8) == b"ping"
    gc.collect()
    after = grown(tracemalloc.take_snapshot(), base)
    tracemalloc.stop()
    print(f"{engine} N={n} fresh: {fresh / n:.0f} B/conn; after one echo: {after / n:.0f} B/conn")
    for c in clients + warm:
        c.close()
    srv.close()
    r.close()
    pool.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, *sys.argv[2:3])
