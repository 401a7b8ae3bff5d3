"""HTTP/1.1 keep-alive `GET /test`: poolalloc's server against baselines, measured with wrk.

Each measurement starts a fresh server pinned to CPU 0 (taskset), runs
``wrk -t1 -c<C> -d<D>s --latency`` pinned to CPU 1, and reads the server's utime+stime from
/proc/<pid>/stat before and after (CPU microseconds per request) and VmHWM (peak RSS) at the
end. Servers and connection counts alternate inside each round; the report gives the median
and min-max over rounds. Run from the repository root with the package installed:

    .venv/bin/python bench/bench_http.py --rounds 3 --duration 3 --conns 100,1000

Servers: poolalloc (the full server), bare (a bare epoll loop: the floor for pure Python),
asyncio (Protocol), uvloop (Protocol), uvloop-buffered (BufferedProtocol), nginx (return 200).
``poolalloc-base`` is the same server imported from the copy of an older installed package named
by ``--base-pythonpath`` (a before/after comparison inside one run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _serverproc import cpu_split, wait_listening

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVERS: dict[str, list[str]] = {
    "poolalloc": [PY, f"{HERE}/servers/poolalloc_http.py"],
    "bare": [PY, f"{HERE}/servers/bare_epoll.py"],
    "asyncio": [PY, f"{HERE}/servers/aio_http.py", "--loop", "asyncio"],
    "uvloop": [PY, f"{HERE}/servers/aio_http.py", "--loop", "uvloop"],
    "uvloop-buffered": [
        PY, f"{HERE}/servers/aio_http.py", "--loop", "uvloop", "--style", "buffered"
    ],
    "nginx": [],
}  # fmt: skip
#: Set from --base-pythonpath: where "poolalloc-base" imports poolalloc from.
OPTIONS = {"base_pythonpath": ""}


def start_server(name: str, port: int, tmp: str) -> subprocess.Popen[bytes]:
    if name == "nginx":
        with open(f"{HERE}/servers/nginx.conf") as f:
            conf = f.read().replace("PORT", str(port))
        os.makedirs(f"{tmp}/tmp", exist_ok=True)
        with open(f"{tmp}/nginx.conf", "w") as f:
            f.write(conf)
        cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf"]
    elif name == "poolalloc-base":
        env = f"PYTHONPATH={OPTIONS['base_pythonpath']}"
        cmd = ["env", env, *SERVERS["poolalloc"], "--port", str(port)]
    else:
        cmd = [*SERVERS[name], "--port", str(port)]
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stderr=subprocess.DEVNULL)
    return wait_listening(proc, port, name, within=15)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) if m else 0


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        return float("nan")  # wrk prints e.g. "-nan" when a run got no responses
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def run_wrk(port: int, conns: int, duration: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/test"],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_line = re.search(r"99%\s+(\S+)", out)
    p99 = to_ms(p99_line.group(1)) if p99_line else float("nan")
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": reqs,
        "rps": rps,
        "p99_ms": p99,
        "errors": (errors.group(1) if errors else "")
        + (f" non2xx {non2xx.group(1)}" if non2xx else ""),
    }


def measure(name: str, conns: int, duration: float, port: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(name, port, tmp)
        try:
            pid = _server_pid(proc)
            time.sleep(0.3)
            u0, s0 = cpu_split(pid)
            result = run_wrk(port, conns, duration)
            u1, s1 = cpu_split(pid)
            result["rss_mib"] = peak_rss_kib(pid) / 1024
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    n = max(result["requests"], 1)
    result["user_us"] = (u1 - u0) / CLK_TCK * 1e6 / n
    result["sys_us"] = (s1 - s0) / CLK_TCK * 1e6 / n
    result["cpu_us"] = result["user_us"] + result["sys_us"]
    return result


def _server_pid(proc: subprocess.Popen[bytes]) -> int:
    """taskset execs the server, so the pid is the server's own."""
    return proc.pid


def summarize(runs: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in runs]
    fmt = "{:.0f}" if key == "rps" else "{:.2f}"
    med = fmt.format(statistics.median(vals))
    return f"{med} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--conns", default="100,1000")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--json", default=None, help="also write raw results here")
    parser.add_argument("--base-pythonpath", default="", help="for the poolalloc-base server")
    args = parser.parse_args()
    OPTIONS["base_pythonpath"] = args.base_pythonpath
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # wrk -c10000 needs it
    servers = args.servers.split(",")
    conns_list = [int(c) for c in args.conns.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    port = args.port
    for rnd in range(args.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]  # alternate A/B order per round
        for conns in conns_list:
            for name in order:
                port += 1  # a fresh port: no TIME_WAIT clash with the last server
                r = measure(name, conns, args.duration, port)
                results.setdefault(f"{name} c={conns}", []).append(r)
                print(f"round {rnd} {name:16} c={conns:<5} {r['rps']:9.0f} req/s "
                      f"p99 {r['p99_ms']:7.2f} ms  cpu {r['cpu_us']:5.2f} us/req "
                      f"(user {r['user_us']:.2f})  rss {r['rss_mib']:.1f} MiB {r['errors']}",
                      flush=True)  # fmt: skip
    print("\n| server | c | req/s median (min-max) | p99 ms | CPU us/req | user us/req |", end="")
    print(" peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        name, c = key.split(" c=")
        print(f"| {name} | {c} | {summarize(runs, 'rps')} | {summarize(runs, 'p99_ms')} | "
              f"{summarize(runs, 'cpu_us')} | {summarize(runs, 'user_us')} | "
              f"{summarize(runs, 'rss_mib')} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
