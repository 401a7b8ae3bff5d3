"""The load generator of the many-connections workload (a process of its own, on CPU 1).

``main([port, connections, seconds, interval, burst_share, seed])`` opens the connections,
then each sends a small message every ``interval`` seconds (a 256 KiB burst instead, with
probability ``burst_share``) and waits for the echo; it prints one JSON line of latencies.
"""

from __future__ import annotations

import heapq
import json
import random
import select
import socket
import sys
import time

from poolalloc.cli.workloads._common import HOST, KIB, pin_to, raise_fd_limit

SMALL = 64
BURST = 256 * KIB
PAYLOAD = memoryview(b"x" * BURST)


def open_all(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def main(argv: list[str]) -> int:
    port, n = int(argv[0]), int(argv[1])
    seconds, interval, burst_share = float(argv[2]), float(argv[3]), float(argv[4])
    rng = random.Random(int(argv[5]))
    pin_to(1)
    raise_fd_limit(1 << 20)
    print("READY", flush=True)
    socks = open_all(port, n)
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    expect = dict.fromkeys(by_fd, 0)  # bytes still to come back
    out: dict[int, memoryview] = {}  # bytes still to send
    started: dict[int, float] = {}
    sizes: dict[int, int] = {}
    latencies: list[float] = []
    burst_latencies: list[float] = []
    t0 = time.monotonic()
    end = t0 + seconds
    timers = [(t0 + rng.uniform(0, interval), fd) for fd in by_fd]
    heapq.heapify(timers)
    buf = bytearray(BURST)
    skipped = 0
    while True:
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, fd = heapq.heappop(timers)
            if now < end:
                heapq.heappush(timers, (now + interval, fd))
            if expect[fd]:
                skipped += 1  # the last message is not back yet: this one is not sent
                continue
            size = BURST if rng.random() < burst_share else SMALL
            expect[fd], started[fd], sizes[fd] = size, now, size
            _send(by_fd[fd], fd, PAYLOAD[:size], out, ep)
        if now >= end and not any(expect.values()):
            break
        if now >= end + 30:
            print(json.dumps({"error": "echoes missing 30 s after the end"}), flush=True)
            return 1
        wait = max(0.0, min(timers[0][0] - now, 0.05) if timers else 0.05)
        for fd, mask in ep.poll(wait):
            sock = by_fd[fd]
            if mask & select.EPOLLOUT and fd in out:
                _send(sock, fd, out.pop(fd), out, ep)
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                while True:
                    try:
                        got = sock.recv_into(buf)
                    except BlockingIOError:
                        break
                    if not got:
                        raise ConnectionError("the server closed a connection")
                    expect[fd] -= got
                    if expect[fd] <= 0:
                        expect[fd] = 0
                        lat = time.monotonic() - started[fd]
                        (burst_latencies if sizes[fd] > SMALL else latencies).append(lat)
                        break
    for s in socks:
        s.close()
    print(
        json.dumps(
            {"latencies": latencies + burst_latencies, "small": latencies, "skipped": skipped}
        ),
        flush=True,
    )
    return 0


def _send(
    sock: socket.socket, fd: int, data: memoryview, out: dict[int, memoryview], ep: select.epoll
) -> None:
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        out[fd] = data[sent:]
        ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
    else:
        ep.modify(fd, select.EPOLLIN)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
