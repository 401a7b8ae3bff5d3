"""A file transfer server: uploads stream into files, downloads go out by sendfile.

The parts, each visible below: the epoll ``Reactor``; a ``BufferPool`` whose leases every read
lands in (an upload is written to disk straight from those buffers); an ``ObjectPool`` of
``Connection`` objects reused across clients; ``os.sendfile`` for downloads, so file bytes never
enter Python. ``PUT /name`` stores a file under ``--root`` (it appears under its name only when
complete), ``GET /name`` sends it back.

    python examples/file_server.py --root /tmp/files --port 8000     # until Ctrl-C
    curl -T big.iso http://127.0.0.1:8000/big.iso ; curl -O http://127.0.0.1:8000/big.iso
    python examples/file_server.py --once    # upload and download 8 MiB through it, check, exit
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import signal
import sys
import tempfile
import threading

import poolalloc
from poolalloc.net import Connection, HttpServer, Reactor, listen_socket


def build(reactor: Reactor, port: int, root: str) -> tuple[HttpServer, poolalloc.BufferPool]:
    buffers = poolalloc.BufferPool(65536, capacity=256, name="file-read")
    connections = poolalloc.ObjectPool(Connection, reset=Connection.reset, max_size=1024)
    server = HttpServer(
        reactor,
        buffer_pool=buffers,
        conn_pool=connections,
        root=root,
        uploads=True,
        max_upload=1 << 34,
        sock=listen_socket("127.0.0.1", port),
    )
    return server, buffers


def round_trip(port: int, size: int, result: dict[str, str]) -> None:
    """Upload ``size`` random bytes, download them, record whether they came back intact."""
    data = os.urandom(size)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("PUT", "/upload.bin", body=data)
        put = conn.getresponse()
        put.read()
        conn.request("GET", "/upload.bin")
        got = conn.getresponse()
        body = got.read()
        conn.close()
        same = hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        result["verdict"] = f"PUT {put.status}, GET {got.status}, {len(body)} bytes, intact: {same}"
        stored = put.status in (201, 204)  # created, or an existing file replaced
        result["ok"] = "yes" if stored and got.status == 200 and same else ""
    except OSError as exc:
        result["verdict"] = f"client failed: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="loopback port (0: any free port)")
    parser.add_argument("--root", help="directory of the files (default: a temporary one)")
    parser.add_argument("--once", action="store_true", help="one upload + download, then exit")
    parser.add_argument("--size", type=int, default=8 << 20, help="bytes sent by --once")
    args = parser.parse_args()
    if args.root:
        os.makedirs(args.root, exist_ok=True)  # the server refuses a root that does not exist

    with tempfile.TemporaryDirectory() as scratch:
        reactor = Reactor()
        server, buffers = build(reactor, args.port, args.root or scratch)
        for signum in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(signum, reactor.stop)
        server.start()
        host, port = server.address
        print(f"file server on http://{host}:{port}/ storing under {server.root}", flush=True)
        result: dict[str, str] = {}
        if args.once:
            client = threading.Thread(target=round_trip, args=(port, args.size, result))
            client.start()
            reactor.call_soon(_stop_when_done, reactor, client)
        try:
            reactor.run()
        finally:
            server.close()
            reactor.close()
        left = buffers.outstanding()
        buffers.close()
    if args.once:
        print(result.get("verdict", "no result"))
    print(f"buffers still leased: {left}")
    return 0 if left == 0 and (not args.once or result.get("ok")) else 1


def _stop_when_done(reactor: Reactor, client: threading.Thread) -> None:
    if client.is_alive():
        reactor.call_later(0.05, _stop_when_done, reactor, client)
    else:
        reactor.stop()


if __name__ == "__main__":
    sys.exit(main())
