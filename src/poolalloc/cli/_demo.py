"""``poolalloc demo``: where pooling makes a difference, then a hello-world HTTP comparison.

The demo leads with short runs of two workloads of ``poolalloc bench workloads``: thousands of
connections held by servers (memory per connection) and frames handed to worker threads (the
buffer cannot be reused at once). It ends with the HTTP server under load, pooled and with a
fresh bytearray per read: a hello-world request is kernel-bound, so the two are close there.

The server runs as a child process (``python -m poolalloc serve``) so that the load generator
and the server do not share a GIL, the way a real client and server would not. The pool
figures come from the server itself: when it stops, after every connection is gone, it prints
its final metrics (the same numbers as its ``GET /metrics``). "Outstanding leases: 0" is the
server's own books at the end, not an estimate.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from poolalloc.cli._child import LoggedChild
from poolalloc.cli._progress import ProgressBar
from poolalloc.cli.loadgen import LoadResult, http_request, run_load

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
#: The flag of ``poolalloc serve`` that makes it allocate a fresh bytearray per read.
BASELINE_FLAG = "--fresh-bytearray"
#: The route the load asks for: a small fixed response, so the figures are the server's own cost.
PATH = "/test"


class DemoError(RuntimeError):
    """The demo could not run (the server did not start, or gave no metrics)."""


@dataclass
class RunReport:
    """One server under load: the client's figures and the server's pool metrics."""

    label: str
    load: LoadResult
    metrics: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess(LoggedChild):
    """``poolalloc serve`` on a free loopback port, as a child process."""

    def __init__(self, extra: list[str]) -> None:
        self.port = free_port()
        # -P: the current directory (a source checkout, under `make demo`) must not shadow
        # the installed package, whose compiled extensions the source tree does not have.
        cmd = [sys.executable, "-P", "-m", "poolalloc", "serve", "--host", HOST]
        cmd += ["--port", str(self.port), *extra]
        super().__init__(cmd, stdout=subprocess.DEVNULL)

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"the server exited at start: {self.last_words()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            time.sleep(0.05)
        raise DemoError(f"the server did not listen on {HOST}:{self.port} in {START_TIMEOUT:g}s")

    def final_metrics(self) -> dict[str, float]:
        """The metrics the server printed on its way out."""
        for line in reversed(self.stderr.splitlines()):
            _, marker, doc = line.partition(" final metrics ")
            if marker:
                return parse_metrics(doc.encode())
        raise DemoError(f"the server printed no final metrics: {self.last_words()}")


@contextlib.contextmanager
def running_server(extra: list[str]) -> Iterator[ServerProcess]:
    """Start ``poolalloc serve``, yield it once it listens, stop it at the end."""
    server = ServerProcess(extra)
    try:
        server.wait_until_listening()
        yield server
    finally:
        server.stop()


def parse_metrics(body: bytes) -> dict[str, float]:
    """Numbers from a JSON document (nested keys joined by dots) or Prometheus text.

    Example:
        >>> parse_metrics(b'{"pool": {"hits": 3}}')
        {'pool.hits': 3.0}
        >>> parse_metrics(b'# HELP x\\npa_leases_outstanding{pool="rx"} 0\\n')
        {'pa_leases_outstanding{pool="rx"}': 0.0}
    """
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return {
            name: float(value)
            for name, _, value in (line.rpartition(" ") for line in text.splitlines())
            if name and not name.startswith("#")
        }
    flat: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            flat[prefix] = float(node)

    walk("", doc)
    return flat


def pick(metrics: dict[str, float], name: str) -> float | None:
    """The buffer pool's metric ``name`` (``buffer_pool_<name>`` in the server's metrics)."""
    return metrics.get(f"buffer_pool_{name}")


def drive(
    label: str, extra: list[str], connections: int, requests: int, timeout: float
) -> RunReport:
    """One server, one load run, then the server's final metrics."""
    with running_server(extra) as server:
        bar = ProgressBar(f"{label:>16}")
        request = http_request(HOST, server.port, PATH)
        load = run_load(
            HOST, server.port, connections, requests, request=request, timeout=timeout, progress=bar
        )
        bar.finish(f"{load.requests_per_second:,.0f} req/s, {load.failed} failed")
    try:
        metrics = server.final_metrics()
    except DemoError as exc:
        metrics = {}
        load.errors.append(str(exc))
    return RunReport(label, load, metrics)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def hit_rate(metrics: dict[str, float]) -> float | None:
    """Share of the allocator's block requests served from its caches, without carving."""
    hits, misses = pick(metrics, "core_cache_hits"), pick(metrics, "core_cache_misses")
    if hits is None or misses is None or hits + misses == 0:
        return None
    return hits / (hits + misses)


def outstanding_leases(metrics: dict[str, float]) -> float | None:
    return pick(metrics, "outstanding")


def pool_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    rate = hit_rate(metrics)
    return [
        ("buffer pool hit rate", "-" if rate is None else f"{rate:.2%}"),
        ("bytes mapped (peak)", _mib(pick(metrics, "core_mapped_peak"))),
        ("high-water mark", _num(pick(metrics, "peak"), " leases")),
        ("leases taken", _num(pick(metrics, "acquires"))),
        ("outstanding leases", _num(outstanding_leases(metrics))),
    ]


def render(pooled: RunReport, baseline: RunReport | None, connections: int, requests: int) -> str:
    """The one screen of the demo."""
    runs = [pooled] if baseline is None else [pooled, baseline]
    rows: list[tuple[str, ...]] = [("", *(r.label for r in runs))]
    rows.append(("requests/s", *(f"{r.load.requests_per_second:,.0f}" for r in runs)))
    for pct in (50, 90, 99, 100):
        name = "latency max" if pct == 100 else f"latency p{pct}"
        rows.append((name, *(_ms(r.load.percentile(pct)) for r in runs)))
    rows.append(("failed requests", *(str(r.load.failed) for r in runs)))
    for name, value in pool_rows(pooled.metrics):
        rows.append((name, value, *(["-"] if baseline else [])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"poolalloc demo: {connections} connections x {requests} keep-alive requests, "
        f"HTTP/1.1 on {HOST}",
        "",
        *(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ),
    ]
    if baseline is not None and baseline.load.requests_per_second:
        ratio = pooled.load.requests_per_second / baseline.load.requests_per_second
        lines += [
            "",
            "Both runs are the same server code; only its read buffers differ (pooled leases,",
            "or a new bytearray per read).",
            "",
            f"pooled / fresh bytearray throughput: {ratio:.2f}x (one run each, "
            "client and server share this machine's cores)",
        ]
    return "\n".join(lines)


def verdict(pooled: RunReport, baseline: RunReport | None) -> list[str]:
    """Why the demo failed: one line per problem (empty when all went well)."""
    problems = [
        f"{r.label}: {r.load.failed} requests failed ({'; '.join(r.load.errors[:2])})"
        for r in (pooled, baseline)
        if r is not None and r.load.failed
    ]
    for run in (pooled, baseline):
        if run is None:
            continue
        left = outstanding_leases(run.metrics)
        if left is None:
            problems.append(f"{run.label}: the server reported no lease count: cannot check leaks")
        elif left:
            problems.append(f"{run.label}: {left:.0f} leases still outstanding after the run")
        # a lease dropped unreleased gives its block back, so `outstanding` is 0 all the same:
        # the books balance only with the garbage collector's help, which is a leak in the code
        collected = pick(run.metrics, "gc_returns")
        if collected:
            problems.append(
                f"{run.label}: {collected:.0f} leases garbage-collected without release() "
                "(run the server with POOLALLOC_LEAKS=all to see where they were acquired)"
            )
    return problems


#: The workloads the demo leads with (``poolalloc bench workloads`` runs all four).
DEMO_WORKLOADS = ["connections", "handoff"]
HELLO_TITLE = "hello world: kernel-bound, pooling can't help much"


def run_workload_part(size: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The short workload runs; their documents, and a problem line if one failed."""
    if size == "none":
        return [], []
    from poolalloc.cli import workloads  # noqa: PLC0415 (loads numpy and the net layer)

    print(
        "Where pooling makes a difference (short runs, ratios = pooled / that row; the full "
        "suite: poolalloc bench workloads)\n",
        flush=True,
    )
    try:
        docs = workloads.run_workloads(DEMO_WORKLOADS, size=size)
    except Exception as exc:
        return [], [f"workloads: {exc}"]
    return docs, []


def run_demo(
    connections: int,
    requests: int,
    *,
    timeout: float,
    baseline: bool,
    engine: str = "epoll",
    json_path: str | None = None,
    workloads_size: str = "demo",
) -> int:
    """Run the demo, print its screen; 0 when every request passed and no lease is left."""
    docs, workload_problems = run_workload_part(workloads_size)
    print(f"{HELLO_TITLE}\n", flush=True)
    label = "pooled" if engine == "epoll" else f"pooled ({engine})"
    pooled = drive(label, ["--engine", engine], connections, requests, timeout)
    fresh = (
        drive("fresh bytearray", [BASELINE_FLAG], connections, requests, timeout)
        if baseline
        else None
    )
    print(render(pooled, fresh, connections, requests))
    problems = workload_problems + verdict(pooled, fresh)
    if json_path:
        doc = {
            r.label: {
                "ok": r.load.ok,
                "failed": r.load.failed,
                "requests_per_second": r.load.requests_per_second,
                "latency_s": {f"p{p}": r.load.percentile(p) for p in (50, 90, 99, 100)},
                "metrics": r.metrics,
                "errors": r.load.errors,
            }
            for r in (pooled, fresh)
            if r is not None
        }
        doc["problems"] = problems  # type: ignore[assignment]
        doc["workloads"] = docs  # type: ignore[assignment]
        os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
        with open(json_path, "w") as out:
            json.dump(doc, out, indent=2)
    for line in problems:
        print(f"poolalloc demo: FAILED: {line}", file=sys.stderr)
    if not problems:
        print("\nresult: OK (every request answered, every lease returned)")
    return 1 if problems else 0
