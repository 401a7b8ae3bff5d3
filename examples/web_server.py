"""A fast HTTP/1.1 web server on the epoll Reactor, with pooled read buffers.

Every read lands in a lease from one BufferPool; responses go out with gathered writes
(``sendmsg``) and files with ``sendfile``, so request and file bytes are never copied into
Python objects on the way. Routes are plain functions from a request to a response.

    python examples/web_server.py --port 8080                 # until Ctrl-C
    python examples/web_server.py --port 8080 --duration 5    # stop after 5 seconds
    curl http://127.0.0.1:8080/ 'http://127.0.0.1:8080/hello?name=you' http://127.0.0.1:8080/stats
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import poolalloc
from poolalloc.net import HttpServer, Reactor, Request, Response, listen_socket


def build(reactor: Reactor, port: int, root: str | None) -> tuple[HttpServer, poolalloc.BufferPool]:
    """The server and its read-buffer pool (16 KiB buffers, at most 512 out at once)."""
    pool = poolalloc.BufferPool(16384, capacity=512, name="web-read")
    server = HttpServer(reactor, buffer_pool=pool, root=root, sock=listen_socket("127.0.0.1", port))

    def index(req: Request) -> Response:
        return Response(body=b"<h1>poolalloc web server</h1>\n", content_type="text/html")

    def hello(req: Request) -> Response:
        name = req.query.partition("name=")[2] or "world"
        return Response(body=f"Hello, {name}!\n".encode())

    def stats(req: Request) -> Response:
        return Response(body=json.dumps(server.metrics()).encode(), content_type="application/json")

    for path, handler in (("/", index), ("/hello", hello), ("/stats", stats)):
        server.route(path, handler)
    return server, pool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="loopback port (0: any free port)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--root", help="also serve the files under this directory")
    args = parser.parse_args()

    reactor = Reactor()
    server, pool = build(reactor, args.port, args.root)
    for signum in (signal.SIGINT, signal.SIGTERM):
        reactor.add_signal_handler(signum, reactor.stop)
    if args.duration is not None:
        reactor.call_later(args.duration, reactor.stop)
    server.start()
    host, port = server.address
    print(f"serving on http://{host}:{port}/", flush=True)
    try:
        reactor.run()
    finally:
        served = server.metrics()["requests_total"]
        server.close()
        reactor.close()
    left = pool.outstanding()
    print(f"served {served:.0f} requests; buffers still leased: {left}")
    pool.close()
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
