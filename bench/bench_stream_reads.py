"""Python cost of one read through pooled asyncio streams: ns per read, no sockets.

Drives the streams protocol as a transport does (``get_buffer``, ``buffer_updated``), then
takes the piece with ``read_lease()`` and releases it, so what is timed is the library's own
per-read work. Run the build before and the build after alternately (an older install first
on ``PYTHONPATH``) to compare them::

    python bench/bench_stream_reads.py 65536   # a bulk read: a block per read
    python bench/bench_stream_reads.py 100     # a small read into an empty reader
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import poolalloc
from poolalloc.net import streams

READS = 200_000


class _Transport:
    """What the reader and the protocol call on a transport; nothing is sent or received."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def ns_per_read(nbytes: int) -> float:
    loop = asyncio.get_running_loop()
    pool = poolalloc.BufferPool(65536, capacity=64)
    reader = streams.PooledStreamReader(loop=loop)
    protocol = streams._PooledStreamProtocol(reader, pool, loop)
    transport = _Transport()
    protocol._transport = transport  # type: ignore[assignment]
    reader._transport = transport
    start = time.perf_counter()
    for _ in range(READS):
        protocol.get_buffer(-1)
        protocol.buffer_updated(nbytes)
        data = await reader.read_lease()
        assert data is not None
        data.release()
    elapsed = time.perf_counter() - start
    pool.close()
    return elapsed / READS * 1e9


if __name__ == "__main__":
    print(f"{asyncio.run(ns_per_read(int(sys.argv[1]) if len(sys.argv) > 1 else 65536)):.0f}")
