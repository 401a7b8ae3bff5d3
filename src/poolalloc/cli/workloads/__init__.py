"""``poolalloc bench workloads``: the workloads where pooled buffers make a difference.

Four workloads, each measured in one run against the code a user would otherwise write, the
variants alternating (A B A B), figures as medians with their min-max range:

1. bulk relay: a TCP relay moving bytes through Python in big reads (CPU per GiB, GiB/s);
2. many connections: echo servers holding thousands of mostly idle connections (memory per
   connection, p99 latency);
3. hand-off: frames handed to worker threads that keep them until processed (frames/s, CPU
   per frame, p99 latency);
4. churn: mixed message sizes with the GC and the allocator busy (p99 and p99.9 latency).

Everything needed ships in the package (no ``bench/`` directory); uvloop is optional (its rows
say "not installed" without it) and matplotlib is needed only for ``--plot``.

Example:
    >>> [w.name for w in WORKLOADS]
    ['relay', 'connections', 'handoff', 'churn']
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolalloc.cli.workloads import _churn, _conns, _handoff, _relay
from poolalloc.cli.workloads._report import plot, render

__all__ = [
    "SIZES",
    "WORKLOADS",
    "Workload",
    "machine",
    "plot",
    "render",
    "run_workloads",
    "write_json",
]

Doc = dict[str, Any]

#: How long a run is: ``full`` (the published figures), ``quick`` (under two minutes in all),
#: ``tiny`` (seconds: tests) and ``demo`` (what ``poolalloc demo`` shows).
SIZES = ("full", "quick", "tiny", "demo")


@dataclass(frozen=True)
class Workload:
    """One workload: its name, what it shows, and how to run it at each size.

    Example:
        >>> WORKLOADS[3].summary
        'tail latency under churn: p99, p99.9'
    """

    name: str
    summary: str
    run: Callable[[str], list[Doc]]


def _relay_run(size: str) -> list[Doc]:
    scale = {"tiny": 1 / 16, "demo": 1 / 4}.get(size, 1.0)
    return _relay.run(quick=size != "full", scale=scale)


def _conns_run(size: str) -> list[Doc]:
    if size == "tiny":
        return _conns.run(
            quick=True,
            connections=40,
            seconds=1.0,
            servers=["pooled", "pooled io_uring", "asyncio Protocol", "uvloop Protocol"],
        )
    if size == "demo":
        return _conns.run(
            quick=True,
            connections=1000,
            seconds=3.0,
            servers=["pooled", "asyncio Protocol", "uvloop Protocol", "uvloop BufferedProtocol"],
        )
    return _conns.run(quick=size == "quick")


def _handoff_run(size: str) -> list[Doc]:
    if size in ("tiny", "demo"):
        return _handoff.run(quick=True, scale=0.05 if size == "tiny" else 0.5, mixed=False)
    return _handoff.run(quick=size == "quick")


def _churn_run(size: str) -> list[Doc]:
    return _churn.run(quick=size != "full", scale={"tiny": 0.05, "demo": 0.2}.get(size, 1.0))


WORKLOADS = [
    Workload("relay", "bulk relay: CPU per GiB and GiB/s", _relay_run),
    Workload("connections", "many connections: memory per connection, p99 latency", _conns_run),
    Workload("handoff", "hand-off to worker threads: frames/s, CPU per frame, p99", _handoff_run),
    Workload("churn", "tail latency under churn: p99, p99.9", _churn_run),
]


def machine() -> dict[str, Any]:
    """What the figures were measured on.

    Example:
        >>> machine()["cpus"] >= 1
        True
    """
    import os  # noqa: PLC0415

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 1,
        "cpu_model": model,
    }


def run_workloads(
    names: Sequence[str] | None = None,
    *,
    size: str = "quick",
    out: Callable[[str], None] = print,
) -> list[Doc]:
    """Run the workloads named (all by default) at ``size``; print each table as it is done.

    Example:
        >>> docs = run_workloads(["churn"], size="tiny", out=lambda line: None)
        >>> doc = docs[0]
        >>> sorted(r["variant"] for r in doc["rows"])
        ['fresh bytearray', 'pooled']
        >>> ratio = doc["ratios"][0]
        >>> abs(ratio["a_value"] / ratio["b_value"] - ratio["ratio"]) < 1e-9
        True

    :raises ValueError: an unknown workload or size.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    known = {w.name: w for w in WORKLOADS}
    chosen = list(names) if names else list(known)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"no workload {unknown[0]!r} (there are: {', '.join(known)})")
    docs: list[Doc] = []
    for i, name in enumerate(chosen):
        w = known[name]
        out(f"[{i + 1}/{len(chosen)}] {w.summary} ({size}) ...")
        started = time.perf_counter()
        for doc in w.run(size):
            doc["workload"] = name
            doc["seconds"] = time.perf_counter() - started
            docs.append(doc)
            out(render(doc))
        out(f"({time.perf_counter() - started:.1f}s)\n")
    return docs


def write_json(docs: list[Doc], path: str | Path, *, command: str, size: str) -> None:
    """Save every measured figure, the command and the machine to ``path``.

    Example:
        >>> import tempfile, os, json
        >>> p = os.path.join(tempfile.mkdtemp(), "w.json")
        >>> write_json([], p, command="poolalloc bench workloads", size="quick")
        >>> json.load(open(p))["size"]
        'quick'
    """
    doc = {"command": command, "size": size, "machine": machine(), "workloads": docs}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2))
