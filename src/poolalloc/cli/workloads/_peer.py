"""The traffic peer of the relay, hand-off and churn workloads: a separate process.

``relay``: a source port (send the 8-byte count asked for, then close) and a sink port (read to
EOF, answer the 8-byte count read). ``frames``: send the frames asked for, each a 16-byte head
(size, send time) and the payload. ``sizes``: answer each 8-byte size with that many bytes.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from poolalloc.cli.workloads._common import HOST, MIB, wait_stdin_closed

COUNT = struct.Struct("!Q")
HEAD = struct.Struct("!Qd")
REQUEST = struct.Struct("!QQQQ")  # frames, seed, low size, high size
BLOCK = memoryview(bytes(range(256)) * (4 * MIB // 256))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) != n:
        raise ConnectionError("peer closed early")
    return data


def send_count(sock: socket.socket, n: int) -> None:
    while n > 0:
        step = min(n, len(BLOCK))
        sock.sendall(BLOCK[:step])
        n -= step


def source(conn: socket.socket) -> None:
    with conn:
        (n,) = COUNT.unpack(recv_exact(conn, COUNT.size))
        send_count(conn, n)


def sink(conn: socket.socket) -> None:
    with conn:
        buf = bytearray(MIB)
        total = 0
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(COUNT.pack(total))


def frame_sizes(count: int, seed: int, low: int, high: int) -> list[int]:
    """Frame sizes, log-uniform between low and high (the same list on both sides)."""
    rng = random.Random(seed)
    if low == high:
        return [low] * count
    import math  # noqa: PLC0415

    a, b = math.log(low), math.log(high)
    return [int(math.exp(rng.uniform(a, b))) for _ in range(count)]


def frames(conn: socket.socket) -> None:
    with conn:
        count, seed, low, high = REQUEST.unpack(recv_exact(conn, REQUEST.size))
        for size in frame_sizes(count, seed, low, high):
            conn.sendall(HEAD.pack(size, time.monotonic()))
            send_count(conn, size)


def sizes(conn: socket.socket) -> None:
    with conn:
        while True:
            head = conn.recv(COUNT.size, socket.MSG_WAITALL)
            if len(head) != COUNT.size:
                return
            send_count(conn, COUNT.unpack(head)[0])


ROLES = {"source": source, "sink": sink, "frames": frames, "sizes": sizes}


def serve(listener: socket.socket, handler: Callable[[socket.socket], None]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def main(argv: list[str]) -> int:
    """Listen for each role named in argv; print ``READY port...``; run until stdin closes."""
    ports = []
    for role in argv:
        listener = socket.create_server((HOST, 0), backlog=64)
        ports.append(str(listener.getsockname()[1]))
        threading.Thread(target=serve, args=(listener, ROLES[role]), daemon=True).start()
    print("READY", *ports, flush=True)
    wait_stdin_closed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
