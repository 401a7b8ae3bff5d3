"""Soak: the HTTP server under wrk at high concurrency with connections reset at random.

Starts ``poolalloc serve`` (epoll or io_uring) in a child process on 127.0.0.1, runs wrk against
``GET /test`` with ``--connections`` open connections for ``--seconds``, and alongside it a
resetter: threads that open connections, send part or all of a request, and close with
``SO_LINGER 0`` so the server sees a TCP RST. The server's RSS is sampled every second from
``/proc``. At the end it reads ``GET /metrics``: every buffer lease must be back
once the connections are gone (``buffer_pool_outstanding 1``: the read buffer of the
``/metrics`` request itself, the one connection left). Writes a JSON summary and, with
matplotlib, an RSS-over-time PNG.

Usage:
    python bench/soak.py --seconds 180 --connections 1000 --engine epoll \
        --png docs/soak_rss.png --json docs/soak.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def metrics(port: int) -> dict[str, float]:
    body = get(port, "/metrics").split(b"\r\n\r\n", 1)[1].decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix("poolalloc_")] = float(value)
    return out


def resetter(port: int, stop: threading.Event, counts: dict[str, int], seed: int) -> None:
    """Open, maybe send part of a request, maybe read, then RST (SO_LINGER 0)."""
    rng = random.Random(seed)
    linger = struct.pack("ii", 1, 0)
    request = b"GET /test HTTP/1.1\r\nHost: soak\r\n\r\n"
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            counts["connect_failed"] += 1
            time.sleep(0.01)
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            mode = rng.randrange(3)
            if mode:  # 1: half a request, 2: a whole one and perhaps read the answer
                s.sendall(request[: rng.randrange(1, len(request))] if mode == 1 else request)
            if mode == 2 and rng.random() < 0.5:
                s.recv(4096)
        except OSError:
            pass
        s.close()  # RST
        counts["resets"] += 1
        time.sleep(rng.uniform(0, 0.005))


def parse_wrk(text: str) -> dict[str, object]:
    out: dict[str, object] = {"raw": text}
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["requests_per_s"] = float(m.group(1))
    errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if m := re.search(errors, text):
        out["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx"] = int(m.group(1))
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    raise_fd_limit()
    port = free_port()
    prefix = [sys.executable]
    if args.memray:  # the server runs under memray's tracker; --memray names the capture file
        prefix += ["-m", "memray", "run", "--force", "-o", str(Path(args.memray).resolve()), "-m"]
    else:
        prefix += ["-m"]
    server = subprocess.Popen(
        [*prefix, "poolalloc.cli", "serve", "--port", str(port), "--engine", args.engine],
        stderr=subprocess.PIPE, text=True, cwd="/",  # not the source tree: the installed package
    )  # fmt: skip
    assert server.stderr is not None
    while "listening on" not in (line := server.stderr.readline()):  # memray prints first
        print(line.strip(), file=sys.stderr)
    print(line.strip(), file=sys.stderr)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    counts = {"resets": 0, "connect_failed": 0}
    resetters = [
        threading.Thread(target=resetter, args=(port, stop, counts, i), daemon=True)
        for i in range(args.resetters)
    ]
    start = time.monotonic()
    wrk = subprocess.Popen(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.seconds}s",
         "--timeout", "10s", f"http://127.0.0.1:{port}/test"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    for t in resetters:
        t.start()
    while wrk.poll() is None:
        samples.append((time.monotonic() - start, rss_kib(server.pid)))
        time.sleep(1.0)
    stop.set()
    wrk_out = wrk.communicate()[0]
    for t in resetters:
        t.join(10)
    time.sleep(2.0)  # let the server see every close
    final = metrics(port)
    samples.append((time.monotonic() - start, rss_kib(server.pid)))
    server.terminate()
    server.wait(10)
    return {"args": vars(args), "wrk": parse_wrk(wrk_out), "resetter": counts,
            "metrics_at_end": final, "rss_kib": samples}  # fmt: skip


def plot(result: dict[str, object], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["rss_kib"]
    assert isinstance(samples, list)
    xs = [t for t, _ in samples]
    ys = [kib / 1024 for _, kib in samples]
    a = result["args"]
    assert isinstance(a, dict)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(xs, ys, lw=1.2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_ylim(0, max(ys) * 1.2)
    ax.set_title(
        f"poolalloc serve ({a['engine']}), wrk c={a['connections']} + random RSTs, {a['seconds']} s"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def heap_summary(capture: str) -> dict[str, float]:
    """Heap size (memray's snapshots: bytes allocated and not freed) over the run."""
    import memray

    snaps = list(memray.FileReader(capture).get_memory_snapshots())
    heap = [snap.heap / 2**20 for snap in snaps]
    warm = heap[len(heap) // 4 :]
    return {
        "snapshots": len(heap), "first": heap[0], "max": max(heap),
        "after_warmup_min": min(warm), "after_warmup_max": max(warm), "last": heap[-1],
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=120)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--resetters", type=int, default=4, help="threads opening and RSTing")
    p.add_argument("--engine", choices=("epoll", "uring", "auto"), default="epoll")
    p.add_argument("--png", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--memray", default=None, help="run the server under memray, capture here")
    args = p.parse_args()
    result = run(args)
    summary = {k: v for k, v in result.items() if k != "rss_kib"}
    wrk = dict(result["wrk"])  # type: ignore[call-overload]
    wrk.pop("raw", None)
    summary["wrk"] = wrk
    rss = [kib for _, kib in result["rss_kib"]]  # type: ignore[union-attr]
    warm = rss[len(rss) // 4 :]
    summary["rss_mib"] = {
        "first": rss[0] / 1024, "max": max(rss) / 1024,
        "after_warmup_min": min(warm) / 1024, "after_warmup_max": max(warm) / 1024,
        "last": rss[-1] / 1024,
    }  # fmt: skip
    print(json.dumps(summary, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    if args.png:
        plot(result, args.png)
    if args.memray:
        summary["memray_heap_mib"] = heap_summary(args.memray)
        print(json.dumps(summary["memray_heap_mib"], indent=2))
    end = result["metrics_at_end"]
    assert isinstance(end, dict)
    # The /metrics request itself is the one connection left, and its read buffer the one lease
    # out while the answer is built: anything beyond that is a lost lease.
    # io_uring: the provided-buffer ring keeps leases staged in the kernel for the next receives
    # (up to half the pool's capacity, poolalloc/net/_uring_bufs.py); /metrics does not show the
    # ring's fill, so only that bound can be checked from outside.
    if args.engine != "epoll":
        return 0 if end["buffer_pool_outstanding"] <= end["buffer_pool_capacity"] // 2 + 1 else 1
    return 0 if end["buffer_pool_outstanding"] == end["connections_active"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
