"""Shared parts of the workload suite: summaries, ratios, /proc readings, child processes."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from poolalloc.cli._child import LoggedChild

HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
START_TIMEOUT = 30.0

Doc = dict[str, Any]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median with the min-max range of ``values``.

    Example:
        >>> summary([3.0, 1.0, 2.0])
        {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    if not values:
        raise ValueError("no samples to summarise")
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


@dataclass
class Metric:
    """One figure of a workload: its key in each row's samples, how to print it."""

    key: str
    label: str
    unit: str
    lower_is_better: bool


@dataclass
class Variant:
    """One way of doing the workload (the pooled one, or a baseline)."""

    name: str
    available: bool = True
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **figures: float) -> None:
        for key, value in figures.items():
            self.samples.setdefault(key, []).append(float(value))


@dataclass
class Goal:
    """A target ratio: metric of ``a`` over metric of ``b`` compared with ``target``."""

    text: str
    metric: str
    a: str
    b: str
    target: float
    at_most: bool  # True: ratio <= target is met; False: ratio >= target


def build_doc(  # noqa: PLR0917 (one call site per workload, all positional)
    name: str,
    title: str,
    params: Doc,
    metrics: list[Metric],
    variants: list[Variant],
    goals: list[Goal],
    pooled: str = "pooled",
) -> Doc:
    """The JSON document of one workload: summaries, ratios of ``pooled`` to every baseline,
    and the goals, all computed from the measured samples."""
    rows = []
    medians: dict[tuple[str, str], float] = {}
    for v in variants:
        row: Doc = {"variant": v.name, "available": v.available, "note": v.note}
        if v.available:
            row["summary"] = {k: summary(s) for k, s in v.samples.items() if s}
            row["samples"] = v.samples
            for k, s in row["summary"].items():
                medians[(v.name, k)] = s["median"]
        rows.append(row)
    ratios = []
    for m in metrics:
        a = medians.get((pooled, m.key))
        for v in variants:
            b = medians.get((v.name, m.key))
            if v.name == pooled or a is None or b is None or b == 0:
                continue
            ratios.append(
                {
                    "metric": m.key,
                    "a": pooled,
                    "b": v.name,
                    "a_value": a,
                    "b_value": b,
                    "ratio": a / b,
                }
            )
    goal_docs = []
    for g in goals:
        a, b = medians.get((g.a, g.metric)), medians.get((g.b, g.metric))
        ratio = a / b if a is not None and b else None
        met = None if ratio is None else (ratio <= g.target if g.at_most else ratio >= g.target)
        goal_docs.append(
            {
                "goal": g.text,
                "metric": g.metric,
                "a": g.a,
                "b": g.b,
                "target": g.target,
                "at_most": g.at_most,
                "ratio": ratio,
                "met": met,
            }
        )
    return {
        "name": name,
        "title": title,
        "params": params,
        "metrics": [m.__dict__ for m in metrics],
        "rows": rows,
        "ratios": ratios,
        "goals": goal_docs,
    }


# ---- readings of a process ----
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes, from /proc."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def proc_cpu(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    """CPU seconds (user + system) of this whole process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (at most the hard limit); return the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to(cpu: int) -> bool:
    """Pin this process to ``cpu`` (like ``taskset``) when the machine has it."""
    try:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2 or cpu not in allowed:
            return False
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return False
    return True


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class Child(LoggedChild):
    """A helper process: ``python -P -c 'from poolalloc.cli.workloads import MOD; MOD.main()'``.

    It prints one line, ``READY <words>``, once it can serve.
    """

    def __init__(self, module: str, *args: str) -> None:
        code = (
            "import sys; from poolalloc.cli.workloads import "
            f"{module} as m; sys.exit(m.main(sys.argv[1:]))"
        )
        cmd = [sys.executable, "-P", "-c", code, *args]
        super().__init__(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.ready: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[str]:
        import selectors  # noqa: PLC0415

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.stop()
                raise RuntimeError(f"a workload helper did not start in {timeout:g}s")
        raw = b""
        while not raw.endswith(b"\n") and (byte := os.read(self.proc.stdout.fileno(), 1)):
            raw += byte  # byte by byte: what follows the line stays in the pipe for result()
        line = raw.decode(errors="replace")
        if not line.startswith("READY"):
            self.stop()
            err = self.stderr
            raise RuntimeError(f"a workload helper failed to start: {err.strip()[-400:]}")
        self.ready = line.split()[1:]
        return self.ready

    def result(self, timeout: float) -> str:
        """Close its stdin (the signal to finish) and return what it printed after READY."""
        import selectors  # noqa: PLC0415

        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        chunks = []
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:  # read as it comes: a long answer must not fill the pipe and block
                left = deadline - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    self.proc.wait()
                    raise RuntimeError("a workload helper did not finish in time")
                if not sel.select(left):
                    continue
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                chunks.append(data)
        self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if self.proc.returncode != 0:
            raise RuntimeError(f"a workload helper failed: {self.stderr.strip()[-400:]}")
        return b"".join(chunks).decode()


@contextlib.contextmanager
def child(module: str, *args: str) -> Iterator[Child]:
    """A started helper process, stopped at the end."""
    c = Child(module, *args)
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def wait_stdin_closed() -> None:
    """Block until the parent closes our stdin (how a helper is told to finish)."""
    while sys.stdin.read(1):
        pass
