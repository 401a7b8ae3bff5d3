"""``poolalloc bench``: run the bench/ scripts, print ratio tables, write JSON and charts.

``bench/suites.py`` maps each suite to a ``run(quick: bool) -> dict`` (the interface is written
down in bench/README.md); this module only loads, reports and plots what they measured.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from poolalloc.cli import _demo
from poolalloc.cli.loadgen import http_request, run_load

SUITES = ["alloc", "objects", "net", "zerocopy"]

Result = dict[str, Any]


class BenchError(RuntimeError):
    """A bench script is missing or broke its interface."""


def load_suites(bench_dir: Path) -> dict[str, Any]:
    """The ``SUITES`` table of ``bench_dir/suites.py``, with bench_dir importable meanwhile."""
    path = bench_dir / "suites.py"
    spec = importlib.util.spec_from_file_location("_pa_bench_suites", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise BenchError(f"no {path}: run from a poolalloc clone or pass --bench-dir")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(bench_dir))  # the suites import the bench scripts beside them
    spec.loader.exec_module(module)
    suites = getattr(module, "SUITES", None)
    if not isinstance(suites, dict):
        raise BenchError(f"{path} has no SUITES table (see bench/README.md)")
    return suites


def check_rows(suite: str, result: Any) -> list[Result]:
    if not isinstance(result, dict) or not isinstance(result.get("results"), list):
        raise BenchError(f"suite {suite} must return a dict with a 'results' list")
    rows: list[Result] = result["results"]
    for row in rows:
        missing = {"case", "value", "baseline", "baseline_value", "ratio"} - set(row)
        if missing:
            raise BenchError(f"suite {suite}: a result lacks {sorted(missing)}")
    return rows


def table(suite: str, rows: list[Result]) -> str:
    """One suite's rows: case, poolalloc's figure, the baseline's, and the ratio with range.

    Example:
        >>> row = {"case": "4 KiB", "value": 1.0, "baseline": "bytearray",
        ...        "baseline_value": 2.0, "ratio": 2.0, "unit": "us"}
        >>> print(table("alloc", [row]))  # doctest: +NORMALIZE_WHITESPACE
        alloc    poolalloc   baseline          ratio
        4 KiB    1 us        2 us (bytearray)  2.00x
    """
    out = [(suite, "poolalloc", "baseline", "ratio")]
    for row in rows:
        unit = row.get("unit", "")
        spread = ""
        if "ratio_min" in row and "ratio_max" in row:
            spread = f" ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"
        out.append(
            (
                str(row["case"]),
                f"{row['value']:.4g} {unit}".strip(),
                f"{row['baseline_value']:.4g} {unit} ({row['baseline']})".replace("  ", " "),
                f"{row['ratio']:.2f}x{spread}",
            )
        )
    widths = [max(len(r[i]) for r in out) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in out
    )


def plot(results: dict[str, list[Result]], out_dir: Path) -> list[Path]:
    """One PNG per suite: each case's ratio (with its min-max range) against the line at 1x."""
    try:
        import matplotlib  # noqa: PLC0415 (optional: the bench extra)
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'poolalloc[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, rows in results.items():
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
        ratios = [row["ratio"] for row in rows]
        low = [row["ratio"] - row.get("ratio_min", row["ratio"]) for row in rows]
        high = [row.get("ratio_max", row["ratio"]) - row["ratio"] for row in rows]
        ax.barh([str(row["case"]) for row in rows], ratios, xerr=[low, high], color="#3b7dd8")
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xlabel("speed-up against the baseline measured in the same run (higher is better)")
        ax.set_title(f"poolalloc bench {suite}")
        ax.invert_yaxis()
        fig.tight_layout()
        path = out_dir / f"bench_{suite}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def profile(out_dir: Path) -> str:
    """Record a flame graph of ``poolalloc serve`` under the demo's load; say where or why not."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "profile: py-spy is not installed (pip install py-spy), no flame graph recorded"
    out_dir.mkdir(parents=True, exist_ok=True)
    svg = out_dir / "serve-flamegraph.svg"
    with _demo.running_server([]) as server:
        cmd = [spy, "record", "--pid", str(server.proc.pid), "--output", str(svg)]
        cmd += ["--format", "flamegraph", "--rate", "200", "--nonblocking"]
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        request = http_request(_demo.HOST, server.port, _demo.PATH)
        run_load(_demo.HOST, server.port, 200, 200, request=request, timeout=30)
        recorder.send_signal(2)  # SIGINT: py-spy writes the graph and exits
        _, err = recorder.communicate(timeout=30)
    if recorder.returncode != 0 or not svg.exists():
        return f"profile: py-spy failed: {err.decode(errors='replace').strip()[-300:]}"
    return f"profile: flame graph of the server under load written to {svg}"


def run_bench(
    suite: str,
    *,
    quick: bool,
    json_path: str | None,
    plot_dir: str | None,
    with_profile: bool,
    bench_dir: str,
) -> int:
    """Run one suite or all of them; print, save and plot what they measured."""
    base = Path(bench_dir)
    if not base.is_dir():
        raise BenchError(
            f"no {base}/ directory: run from a poolalloc clone or pass --bench-dir "
            "(`poolalloc bench workloads` needs neither)"
        )
    table_of = load_suites(base)
    names = SUITES if suite == "all" else [suite]
    present = [n for n in names if n in table_of]
    if not present:
        raise BenchError(f"{base}/suites.py has no suite {suite!r}")
    results: dict[str, list[Result]] = {}
    raw: dict[str, Any] = {}
    for i, name in enumerate(present):
        print(f"[{i + 1}/{len(present)}] {name}{' (quick)' if quick else ''} ...", flush=True)
        started = time.perf_counter()
        raw[name] = table_of[name](quick)
        results[name] = check_rows(name, raw[name])
        elapsed = time.perf_counter() - started
        print(f"{table(name, results[name])}\n({elapsed:.1f}s)\n", flush=True)
    for name in sorted(set(names) - set(present)):
        print(f"suite {name} is not in {base}/suites.py: skipped")
    if json_path:
        doc = {
            "command": " ".join(["poolalloc", *sys.argv[1:]]),
            "quick": quick,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "suites": raw,
        }
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(doc, indent=2, default=str))
        print(f"figures written to {json_path}")
    if plot_dir:
        for path in plot(results, Path(plot_dir)):
            print(f"chart written to {path}")
    if with_profile:
        print(profile(Path(plot_dir or ".")))
    return 0


def run_workload_suite(
    names: list[str] | None, *, size: str, json_path: str | None, plot_dir: str | None
) -> int:
    """``poolalloc bench workloads``: the suite shipped in the package (no bench/ needed)."""
    from poolalloc.cli import workloads  # noqa: PLC0415 (loads only for this command)

    command = " ".join(["poolalloc", *sys.argv[1:]])
    docs = workloads.run_workloads(names, size=size)
    if json_path:
        workloads.write_json(docs, json_path, command=command, size=size)
        print(f"figures written to {json_path}")
    if plot_dir:
        machine = workloads.machine()
        label = f"{command}  |  {machine['cpus']} CPUs, {machine['cpu_model']}"
        label += f", Python {machine['python']}"
        for path in workloads.plot(docs, plot_dir, command=label):
            print(f"chart written to {path}")
    return 0
