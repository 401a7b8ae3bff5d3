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
    for limit in report["memlock limit"].values():  # bytes, or null for no limit
        assert limit is None or (isinstance(limit, int) and limit >= 0)
    assert report["build"]["compile args"][0] == "-std=c11", report["build"]
    classes = report["size classes"]
    assert classes["block bytes"][0] == 64  # numbers, not words
    assert classes["largest"] == classes["block bytes"][-1] == max(classes["block bytes"])
    assert classes["count"] == len(classes["block bytes"])
    uring = report["io_uring"]
    assert isinstance(uring["available"], bool)
    assert uring["serve --engine auto"]["engine"] in ("epoll", "uring")
    nodes = [v for k, v in report["NUMA"].items() if k.startswith("node ")]
    assert nodes
    assert all(v["memory bytes"] > 0 and isinstance(v["cpus"], int) for v in nodes)
    assert isinstance(report["huge pages"].get("choices", []), list)


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
        (["serve", "--port", "70000"], "port must be 0-65535"),
        (["serve", "--host", "not an address"], "argument --host: not an IP address or host"),
        (["serve", "--host", "::1::2"], "argument --host: not an IP address"),
        (["serve", "--root", "/no/such/dir"], "argument --root: /no/such/dir: no such directory"),
        (["serve", "--root", "/dev/null"], "argument --root: /dev/null is not a directory"),
        (["serve", "--uploads"], "--uploads needs --root DIR"),
        (["serve", "--workers", "0"], "argument --workers: must be 1-1024, got 0"),
        (["serve", "--workers", "two"], "argument --workers: not an integer: 'two'"),
        (["serve", "--buffer-size", "16"], "argument --buffer-size: must be 256-16777216 bytes"),
        (["serve", "--buffer-capacity", "0"], "argument --buffer-capacity: must be 1-1048576"),
        (["serve", "--max-connections", "-5"], "argument --max-connections: must be 1-"),
        (["serve", "--idle-timeout", "0"], "argument --idle-timeout: must be a number of seconds"),
        (
            ["serve", "--idle-timeout", "inf"],
            "argument --idle-timeout: must be a number of seconds",
        ),
        (
            ["serve", "--idle-timeout", "nan"],
            "argument --idle-timeout: must be a number of seconds",
        ),
        (["serve", "--idle-timeout", "soon"], "argument --idle-timeout: not a number: 'soon'"),
        (
            ["serve", "--body-timeout", "0"],
            "argument --body-timeout: must be a number of seconds above 0, got 0",
        ),
        (
            ["serve", "--graceful-timeout", "0"],
            "argument --graceful-timeout: must be a number of seconds above 0, got 0",
        ),
        (
            ["serve", "--app", "main:app", "--graceful-timeout", "nan"],
            "argument --graceful-timeout: must be a number of seconds above 0, got nan",
        ),
        (["serve", "--body-min-rate", "-1"], "argument --body-min-rate: must be 0-1099511627776"),
        (["serve", "--engine", "uring", "--fresh-bytearray"], "--fresh-bytearray works with"),
        (
            ["serve", "--app", "main:app", "--max-connections", "10", "--root", "."],
            "--app serves the application alone on asyncio: drop --root, --max-connections",
        ),
        (["serve", "--app", "main:app", "--engine", "uring"], "drop --engine"),
        (
            ["serve", "--app", "main:app", "--lifespan-timeout", "0"],
            "argument --lifespan-timeout: must be a number of seconds above 0, got 0",
        ),
        (
            ["serve", "--app", "main:app", "--lifespan-timeout", "later"],
            "argument --lifespan-timeout: not a number: 'later'",
        ),
        (["serve", "--lifespan-timeout", "5"], "--lifespan-timeout bounds an ASGI application"),
        (  # was ignored: the built-in server started, importing nothing from there
            ["serve", "--port", "0", "--app-dir", "/"],
            "--app-dir is where --app is imported from: it needs --app",
        ),
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


@pytest.mark.parametrize("workers", ["1", "3"])
def test_serve_on_a_busy_port_is_one_line(cli: Cli, workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = cli("serve", "--port", str(port), "--workers", workers, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (  # one line, from the parent, however many workers
        f"poolalloc: error: 127.0.0.1:{port} is already in use: stop the program listening "
        "there, or pick another port (0: any free port)\n"
    )


def test_serve_on_an_address_not_here_is_one_line(cli: Cli) -> None:
    done = cli("serve", "--host", "192.0.2.1", "--port", "0", timeout=60)  # TEST-NET-1: not ours
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr == (
        "poolalloc: error: 192.0.2.1:0 is not an address of this machine: give one of its "
        "addresses as --host (e.g. 127.0.0.1, 0.0.0.0, ::1 or ::)\n"
    )


def test_serve_help_defaults_are_the_servers_own() -> None:
    """The CLI states the servers' defaults without importing them (``poolalloc --help`` loads
    no server): the copies must say what the servers do."""
    from poolalloc.cli import commands
    from poolalloc.net.http.serve import GRACEFUL_TIMEOUT
    from poolalloc.net.http.server import BODY_MIN_RATE, BODY_TIMEOUT

    assert commands.HTTP_BODY_TIMEOUT == BODY_TIMEOUT
    assert commands.HTTP_BODY_MIN_RATE == BODY_MIN_RATE
    assert commands.GRACEFUL_TIMEOUT == GRACEFUL_TIMEOUT
