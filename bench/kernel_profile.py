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

``--relay KIB`` profiles the workload suite's relay instead (``bench/relay_loops.py``'s code,
one engine per process, ``--mib`` MiB relayed after a 64 MiB warm-up), in ns per MiB:

    python bench/kernel_profile.py --relay 64 --mib 1024 --rounds 3

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
import sys
import tempfile
import time

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


def relay_child(engine: str, chunk: int, mib: int) -> None:
    """The relaying process of ``--relay``: warm up, say "go", relay, say the CPU per GiB."""
    from poolalloc.cli.workloads._common import GIB, KIB, MIB, child
    from poolalloc.cli.workloads._loops import relay

    with child("_peer", "source", "sink") as peer:
        src, sink = (int(p) for p in peer.ready)
        relay(engine, src, sink, 64 * MIB, chunk * KIB)
        print("go", flush=True)
        input()  # the profiler is attached
        c0 = time.thread_time()
        relay(engine, src, sink, mib * MIB, chunk * KIB)
        print((time.thread_time() - c0) / (mib * MIB / GIB), flush=True)


def relay_run(
    engine: str, chunk: int, mib: int, tmp: str
) -> tuple[dict[str, float], dict[str, float]]:
    """(ns per MiB by group, by kernel symbol) of one relay; the groups are scaled to the
    relaying thread's own CPU time (``thread_time``), the profile giving their shares."""
    proc = subprocess.Popen(
        ["taskset", "-c", "0,1", sys.executable, __file__, "--relay-child", engine, str(chunk),
         str(mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    data = os.path.join(tmp, "perf.data")
    try:
        if proc.stdout.readline().strip() != "go":
            raise RuntimeError(f"{engine} relay did not start")
        rec = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-t", str(proc.pid), "-o", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # perf attached
        proc.stdin.write("\n")
        proc.stdin.flush()
        per_mib = float(proc.stdout.readline()) / 1024
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    finally:
        proc.stdin.close()
        proc.wait(60)
    groups, symbols = profile(data)
    scale = per_mib * 1e9 / (sum(groups.values()) or 1.0)  # the thread's ns per MiB / sampled ns
    return ({g: ns * scale for g, ns in groups.items()},
            {s: ns * scale for s, ns in symbols.items()})  # fmt: skip


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--relay-child":
        relay_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="epoll,uring")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--baseline", default="", help="where NAME@base engines import poolalloc from")
    ap.add_argument("--top", type=int, default=8, help="kernel symbols listed per group")
    ap.add_argument("--relay", type=int, help="profile the relay at this read size (KiB)")
    ap.add_argument("--mib", type=int, default=1024, help="MiB per relay run")
    args = ap.parse_args()
    bench_uring.BASELINE[0] = args.baseline
    engines = args.engines.split(",")
    unit = "ns/MiB" if args.relay else "ns/request"
    groups: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    symbols: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for engine in engines if rnd % 2 == 0 else list(reversed(engines)):
                if args.relay:
                    g, s = relay_run(engine, args.relay, args.mib, tmp)
                else:
                    g, s = one_run(engine, args.conns, args.duration, tmp)
                groups[engine].append(g)
                symbols[engine].append(s)
                cells = ", ".join(f"{k} {v:.0f}" for k, v in g.items())
                print(f"  round {rnd} {engine}: {cells} {unit}", flush=True)

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    what = (f"relay, {args.relay} KiB reads, {args.mib} MiB" if args.relay
            else f"c={args.conns}, {args.duration:g} s")  # fmt: skip
    print(f"\n{what}, {args.rounds} rounds, {unit}, median (min-max) of the rounds")
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
            print(f"\n{e}, {group}: the top kernel symbols, {unit} (median)")
            for name in listed:
                print(f"  {med(symbols[e], name):7.1f}  {name}")


if __name__ == "__main__":
    main()
