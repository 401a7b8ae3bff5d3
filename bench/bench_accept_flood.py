"""A flood of short connections against the epoll server: how long the loop is held.

``ab -n 50000 -c 1000`` (no keep-alive) keeps the listen backlog full. Meanwhile one keep-alive
client sends ``GET /test`` every 10 ms for ``--duration`` seconds and records its worst round
trip: while the server's accept loop runs, nothing else on the loop does. Then the server gets
SIGTERM and the time to exit is taken. Two servers alternate, one fresh process each round:

* ``batch``: ``poolalloc serve --engine epoll`` as shipped (at most ``accept_batch`` = 64
  connections accepted per loop pass);
* ``drain``: the same with ``TcpServer.accept_batch`` set to 10**9, which accepts until
  ``EAGAIN`` in one pass (the behaviour before the bound).

The report gives, per server, the median and min-max over rounds, and the ratio of the medians
(drain / batch). Run from the repository root with the package installed and ``ab`` on PATH:

    .venv/bin/python bench/bench_accept_flood.py --rounds 3

Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

SERVER = (
    "import sys; import poolalloc.net.epoll.server as s;"
    " s.TcpServer.accept_batch = int(sys.argv[1]);"
    " from poolalloc.cli.commands import main; sys.exit(main(sys.argv[2:]))"
)
REQUEST = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(batch: int, duration: float) -> dict[str, float]:
    """One fresh server under one flood: the probe's worst round trip and the SIGTERM exit."""
    port = free_port()
    args = ["serve", "--engine", "epoll", "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(batch), *args], stderr=subprocess.DEVNULL
    )
    flood = None
    try:
        end = time.monotonic() + 20
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/test"
        flood = subprocess.Popen(
            ["ab", "-q", "-n", "50000", "-c", "1000", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # the backlog fills
        worst = 0.0
        stop = time.monotonic() + duration
        while time.monotonic() < stop:
            start = time.monotonic()
            probe.sendall(REQUEST)
            got = b""
            while not got.endswith(b"Hello, World!"):
                chunk = probe.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the probe")
                got += chunk
            worst = max(worst, time.monotonic() - start)
            time.sleep(0.01)
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        exit_s = time.monotonic() - start
        probe.close()
        return {"worst_s": worst, "sigterm_exit_s": exit_s}
    finally:
        if flood is not None:
            flood.kill()
            flood.wait()
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> None:
    """Alternate the two servers ``--rounds`` times and print the report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    opts = parser.parse_args()
    if shutil.which("ab") is None:
        sys.exit("ab (apache2-utils) is needed")
    runs: dict[str, list[dict[str, float]]] = {"batch": [], "drain": []}
    for _ in range(opts.rounds):
        runs["batch"].append(one_run(64, opts.duration))
        runs["drain"].append(one_run(10**9, opts.duration))
    report: dict[str, object] = {}
    for name, rows in runs.items():
        for key in ("worst_s", "sigterm_exit_s"):
            values = [row[key] for row in rows]
            report[f"{name}_{key}"] = {
                "median": round(statistics.median(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
            }
    for key in ("worst_s", "sigterm_exit_s"):
        a = report[f"drain_{key}"]["median"]  # type: ignore[index]
        b = report[f"batch_{key}"]["median"]  # type: ignore[index]
        report[f"ratio_{key}_drain_over_batch"] = round(a / b, 1) if b else None
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
