"""The relay on the project's own event loops: the epoll Reactor and the io_uring Proactor.

A read lands in a pooled lease; the lease itself is written to the sink and goes back to the
pool once the kernel has taken its bytes, so no byte is copied in Python. The source pauses
while the sink's write queue is above its high-water mark and resumes once it falls under the
low-water mark: memory stays bounded however fast the source is. The marks are the same on
both engines: four reads, and never below the connections' default high-water mark (1 MiB),
which small reads would otherwise undercut: io_uring completes a batch of receives per pass,
and sixteen 64 KiB reads passed a 256 KiB mark in almost every pass, a pause and a resume
each time, where the Reactor, which sends each read at once, hardly ever paused.

The Proactor stages at most 2 MiB of receive blocks (``ring_bytes``): the kernel fills staged
blocks in ring order, and sixteen 1 MiB blocks written in turn are more than the caches keep.
"""

from __future__ import annotations

import socket
from typing import Any

import poolalloc
from poolalloc.cli.workloads._common import HOST
from poolalloc.cli.workloads._peer import COUNT

#: Reads a sink may have queued before the source pauses (and half of it to resume)...
QUEUE_READS = 4
#: ...but never fewer bytes than this (the connections' default high-water mark).
MIN_HIGH_WATER = 1 << 20
#: Most bytes of receive blocks the Proactor stages in its buffer ring.
RING_BYTES = 2 << 20
#: Seconds the whole relay may take before it is called stuck.
DEADLINE = 600.0


class _Run:
    """One relay: the two connections, what the sink answered, and the first failure."""

    def __init__(self, loop: Any, total: int) -> None:
        self.loop, self.total = loop, total
        self.source: Any = None
        self.sink: Any = None
        self.source_done = False
        self.answer = b""
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.loop.stop()

    def end_when_sent(self) -> None:
        """Half-close the sink once everything queued is out; it then answers its count."""
        sink = self.sink
        if sink.closed:
            return
        if sink.queued or sink.queue:
            self.loop.call_later(0.001, self.end_when_sent)
            return
        sink.sock.shutdown(socket.SHUT_WR)


class _Feed:
    """The source's protocol: each read is written to the sink, the lease with it."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def connection_made(self, conn: Any) -> None:
        self.run.source = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        sink = self.run.sink
        sink.write(lease.view[:nbytes], lease)
        if sink.paused:  # its queue passed the high-water mark
            self.run.source.pause_reading()
        return True

    def eof_received(self) -> bool:
        self.run.source_done = True
        self.run.end_when_sent()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.run.fail(exc)


class _Drain:
    """The sink's protocol: resumes the source as the queue drains; reads the final count."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def connection_made(self, conn: Any) -> None:
        self.run.sink = conn

    def resume_reading(self) -> None:
        source = self.run.source
        if source is not None and not source.closed:
            source.resume_reading()

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        self.run.answer += bytes(lease.view[:nbytes])
        if len(self.run.answer) >= COUNT.size:
            self.run.loop.stop()
        return False

    def eof_received(self) -> bool:
        self.run.loop.stop()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.run.fail(exc)


def make_loop(engine: str, ring_bytes: int | None = RING_BYTES) -> tuple[Any, type]:
    """A Reactor (``epoll``) or a Proactor (``uring``) sized for a one-connection relay, and
    the connection class that runs on it."""
    if engine == "uring":
        from poolalloc.net.uring.connection import UringConnection  # noqa: PLC0415
        from poolalloc.net.uring.proactor import Proactor  # noqa: PLC0415

        # whole buffers, as the relay's figures were measured; incremental ones are for many
        # connections with small reads (docs/benchmarks.md, io_uring memory per connection)
        proactor = Proactor(
            ring_buffers=16, initial_buffers=8, ring_bytes=ring_bytes, incremental=False
        )
        return proactor, UringConnection
    from poolalloc.net.epoll.connection import Connection  # noqa: PLC0415
    from poolalloc.net.epoll.reactor import Reactor  # noqa: PLC0415

    return Reactor(), Connection


def relay(
    engine: str,
    src_port: int,
    sink_port: int,
    total: int,
    chunk: int,
    *,
    ring_bytes: int | None = RING_BYTES,
    min_high_water: int = MIN_HIGH_WATER,
) -> None:
    """Relay ``total`` bytes from the source port to the sink port on ``engine``'s loop.

    ``ring_bytes`` and ``min_high_water`` are there to measure the relay without them
    (``bench/relay_loops.py``); the workload keeps the defaults.

    :raises RuntimeError: the sink did not get every byte, or the relay did not end in time.
    """
    loop, connection_class = make_loop(engine, ring_bytes)
    try:
        with poolalloc.BufferPool(chunk, capacity=64) as pool:
            run = _Run(loop, total)
            src = socket.create_connection((HOST, src_port))
            src.sendall(COUNT.pack(total))
            dst = socket.create_connection((HOST, sink_port))
            sink, source = connection_class(), connection_class()
            high = max(QUEUE_READS * chunk, min_high_water)
            sink.high_water, sink.low_water = high, high // 2
            sink.open(loop, dst, pool, _Drain(run), chunk)
            source.open(loop, src, pool, _Feed(run), chunk)
            timer = loop.call_later(DEADLINE, run.fail, TimeoutError("the relay got stuck"))
            loop.run()
            timer.cancel()
            for conn in (source, sink):
                if not conn.closed:
                    conn.abort()
            # let the aborts' completions come back before the pool closes: one pass that does
            # not sleep (a bare run_once would wait for IO with no timer left, and so would
            # block for good if neither connection had anything left to complete)
            loop.stop()
            loop.run()
    finally:
        loop.close()
    if run.error is not None:
        raise RuntimeError(f"{engine} relay failed: {run.error}") from run.error
    (got,) = COUNT.unpack(run.answer[: COUNT.size])
    if got != total:
        raise RuntimeError(f"relay lost data: the sink got {got} of {total} bytes")


def relay_epoll(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    relay("epoll", src_port, sink_port, total, chunk)


def relay_uring(src_port: int, sink_port: int, total: int, chunk: int) -> None:
    relay("uring", src_port, sink_port, total, chunk)
