"""Small requests while one client downloads a large file: latency of `GET /test`, both engines.

Each round starts a fresh server process per engine (epoll Reactor, io_uring Proactor; with
``--base-pythonpath`` also the same server imported from an older installed copy) serving a
directory that holds one large sparse file. Two measurements per server, alternating:

* ``idle``: a keep-alive client sends ``GET /test`` every ``--interval`` seconds for
  ``--duration`` seconds and records each round trip;
* ``download``: the same, while ``curl`` downloads the large file over and over as fast as it
  reads (it is a C client: "full speed" is the server's, not a Python reader's).

On the epoll engine the server also times each ``os.sendfile`` call: the longest call is how
long one download held the loop at a time, whatever the machine's load did to the probes.

The report gives, per server, the median over rounds of the probe's p50, p99 and max (with
min-max over rounds), the download throughput, and the ratio of the loaded p99 to the idle p99
of the same server in the same round. Run from the repository root with the package installed:

    .venv/bin/python bench/bench_fairness.py --rounds 3 --duration 3

Only 127.0.0.1 is used. The file is sparse (``--size`` GiB of holes), so nothing is written
to disk and the page cache serves zeros.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from _serverproc import wait_listening

HERE = os.path.abspath(__file__)
HEAD = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"
WARM = bytearray(1 << 20)


def serve(engine: str, port: int, root: str) -> None:
    """The server process: ``poolalloc serve``'s server on the chosen engine."""
    from poolalloc.net.http.serve import build_server

    loop: Any
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor

        loop = Proactor()
    else:
        from poolalloc.net.epoll.reactor import Reactor

        loop = Reactor()
    server = build_server(loop, "127.0.0.1", port, root=root)
    if engine == "epoll":
        _trace_sendfile(server)
    server.start()
    loop.run()


def _trace_sendfile(server: Any) -> None:
    """Time every ``os.sendfile`` call (the epoll engine's file path): the longest one is how
    long one download held the loop in a single call; ``GET /sendfile-stats`` reports it."""
    from poolalloc.net.http.server import Response

    real = os.sendfile
    worst = {"seconds": 0.0, "bytes": 0, "calls": 0}

    def timed(out_fd: int, in_fd: int, offset: Any, count: int) -> int:
        start = time.perf_counter()
        try:
            sent = real(out_fd, in_fd, offset, count)
        finally:
            worst["seconds"] = max(worst["seconds"], time.perf_counter() - start)
            worst["calls"] += 1
        worst["bytes"] = max(worst["bytes"], sent)
        return sent

    os.sendfile = timed  # type: ignore[assignment]
    server.route("/sendfile-stats", lambda req: Response(body=json.dumps(worst).encode()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_answer(sock: socket.socket) -> None:
    """Read one `GET /test` answer (13-byte body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)


def probe(port: int, duration: float, interval: float) -> list[float]:
    """Round-trip times (seconds) of `GET /test` on one keep-alive connection."""
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEAD)
        read_answer(sock)  # warm
        end = time.monotonic() + duration
        while time.monotonic() < end:
            start = time.perf_counter()
            sock.sendall(HEAD)
            read_answer(sock)
            times.append(time.perf_counter() - start)
            time.sleep(interval)
    return times


def downloader(port: int, stop: threading.Event, out: dict[str, float]) -> None:
    """curl the large file again and again until ``stop``; adds bytes and seconds to ``out``."""
    url = f"http://127.0.0.1:{port}/large.bin"
    while not stop.is_set():
        proc = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        size, seconds = proc.stdout.split()
        out["bytes"] += float(size)
        out["seconds"] += float(seconds)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(cmd: list[str], env: dict[str, str], args: argparse.Namespace, root: str) -> Any:
    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port), "--root", root], env=env)
    try:
        wait_listening(proc, port, " ".join(cmd))
        idle = probe(port, args.duration, args.interval)
        stop = threading.Event()
        dl = {"bytes": 0.0, "seconds": 0.0}
        thread = threading.Thread(target=downloader, args=(port, stop, dl), daemon=True)
        thread.start()
        time.sleep(0.2)  # the download is under way
        loaded = probe(port, args.duration, args.interval)
        stop.set()
        thread.join(120)
        traced = sendfile_stats(port)
    finally:
        proc.kill()
        proc.wait()
    return {
        "idle_p50": pct(idle, 0.5), "idle_p99": pct(idle, 0.99),
        "p50": pct(loaded, 0.5), "p99": pct(loaded, 0.99), "max": max(loaded),
        "probes": len(loaded), "gbps": dl["bytes"] / max(dl["seconds"], 1e-9) / 1e9,
        "sendfile_max_s": traced["seconds"], "sendfile_max_bytes": traced["bytes"],
    }  # fmt: skip


def sendfile_stats(port: int) -> dict[str, float]:
    """The epoll server's longest ``sendfile`` call (zeros for a server that does not trace)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /sendfile-stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return {"seconds": 0.0, "bytes": 0}
    return dict(json.loads(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    srv = sub.add_parser("serve")
    srv.add_argument("--engine", choices=("epoll", "uring"), default="epoll")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--root", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--size", type=float, default=2.0, help="GiB in the large file")
    parser.add_argument("--engines", default="epoll,uring")
    parser.add_argument("--base-pythonpath", help="an older installed copy to compare against")
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.engine, args.port, args.root)
        return
    if shutil.which("curl") is None:
        sys.exit("bench_fairness needs curl (the downloading client)")
    servers: dict[str, tuple[list[str], dict[str, str]]] = {}
    for engine in args.engines.split(","):
        cmd = [sys.executable, HERE, "serve", "--engine", engine]
        servers[engine] = (cmd, dict(os.environ))
        if args.base_pythonpath:
            env = dict(os.environ, PYTHONPATH=args.base_pythonpath)
            servers[f"{engine}-base"] = (cmd, env)
    results: dict[str, list[Any]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "large.bin"), "wb") as f:
            f.truncate(int(args.size * (1 << 30)))
        with open(os.path.join(root, "large.bin"), "rb") as f:
            # Read it once: the first server to send it would otherwise pay for filling the
            # page cache (seconds of system time), a handicap for whichever server goes first.
            while f.readinto(WARM):
                pass
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                cmd, env = servers[name]
                results[name].append(measure(cmd, env, args, root))
                print(name, json.dumps(results[name][-1]), flush=True)
    print(f"\n{args.rounds} rounds of {args.duration} s, probe every {args.interval * 1e3:g} ms")
    print("server        p50 ms            p99 ms              max ms              "
          "idle p99 ms   p99 loaded/idle   download GB/s     longest sendfile ms  MiB")  # fmt: skip

    def cell(name: str, key: str, scale: float = 1e3) -> str:
        vals = [row[key] * scale for row in results[name]]
        return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"

    for name, rows in results.items():
        ratio = statistics.median(row["p99"] / row["idle_p99"] for row in rows)
        print(
            f"{name:13} {cell(name, 'p50'):17} {cell(name, 'p99'):19} {cell(name, 'max'):19} "
            f"{cell(name, 'idle_p99'):13} {ratio:6.1f}           {cell(name, 'gbps', 1):17} "
            f"{cell(name, 'sendfile_max_s'):20} {cell(name, 'sendfile_max_bytes', 2**-20)}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
