"""Sender CPU per GiB: `poolalloc.net.sendfile` (os.sendfile) against a read-and-send loop.

The sender (this process, pinned to CPU 0) pushes a file over loopback TCP to a receiver
process pinned to CPU 1 that discards everything; the sender's own user+system CPU time
(getrusage) is divided by the GiB moved. Methods alternate within each round; the report gives
the median and min-max. The file sits in the page cache (written just before), so disk speed
is out of the picture:

    .venv/bin/python bench/bench_sendfile.py --size-mib 512 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import poolalloc
from poolalloc.net.sockets import send_buffers
from poolalloc.net.zerocopy import sendfile

RECEIVER = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    while c.recv_into(buf):
        pass
    c.close()
"""


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def send_with_sendfile(sock: socket.socket, f: object, size: int, pool: object) -> int:
    return sendfile(sock, f, 0, size)  # type: ignore[arg-type]


def send_with_loop(sock: socket.socket, f: object, size: int, pool: object) -> int:
    lease = pool.acquire()  # type: ignore[attr-defined]
    view = lease.view
    sent = 0
    f.seek(0)  # type: ignore[attr-defined]
    try:
        while True:
            n = f.readinto(view)  # type: ignore[attr-defined]
            if not n:
                break
            left = send_buffers(sock, [view[:n]])
            assert not left
            sent += n
    finally:
        lease.release()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-kib", type=int, default=256)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    recv = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True
    )
    assert recv.stdout is not None
    port = int(recv.stdout.readline())
    pool = poolalloc.BufferPool(args.chunk_kib << 10, capacity=4)
    size = args.size_mib << 20
    results: dict[str, list[float]] = {"sendfile": [], "read+send": []}
    methods = {"sendfile": send_with_sendfile, "read+send": send_with_loop}
    try:
        with tempfile.TemporaryFile(dir=os.environ.get("TMPDIR", "/tmp")) as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                f.write(block)
            f.flush()
            for rnd in range(args.rounds):
                order = list(methods) if rnd % 2 == 0 else list(methods)[::-1]
                for name in order:
                    with socket.create_connection(("127.0.0.1", port)) as sock:
                        c0, t0 = cpu_seconds(), time.perf_counter()
                        assert methods[name](sock, f, size, pool) == size
                        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
                    per_gib = cpu / (size / (1 << 30))
                    results[name].append(per_gib)
                    print(f"round {rnd} {name:10} {per_gib * 1000:7.1f} ms CPU/GiB "
                          f"({size / wall / (1 << 30):.2f} GiB/s)", flush=True)  # fmt: skip
    finally:
        recv.kill()
        pool.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in results.items():
        print(f"{k:10} median {med[k] * 1000:.1f} ms CPU/GiB "
              f"(min {min(v) * 1000:.1f}, max {max(v) * 1000:.1f})")  # fmt: skip
    print(f"ratio sendfile / read+send: {med['sendfile'] / med['read+send']:.2f}")


if __name__ == "__main__":
    main()
