"""HTTP keep-alive ``GET /test``: the epoll Reactor vs the io_uring Proactor (and nginx), with wrk.

Server pinned to CPU 0, ``wrk -t1`` pinned to CPU 1; engines alternate inside each round (the
order flips every round). For each run: requests/s, the server's CPU per request (user and
system, from ``/proc/<pid>/stat``; on 2 cores wrk saturates its own core, so CPU per request is
the figure that compares servers), p99 latency and peak RSS (``VmHWM``). With ``--syscalls`` a
second short run per engine counts the server's system calls with
``perf stat -e raw_syscalls:sys_enter`` (a tracepoint counter: it does not slow the server the
way strace does) and, with ``--strace``, prints ``strace -c -f`` tables for the breakdown.

    python bench/bench_uring.py --rounds 3 --duration 3 --conns 100,1000 --syscalls

An engine written ``NAME@base`` runs the installed package found in ``--baseline DIR`` (put first
on ``PYTHONPATH``; e.g. ``pip install --no-deps --target DIR`` of an earlier tree), so a change
and the code before it alternate in the same rounds:

    python bench/bench_uring.py --engines epoll,uring,uring@base --baseline /tmp/base-site

After each table: the per-round ratios of CPU per request against the first engine, median
(min-max) over the rounds (a round's servers run back to back, so they share its noise).

The server side (run by the bench itself): ``python bench/bench_uring.py --serve ENGINE PORT``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _serverproc import cpu_split, wait_listening

CLK_TCK = os.sysconf("SC_CLK_TCK")
BASELINE = [""]  # --baseline: where NAME@base engines import poolalloc from
NGINX_CONF = """
worker_processes 1; worker_rlimit_nofile 20000; daemon off; master_process off;
error_log /dev/null; pid {tmp}/nginx.pid;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "Hello, World!"; }} }} }}
"""


def serve(engine: str, port: int) -> None:
    """The server process: the full HTTP server on the chosen engine."""
    from poolalloc.net.http.serve import build_server, make_loop

    loop = make_loop(engine)
    server = build_server(loop, "127.0.0.1", port, buffer_size=16384, buffer_capacity=4096)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    server.start()
    print("ready", type(loop).__name__, flush=True)
    try:
        loop.run()
    finally:
        server.close()
        loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(engine: str, port: int, tmp: str) -> subprocess.Popen[bytes]:
    engine, _, base = engine.partition("@")
    env = dict(os.environ)
    if base:
        env["PYTHONPATH"] = BASELINE[0]
    if engine == "nginx":
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port))
        cmd = ["taskset", "-c", "0", "nginx", "-c", conf, "-e", "/dev/null"]
    else:
        cmd = ["taskset", "-c", "0", sys.executable, __file__, "--serve", engine, str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    return wait_listening(proc, port, engine)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM")))


def wrk(port: int, conns: int, seconds: float) -> tuple[int, float, float]:
    """(requests, requests/s, p99 ms) of one wrk run pinned to CPU 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s",
         "--latency", f"http://127.0.0.1:{port}/test"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}", file=sys.stderr)
    return total, rps, p99_ms


def one_run(engine: str, conns: int, seconds: float, tmp: str) -> dict[str, float]:
    port = free_port()
    proc = start_server(engine, port, tmp)
    try:
        wrk(port, conns, 1)  # warm-up: connections, pools, caches
        u0, s0 = cpu_split(proc.pid)
        total, rps, p99 = wrk(port, conns, seconds)
        u1, s1 = cpu_split(proc.pid)
        rss = peak_rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    if not total:
        raise RuntimeError(f"{engine}: no request completed at c={conns}")
    per_req = 1e6 / CLK_TCK / total
    return {"rps": rps, "user_us": (u1 - u0) * per_req, "sys_us": (s1 - s0) * per_req,
            "p99_ms": p99, "rss_mib": rss / 1024}  # fmt: skip


def syscall_run(engine: str, conns: int, seconds: float, tmp: str, use_strace: bool) -> str:
    port = free_port()
    proc = start_server(engine, port, tmp)
    try:
        wrk(port, conns, 1)
        tool = (["strace", "-c", "-f", "-p", str(proc.pid)] if use_strace else
                ["perf", "stat", "-e", "raw_syscalls:sys_enter", "-p", str(proc.pid)])  # fmt: skip
        tracer = subprocess.Popen(tool, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        total, _, _ = wrk(port, conns, seconds)
        tracer.send_signal(signal.SIGINT)
        report = tracer.communicate(timeout=30)[1]
    finally:
        proc.terminate()
        proc.wait(10)
    if use_strace:
        return f"strace -c -f, {engine}, c={conns}, {total} requests:\n{report}"
    count = int(re.search(r"([\d,]+)\s+raw_syscalls:sys_enter", report).group(1).replace(",", ""))  # type: ignore[union-attr]
    return f"{engine:6} c={conns:5}: {count / total:.3f} syscalls/request ({count} / {total})"


def summarize(name: str, runs: list[dict[str, float]]) -> str:
    def cell(key: str, fmt: str) -> str:
        vals = [r[key] for r in runs]
        return f"{statistics.median(vals):{fmt}} ({min(vals):{fmt}}-{max(vals):{fmt}})"

    return (f"| {name} | {cell('rps', '.0f')} | {cell('user_us', '.1f')} | {cell('sys_us', '.1f')}"
            f" | {statistics.median(r['user_us'] + r['sys_us'] for r in runs):.1f}"
            f" | {cell('p99_ms', '.2f')} | {max(r['rss_mib'] for r in runs):.1f} |")  # fmt: skip


def ratios(engines: list[str], results: dict[str, list[dict[str, float]]]) -> str:
    """Per-round CPU-per-request ratios of each engine to the first, median (min-max)."""

    def cpu(r: dict[str, float]) -> float:
        return r["user_us"] + r["sys_us"]

    first, lines = engines[0], []
    for engine in engines[1:]:
        rs = [cpu(a) / cpu(b) for a, b in zip(results[engine], results[first], strict=True)]
        lines.append(
            f"{engine} / {first}: {statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"
        )
    return "\n".join(lines)


def raise_fd_limit() -> None:
    """c=10000 needs more descriptors than the default soft limit (the hard limit is 20000)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    raise_fd_limit()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", nargs=2, metavar=("ENGINE", "PORT"))
    ap.add_argument("--engines", default="epoll,uring,nginx")
    ap.add_argument("--conns", default="100,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--syscalls", action="store_true", help="count syscalls per request (perf)")
    ap.add_argument("--strace", action="store_true", help="print strace -c tables as well")
    ap.add_argument("--baseline", help="site directory the NAME@base engines import from")
    args = ap.parse_args()
    if args.baseline:
        BASELINE[0] = os.path.abspath(args.baseline)
    elif "@base" in args.engines:
        ap.error("an engine NAME@base needs --baseline DIR")
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for conns in (int(c) for c in args.conns.split(",")):
            results: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
            for rnd in range(args.rounds):
                order = engines if rnd % 2 == 0 else engines[::-1]
                for engine in order:
                    r = one_run(engine, conns, args.duration, tmp)
                    results[engine].append(r)
                    print(f"  round {rnd} c={conns} {engine}: {r}", file=sys.stderr)
            print(f"\nc={conns}, {args.rounds} rounds x {args.duration}s, median (min-max)")
            print(
                "| server | req/s | user us/req | sys us/req | CPU us/req | p99 ms | peak RSS MiB |"
            )
            print("|---|---|---|---|---|---|---|")
            for engine in engines:
                print(summarize(engine, results[engine]))
            print(ratios(engines, results))
            if args.syscalls:
                for engine in engines:
                    print(syscall_run(engine, conns, min(args.duration, 2.0), tmp, False))
            if args.strace:
                for engine in engines:
                    print(syscall_run(engine, conns, 1.0, tmp, True))


if __name__ == "__main__":
    main()
