"""``poolalloc demo`` end to end, small: the real server, the real load generator, its books."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.net

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_small_demo_passes_with_no_outstanding_lease(cli: Cli, tmp_path: Path) -> None:
    done = cli(
        "demo", "--connections", "50", "--requests", "20", "--json", "demo.json",
        "--workloads", "tiny", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outstanding leases" in done.stdout
    assert "result: OK" in done.stdout
    # The workloads where pooling matters come first; the hello world last, labelled as such.
    out = done.stdout
    hello = out.index("hello world: kernel-bound, pooling can't help much")
    assert out.index("connections, a 64 B message every") < hello
    assert out.index("hand-off to 2 worker threads, 1 MiB frames") < hello
    assert hello < out.index("pooled / fresh bytearray throughput:")
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["problems"] == []
    assert [w["workload"] for w in doc["workloads"]] == ["connections", "handoff"]
    for w in doc["workloads"]:
        pooled_row = next(r for r in w["rows"] if r["variant"] == "pooled")
        for ratio in w["ratios"]:
            assert ratio["a_value"] == pooled_row["summary"][ratio["metric"]]["median"]
    for label in ("pooled", "fresh bytearray"):
        assert (doc[label]["ok"], doc[label]["failed"]) == (1000, 0)
        assert doc[label]["metrics"]["buffer_pool_outstanding"] == 0
    pooled = doc["pooled"]["metrics"]
    # Every request was read into a lease from the pool, and every lease came back.
    assert pooled["buffer_pool_acquires"] >= 1000
    assert pooled["buffer_pool_acquires"] == pooled["buffer_pool_releases"]
    assert pooled["buffer_pool_core_mapped_peak"] > 0
    assert doc["fresh bytearray"]["metrics"]["buffer_pool_acquires"] >= 1000


def test_demo_fails_when_requests_fail(cli: Cli) -> None:
    # A timeout far below one round trip of a loaded server: requests are counted as failed.
    done = cli(
        "demo", "--connections", "20", "--requests", "5", "--timeout", "0.000001", "--no-baseline",
        "--workloads", "none",
    )  # fmt: skip
    assert done.returncode == 1
    assert "poolalloc demo: FAILED: pooled:" in done.stderr
    assert "requests failed" in done.stderr


def test_demo_from_a_source_checkout(tmp_path: Path) -> None:
    # `make demo` runs the installed command from the repository root: the server it starts
    # must import the installed package, not the source tree (which has no compiled parts).
    script = Path(sys.executable).parent / "poolalloc"
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            str(script),
            "demo",
            "--connections",
            "10",
            "--requests",
            "5",
            "--no-baseline",
            "--workloads",
            "none",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_verdict_fails_on_leases_the_garbage_collector_returned() -> None:
    # outstanding is 0 once the collector brought a dropped lease back: the leak must still show
    from poolalloc.cli._demo import RunReport, verdict
    from poolalloc.cli.loadgen import LoadResult

    metrics = {"buffer_pool_outstanding": 0.0, "buffer_pool_gc_returns": 3.0}
    problems = verdict(RunReport("pooled", LoadResult(ok=1, failed=0, elapsed=1.0), metrics), None)
    assert len(problems) == 1
    assert "pooled: 3 leases garbage-collected without release()" in problems[0]
    assert "POOLALLOC_LEAKS=all" in problems[0]
    clean = {"buffer_pool_outstanding": 0.0, "buffer_pool_gc_returns": 0.0}
    assert verdict(RunReport("pooled", LoadResult(ok=1, failed=0, elapsed=1.0), clean), None) == []
