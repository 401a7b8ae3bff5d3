"""``poolalloc bench workloads``, very small: the structure of its output, and that every
ratio and goal is computed from the figures measured in the same run (no timing asserted)."""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poolalloc.cli import workloads
from poolalloc.cli.workloads import _common, _conns

pytestmark = pytest.mark.net

Cli = Callable[..., subprocess.CompletedProcess[str]]


def check_doc(doc: dict[str, Any]) -> None:
    """Every summary is the median/min/max of its samples; every ratio pooled/baseline."""
    medians = {}
    for row in doc["rows"]:
        if not row["available"]:
            assert row["note"]
            continue
        for key, samples in row["samples"].items():
            s = row["summary"][key]
            assert s["median"] == pytest.approx(statistics.median(samples))
            assert (s["min"], s["max"], s["n"]) == (min(samples), max(samples), len(samples))
            assert s["min"] <= s["median"] <= s["max"]
            medians[row["variant"], key] = s["median"]
    keys = {m["key"] for m in doc["metrics"]}
    assert doc["ratios"], "no ratio computed"
    for r in doc["ratios"]:
        assert r["metric"] in keys
        assert r["a"] == "pooled"
        assert r["a_value"] == medians["pooled", r["metric"]]
        assert r["b_value"] == medians[r["b"], r["metric"]]
        assert r["ratio"] == pytest.approx(r["a_value"] / r["b_value"])
    for g in doc["goals"]:
        if (g["b"], g["metric"]) not in medians:
            assert g["ratio"] is None
            continue
        ratio = medians[g["a"], g["metric"]] / medians[g["b"], g["metric"]]
        assert g["ratio"] == pytest.approx(ratio)
        assert g["met"] == (ratio <= g["target"] if g["at_most"] else ratio >= g["target"])


def test_tiny_suite_from_an_install_writes_json_and_charts(cli: Cli, tmp_path: Path) -> None:
    # The Cli fixture runs in an empty directory: no bench/ folder, only the installed package.
    done = cli(
        "bench", "workloads", "--tiny", "--workload", "handoff", "--workload", "churn",
        "--workload", "relay", "--json", "w.json", "--plot", "img", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("bulk relay, 1 MiB reads", "hand-off to 2 worker threads", "churn: messages"):
        assert title in done.stdout
    assert "goal: relay CPU per GiB <= 1.5x the splice floor: " in done.stdout
    assert "goal: p99.9 latency under churn <= 0.7x fresh: " in done.stdout
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["size"] == "tiny"
    assert doc["command"].startswith("poolalloc bench workloads")
    assert doc["machine"]["cpus"] >= 1
    names = [d["name"] for d in doc["workloads"]]
    assert names == ["handoff_1mib", "churn", "relay_1mib"]
    for d in doc["workloads"]:
        check_doc(d)
        assert (tmp_path / "img" / f"workload_{d['name']}.png").stat().st_size > 1000
    relay = {r["variant"]: r for r in doc["workloads"][2]["rows"]}
    assert set(relay) >= {"pooled", "fresh bytes (recv)", "fresh bytearray", "reused bytearray"}
    assert {"asyncio streams", "splice (kernel floor)"} <= set(relay)
    assert {"epoll Reactor", "io_uring Proactor"} <= set(relay)
    assert relay["io_uring Proactor"]["available"], relay["io_uring Proactor"]["note"]


def test_connections_without_uvloop_say_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_conns, "has_uvloop", lambda: False)
    lines: list[str] = []
    docs = workloads.run_workloads(["connections"], size="tiny", out=lines.append)
    (doc,) = docs
    check_doc(doc)
    rows = {r["variant"]: r for r in doc["rows"]}
    assert rows["uvloop Protocol"]["available"] is False
    assert rows["uvloop Protocol"]["note"] == "not installed"
    assert rows["pooled"]["summary"]["kib_per_conn"]["n"] == 1
    assert rows["asyncio Protocol"]["available"]
    goals = {g["b"]: g for g in doc["goals"]}
    assert goals["uvloop Protocol"]["ratio"] is None
    assert goals["uvloop Protocol"]["met"] is None
    # the io_uring server ran beside the epoll one: its goal has a ratio
    assert rows["pooled io_uring"]["summary"]["kib_per_conn"]["n"] == 1
    assert goals["pooled"]["ratio"] is not None
    text = "\n".join(lines)
    assert "not installed" in text
    assert "not measured (uvloop Protocol did not run)" in text


def test_a_goal_between_servers_not_asked_for_is_left_out() -> None:
    """`poolalloc demo` runs the connections workload without its io_uring server and said
    "goal: io_uring memory per connection <= the epoll Reactor's: not measured (pooled io_uring
    did not run)": a goal nobody asked about, read as a failure to run."""
    (doc,) = _conns.run(
        quick=True, connections=20, seconds=0.5, servers=["pooled", "asyncio Protocol"]
    )
    check_doc(doc)
    assert doc["goals"] == []
    assert "goal:" not in workloads.render(doc)


def test_ratios_and_goals_follow_the_samples() -> None:
    a, b = _common.Variant("pooled"), _common.Variant("base")
    for x, y in ((1.0, 4.0), (3.0, 8.0), (2.0, 6.0)):
        a.add(t=x)
        b.add(t=y)
    metric = _common.Metric("t", "time", "s", True)
    goal = _common.Goal("half", "t", "pooled", "base", 0.5, True)
    doc = _common.build_doc("x", "x", {}, [metric], [a, b], [goal])
    check_doc(doc)
    assert doc["ratios"][0]["ratio"] == pytest.approx(2.0 / 6.0)
    assert doc["goals"][0]["met"] is True
    text = workloads.render(doc)
    assert "0.33x" in text
    assert "goal: half: 0.33x, met" in text


def test_a_goal_not_measured_names_the_variant_that_did_not_run() -> None:
    # `poolalloc demo` runs the connections workload without its io_uring server: the line
    # said "pooled did not run" beside pooled's own figures.
    pooled, base = _common.Variant("pooled"), _common.Variant("base")
    pooled.add(t=1.0)
    base.add(t=2.0)
    metric = _common.Metric("t", "time", "s", True)
    goals = [
        _common.Goal("other first", "t", "other", "pooled", 1.0, True),
        _common.Goal("other second", "t", "pooled", "other", 1.0, True),
    ]
    text = workloads.render(_common.build_doc("x", "x", {}, [metric], [pooled, base], goals))
    assert "goal: other first: not measured (other did not run)" in text
    assert "goal: other second: not measured (other did not run)" in text


def test_unknown_workload_is_a_clear_error(cli: Cli) -> None:
    with pytest.raises(ValueError, match="no workload 'nope'"):
        workloads.run_workloads(["nope"])
    done = cli("bench", "workloads", "--workload", "nope")
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr


def test_bench_without_a_clone_points_at_workloads(cli: Cli) -> None:
    done = cli("bench", "alloc", "--quick")
    assert done.returncode == 1
    assert "poolalloc bench workloads" in done.stderr
