"""The floor for a pure-Python server: an edge-triggered epoll loop, no pools, no HTTP.

Reads into one shared bytearray, answers each request head it counts with a canned
response, one ``send`` per read. Everything poolalloc's server adds (pooled leases, the
parser, keep-alive rules, timeouts, metrics) is measured against this.
"""

from __future__ import annotations

import argparse
import select
import socket

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\n\r\nHello, World!"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    lsock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN | select.EPOLLET)
    conns: dict[int, socket.socket] = {}
    buf = bytearray(65536)
    mask = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    lfd = lsock.fileno()
    while True:
        for fd, _ in ep.poll():
            if fd == lfd:
                while True:
                    try:
                        s, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[s.fileno()] = s
                    ep.register(s.fileno(), mask)
                continue
            s = conns[fd]
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                ep.unregister(fd)
                del conns[fd]
                s.close()
                continue
            s.send(RESPONSE * buf.count(b"\r\n\r\n", 0, n))


if __name__ == "__main__":
    main()
