"""Server CPU per request: poolalloc's ASGI server vs uvicorn, pooled streams vs asyncio streams.

Each server runs pinned to CPU 0 (``taskset -c 0``) and its load to CPU 1; the server's CPU time
(user + system, all threads) comes from /proc/<pid>/stat before and after the load, divided by
the requests (or echoed messages) answered. Servers alternate round by round (A B A B...), and
the figures are medians with min-max over the rounds, plus the median ratio against the
baseline of the same run.

Suites:
* ``hello``: a raw ASGI hello world, poolalloc (``poolalloc serve --app``) vs uvicorn with
  uvloop and httptools (and granian, when installed, with ``--granian``);
* ``json``: a small Starlette JSON endpoint, the same two servers;
* ``echo``: an echo server on ``poolalloc.net.streams`` (``read_lease`` relayed to the writer)
  vs asyncio's streams (``read`` then ``write``), both on uvloop, driven by a Python client.

Usage: .venv/bin/python bench/bench_asgi.py [--suite hello,json,echo] [--rounds 5]
       [--duration 3] [--connections 50] [--granian [--granian-python VENV/bin/python]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _serverproc import cpu_split, wait_listening

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = sys.executable
GRANIAN_PY = PY  # --granian-python: granian may live in a venv of its own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def asgi_command(server: str, app: str, port: int) -> list[str]:
    if server == "poolalloc":
        return [PY, "-m", "poolalloc", "serve", "--app", app, "--app-dir", str(HERE),
                "--port", str(port)]  # fmt: skip
    if server == "uvicorn":
        return [PY, "-m", "uvicorn", app, "--app-dir", str(HERE), "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--lifespan", "off"]  # fmt: skip
    if server == "granian":  # in its own environment: --granian-python
        return [GRANIAN_PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--http", "1", "--no-ws",
                "--loop", "uvloop", "--log-level", "warning", "--no-access-log",
                "--working-dir", str(HERE), app]  # fmt: skip
    raise ValueError(server)


ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys, uvloop
    from poolalloc.net import streams

    kind, port = sys.argv[1], int(sys.argv[2])

    async def pooled(reader, writer):
        while (data := await reader.read_lease()) is not None:
            writer.write(data)
            await writer.drain()
        writer.close()

    async def plain(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        if kind == "pooled":
            server = await streams.start_server(pooled, "127.0.0.1", port)
        else:
            server = await asyncio.start_server(plain, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())
    """
)

ECHO_CLIENT = textwrap.dedent(
    """
    import socket, sys, time, selectors
    port, conns, size, duration = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   float(sys.argv[4]))
    msg = b"x" * size
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.send(msg)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [0])
    done = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for key, _ in sel.select(0.1):
            got = key.data
            data = key.fileobj.recv(65536)
            got[0] += len(data)
            while got[0] >= size:
                got[0] -= size
                done += 1
                key.fileobj.send(msg)
    print(done)
    """
)


def tree_cpu(root: int) -> int:
    """User + system clock ticks of ``root`` and every live descendant (granian forks workers)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    total = 0
    for pid in parent:
        p = pid
        while p in parent and p != root:
            p = parent[p]
        if p == root:
            with contextlib.suppress(OSError):
                total += sum(cpu_split(pid))
    return total


def measure(cmd: list[str], port: int, load: Any, duration: float) -> dict[str, float]:
    """Start ``cmd`` pinned to CPU 0, warm it up, then ``load(duration)`` and its CPU cost."""
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_listening(proc, port, cmd[0], within=20)  # type: ignore[arg-type]
        load(1.0)  # warm-up: imports, caches and pools settle
        t0 = tree_cpu(proc.pid)
        count = load(duration)
        t1 = tree_cpu(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    cpu = (t1 - t0) / CLK_TCK * 1e6 / max(count, 1)
    return {"count": count, "cpu_us": cpu}


def on_cpu1(cmd: list[str]) -> str:
    return subprocess.run(["taskset", "-c", "1", *cmd], capture_output=True, text=True,
                          check=True, timeout=120).stdout  # fmt: skip


def wrk(port: int, conns: int) -> Any:
    def load(duration: float) -> int:
        out = on_cpu1(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s",
                       f"http://127.0.0.1:{port}/test"])  # fmt: skip
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError("the server answered errors:\n" + out)
        found = re.search(r"(\d+) requests in", out)
        assert found is not None, out
        return int(found.group(1))

    return load


def echo_client(port: int, conns: int) -> Any:
    def load(duration: float) -> int:
        return int(on_cpu1([PY, "-c", ECHO_CLIENT, str(port), str(conns), "1024", str(duration)]))

    return load


def suite(name: str, servers: list[str], rounds: int, duration: float, conns: int) -> None:
    results: dict[str, list[dict[str, float]]] = {s: [] for s in servers}
    for r in range(rounds):
        for server in servers:
            port = free_port()
            if name == "echo":
                cmd = [PY, "-c", ECHO_SERVER, server, str(port)]
                load = echo_client(port, conns)
            else:
                app = "asgi_apps:hello" if name == "hello" else "asgi_apps:starlette_json"
                cmd = asgi_command(server, app, port)
                load = wrk(port, conns)
            res = measure(cmd, port, load, duration)
            results[server].append(res)
            print(f"  {name} round {r + 1} {server}: {res['count']} answered, "
                  f"{res['cpu_us']:.1f} us CPU each", flush=True)  # fmt: skip
    base = servers[-1]
    print(f"\n## {name}: server CPU per request (us), median (min-max) of {rounds} rounds")
    for server in servers:
        vals = [x["cpu_us"] for x in results[server]]
        ratios = [
            a["cpu_us"] / b["cpu_us"] for a, b in zip(results[server], results[base], strict=True)
        ]
        print(f"{server:10s} {statistics.median(vals):7.1f} ({min(vals):.1f}-{max(vals):.1f})"
              f"  ratio vs {base}: {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="hello,json,echo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--granian", action="store_true", help="also measure granian")
    parser.add_argument("--granian-python", default=PY, help="python that has granian")
    args = parser.parse_args()
    global GRANIAN_PY  # noqa: PLW0603 -- set once from the command line
    GRANIAN_PY = args.granian_python
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("needs wrk and taskset")
    for name in args.suite.split(","):
        if name == "echo":
            servers = ["pooled", "plain"]
        else:
            servers = ["poolalloc", *(["granian"] if args.granian else []), "uvicorn"]
        suite(name, servers, args.rounds, args.duration, args.connections)


if __name__ == "__main__":
    main()
