"""Memory per connection on the Proactor: what a connection keeps after a gathered send, how
many blocks the provided-buffer ring stages, and how incremental buffers are consumed."""

from __future__ import annotations

import socket
from typing import Any, ClassVar

import pytest
from echo import Echo

from poolalloc.buffers import BufferPool
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net]


class TwoWrites(Echo):
    """Writes each read back in two pieces, so that two buffers queue and go out gathered."""

    #: what the connection held at each read: the echo of the one before is out by then
    seen: ClassVar[list[tuple[Any, Any]]] = []

    def buffer_received(self, lease: Any, n: int) -> bool:
        TwoWrites.seen.append((self.conn._x, self.conn._sending))
        half = n // 2 or n
        self.conn.write(bytearray(lease.view[:half]))
        if half < n:
            self.conn.write(bytearray(lease.view[half:n]))
        return False


def test_a_gathered_send_leaves_no_iovec_array_on_the_connection(
    proactor: Proactor, run_with_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each connection that once gathered two writes used to keep a 16 KiB iovec array (zeroed,
    every page touched) for the rest of its life: 16 MiB at 10,000 connections."""
    TwoWrites.seen = []
    gathers: list[int] = []
    real = UringConnection._gather_send

    def counted(self: UringConnection, views: list[Any]) -> None:
        gathers.append(len(views))
        real(self, views)

    monkeypatch.setattr(UringConnection, "_gather_send", counted)
    pool = BufferPool(4096, capacity=64)
    srv = UringTcpServer(proactor, TwoWrites, buffer_pool=pool)
    srv.start()

    def client(out: dict[str, Any]) -> None:
        with socket.create_connection(srv.address, timeout=5) as c:
            for i in range(5):
                msg = bytes([65 + i]) * 100
                c.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += c.recv(4096)
                assert got == msg

    out = run_with_client(proactor, client)
    assert gathers, "the test must really gather"
    assert set(gathers) == {2}
    assert "error" not in out
    assert TwoWrites.seen == [(None, None)] * 5
    srv.close()
    proactor.close()
    assert pool.outstanding() == 0
    pool.close()
