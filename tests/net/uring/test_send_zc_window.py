"""Zero-copy sends and the peer's window: a client with a tiny receive buffer is sent copies.

Over loopback the kernel copies a ``SEND_ZC`` after all, each segment into pages of its own;
a receiver with a buffer of a few KiB then advertises less than one segment and TCP sends only
on its persist timer (about 1.4 KB/s). Copied sends to the same client run at its reading pace.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from loop_passes import Quiet

from poolalloc.buffers import BufferPool
from poolalloc.net.uring.proactor import Proactor
from poolalloc.net.uring.ring import Ring
from poolalloc.net.uring.server import UringTcpServer

pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]

SIZE = 256 << 10
#: A steady reader (1 KiB a millisecond) with a 1 KiB SO_RCVBUF takes 0.5 s here from copied
#: sends (2-vCPU VM, loaded or not); from zero-copy sends it had 7 KB after 5 s (the whole
#: would take about 190 s). The bound is 10 times the copied sends' time.
BOUND_S = 5.0


class Download(Quiet):
    """Writes SIZE bytes as one buffer (above the zero-copy threshold) and closes."""

    def connection_made(self, conn: Any) -> None:
        conn.write(b"z" * SIZE)
        conn.close()


@pytest.mark.parametrize(("rcvbuf", "zero_copy"), [(1024, False), (None, True)])
def test_a_tiny_window_client_gets_copied_sends_at_its_reading_pace(
    rcvbuf: int | None, zero_copy: bool, run_with_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = Proactor(zc_threshold=1 << 16)
    if loop.zc_threshold is None:
        loop.close()
        pytest.skip("the kernel has no IORING_OP_SEND_ZC")
    chosen: list[bool] = []
    prep = Ring.prep_send_buffer

    def recording(self: Ring, fd: int, data: Any, ud: int, zc: bool = False) -> Any:
        chosen.append(zc)
        return prep(self, fd, data, ud, zc)

    monkeypatch.setattr(Ring, "prep_send_buffer", recording)
    pool = BufferPool(4096, capacity=16)
    server = UringTcpServer(loop, Download, buffer_pool=pool)
    server.start()

    def client(out: dict[str, Any]) -> None:
        with socket.socket() as c:
            if rcvbuf is not None:  # before connect: the SYN already advertises the small window
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            c.connect(server.address)
            c.settimeout(BOUND_S)
            start = time.monotonic()
            got = 0
            while time.monotonic() - start < BOUND_S and (chunk := c.recv(1024)):
                got += len(chunk)
                time.sleep(0.001)
            out["got"], out["took"] = got, time.monotonic() - start

    out = run_with_client(loop, client, timeout=BOUND_S + 10)
    assert out["got"] == SIZE, f"{out['got']} of {SIZE} bytes in {out['took']:.1f} s"
    assert chosen[:1] == [zero_copy]  # a normal client keeps the zero-copy send
    server.close()
    loop.close()
    assert pool.outstanding() == 0
    pool.close()
