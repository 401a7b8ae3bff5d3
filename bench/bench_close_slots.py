"""Connection slots after ``Connection: close`` answers: ``poolalloc serve --max-connections 2``,
N clients one after another, each sends a ``Connection: close`` request, reads the answer to
the server's FIN and keeps its socket open; prints the seconds all N took.

Usage: python bench/bench_close_slots.py ENGINE N PORT   (ENGINE: epoll or uring)

A server that lingers for the client's FIN after every close holds each slot for its linger
time (2 s), so the N clients take about N - 2 seconds; one that closes at once takes
milliseconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time


def main() -> None:
    engine, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "a.txt"), "w") as f:
            f.write("hello\n")
        cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port)]
        cmd += ["--root", root, "--max-connections", "2", "--engine", engine]
        server = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        assert server.stderr is not None
        server.stderr.readline()  # "listening on"
        kept: list[socket.socket] = []
        try:
            started = time.monotonic()
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                kept.append(c)
                c.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while c.recv(65536):
                    pass
            print(f"{time.monotonic() - started:.3f}")
        finally:
            for c in kept:
                c.close()
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
