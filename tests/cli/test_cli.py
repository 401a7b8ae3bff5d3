"""The ``poolalloc`` command: every section of info, --help with examples, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

#: The type of the ``cli`` fixture of tests/cli/conftest.py.
Cli = Callable[..., subprocess.CompletedProcess[str]]

COMMANDS = ["info", "demo", "bench", "selfcheck", "serve"]


def test_info_shows_every_section(cli: Cli, tmp_path: Path) -> None:
    done = cli("info")
    assert done.returncode == 0, done.stderr
    for heading in (
        "version:",
        "build:",
        "size classes:",
        "NUMA:",
        "io_uring:",
        "memlock limit:",
        "huge pages:",
    ):
        assert f"\n{heading}" in "\n" + done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_info_json_is_machine_readable(cli: Cli, tmp_path: Path) -> None:
    done = cli("info", "--json")
    report = json.loads(done.stdout)
    assert report["version"]["poolalloc"]
    assert set(report["memlock limit"]) == {"soft", "hard"}
    assert report["build"].get("compile args", "").startswith("-std=c11"), report["build"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_examples(command: str, cli: Cli, tmp_path: Path) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "examples:" in done.stdout
    assert f"poolalloc {command}" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "-1"], "port must be 0-65535"),
        (["demo", "--connections", "0"], "must be at least 1"),
        (["bench", "nonsense"], "invalid choice"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str, cli: Cli, tmp_path: Path) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("poolalloc: error: ")
    assert message in done.stderr


def test_runtime_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    done = cli("bench", "alloc", "--bench-dir", str(tmp_path / "missing"))
    assert done.returncode == 1
    missing = tmp_path / "missing"
    assert done.stderr == (
        f"poolalloc: error: no {missing}/ directory: "
        "run from a poolalloc clone or pass --bench-dir "
        "(`poolalloc bench workloads` needs neither)\n"
    )


BENCH_SCRIPT = """
def run_alloc(quick):
    assert quick is True
    return {"suite": "alloc", "command": "python bench/bench_alloc.py --quick", "results": [
        {"case": "acquire 4 KiB", "unit": "ns/op", "value": 100.0, "baseline": "bytearray",
         "baseline_value": 250.0, "ratio": 2.5, "ratio_min": 2.0, "ratio_max": 3.0}]}

SUITES = {"alloc": run_alloc}
"""


def test_bench_reports_writes_json_and_charts(cli: Cli, tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "suites.py").write_text(BENCH_SCRIPT)
    done = cli("bench", "all", "--quick", "--json", "out.json", "--plot", "charts")
    assert done.returncode == 0, done.stderr
    assert "2.50x (2.00-3.00)" in done.stdout
    assert "suite net is not in bench/suites.py: skipped" in done.stdout
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["quick"] is True
    assert doc["suites"]["alloc"]["results"][0]["ratio"] == 2.5
    assert (tmp_path / "charts" / "bench_alloc.png").read_bytes().startswith(b"\x89PNG")


def test_bench_rejects_a_script_breaking_the_interface(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "suites.py").write_text("SUITES = {'alloc': lambda quick: {}}\n")
    done = cli("bench", "alloc")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "poolalloc: error: suite alloc must return a dict with a 'results' list"
    )


def test_serve_on_a_busy_port_is_one_line(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = cli("serve", "--port", str(port), timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("poolalloc: error: ")
    assert done.stderr.count("\n") == 1
    assert f"127.0.0.1:{port} is already in use" in done.stderr
