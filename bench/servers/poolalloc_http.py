"""poolalloc's HTTP server for bench_http.py: the full server, one process, no extras."""

from __future__ import annotations

import argparse

from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http.serve import build_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--buffer-size", type=int, default=65536)
    args = parser.parse_args()
    reactor = Reactor()
    server = build_server(reactor, "127.0.0.1", args.port, buffer_size=args.buffer_size)
    server.start()
    reactor.run()


if __name__ == "__main__":
    main()
