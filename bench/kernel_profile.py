"""Where a hello-world request's CPU goes, by engine: user space, the engine's kernel machinery
(io_uring's submission and completion, or epoll and the system calls), the scheduler, and the
TCP/IP work every server pays.

Same server and client as ``bench/bench_uring.py`` (server pinned to CPU 0, ``wrk -t1`` to CPU 1,
keep-alive ``GET /test``). During each measured wrk run, ``perf record`` samples the server
process (``cpu-clock``, kernel and user); each sample is put in a group by its symbol (the
groups are the name patterns below) and the groups are reported in ns per request. Engines
alternate inside each round; the table gives the median over the rounds. Needs perf with
``kernel.perf_event_paranoid`` <= 1 or root, and wrk.

    python bench/kernel_profile.py --engines epoll,uring --rounds 3 --duration 3 --conns 100

An engine written ``NAME@base`` runs the package found in ``--baseline DIR``, as in
``bench_uring.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile

import bench_uring
from bench_uring import free_port, start_server, wrk

# Kernel symbols by group, first match wins; anything else in the kernel is "TCP/IP, rest".
GROUPS = [
    ("io_uring", re.compile(
        r"^(__)?io_|io_uring|^llist_|^fget|^fput|^xa_load|^import_ubuf|^tctx_|task_work"
    )),
    ("epoll, system calls", re.compile(
        r"^ep_|epoll|^__x64_sys|^__sys_|^do_syscall|^entry_SYSCALL|^syscall_|^fdget|"
        r"^__fdget|^sock_poll|^tcp_poll|exit_to_user_mode|^__se_sys|^__do_sys"
    )),
    ("scheduler, idle", re.compile(r"^(__)?schedule|^finish_task_switch|^pick_next|^dequeue_|"
                                   r"^enqueue_|^update_curr|^psi_|^__switch_to|^switch_mm")),
]  # fmt: skip
USER = "user space"
REST = "TCP/IP, rest"
ORDER = [USER, *(g for g, _ in GROUPS), REST]


def group_of(dso: str, sym: str) -> str:
    if dso != "[kernel.kallsyms]":
        return USER
    return next((g for g, pattern in GROUPS if pattern.search(sym)), REST)


def profile(data: str) -> tuple[dict[str, float], dict[str, float]]:
    """(ns by group, ns by kernel symbol) of one ``perf.data``, whole run."""
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--sort", "dso,sym", "-n", "--percent-limit",
         "0"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total_ns = float(re.search(r"Event count \(approx\.\): (\d+)", out).group(1))  # type: ignore[union-attr]
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3)))
    samples = sum(n for n, _, _ in rows) or 1
    groups = dict.fromkeys(ORDER, 0.0)
    symbols: dict[str, float] = {}
    for n, dso, sym in rows:
        ns = n * total_ns / samples
        groups[group_of(dso, sym)] += ns
        if dso == "[kernel.kallsyms]":
            symbols[sym] = symbols.get(sym, 0.0) + ns
    return groups, symbols


def one_run(
    engine: str, conns: int, seconds: float, tmp: str
) -> tuple[dict[str, float], dict[str, float]]:
    port = free_port()
    proc = start_server(engine, port, tmp)
    data = os.path.join(tmp, "perf.data")
    try:
        wrk(port, conns, 1)  # warm-up
        rec = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-p", str(proc.pid), "-o", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        total, _, _ = wrk(port, conns, seconds)
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    finally:
        proc.terminate()
        proc.wait(10)
    groups, symbols = profile(data)
    return ({g: ns / total for g, ns in groups.items()},
            {s: ns / total for s, ns in symbols.items()})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="epoll,uring")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--baseline", default="", help="where NAME@base engines import poolalloc from")
    ap.add_argument("--top", type=int, default=8, help="kernel symbols listed per group")
    args = ap.parse_args()
    bench_uring.BASELINE[0] = args.baseline
    engines = args.engines.split(",")
    groups: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    symbols: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for engine in engines if rnd % 2 == 0 else list(reversed(engines)):
                g, s = one_run(engine, args.conns, args.duration, tmp)
                groups[engine].append(g)
                symbols[engine].append(s)
                cells = ", ".join(f"{k} {v:.0f}" for k, v in g.items())
                print(f"  round {rnd} {engine}: {cells} ns/request", flush=True)

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    print(f"\nc={args.conns}, {args.rounds} rounds x {args.duration:g} s, ns per request, "
          "median (min-max) of the rounds")  # fmt: skip
    print("| group | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    for key in [*ORDER, "total"]:
        row = []
        for e in engines:
            vals = [sum(r.values()) if key == "total" else r[key] for r in groups[e]]
            row.append(f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})")
        print(f"| {key} | " + " | ".join(row) + " |")
    for e in engines:
        names = sorted({k for r in symbols[e] for k in r}, key=lambda k: -med(symbols[e], k))
        for group in ORDER[1:]:
            listed = [n for n in names if group_of("[kernel.kallsyms]", n) == group][: args.top]
            print(f"\n{e}, {group}: the top kernel symbols, ns per request (median)")
            for name in listed:
                print(f"  {med(symbols[e], name):7.1f}  {name}")


if __name__ == "__main__":
    main()
