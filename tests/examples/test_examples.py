"""Each example runs briefly on loopback and reports success (exit status 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.net


def run_example(name: str, *args: str, cwd: Path, timeout: float = 60) -> str:
    """Run ``examples/NAME ARGS`` to completion; return its stdout (fail on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_numpy_frames_read_in_place(tmp_path: Path) -> None:
    out = run_example("numpy_frames.py", "--frames", "40", "--rows", "64", cwd=tmp_path)
    assert "40 frames of 64x256 float32" in out
    assert "outstanding buffers: 0" in out


def test_asyncio_echo_server(tmp_path: Path) -> None:
    out = run_example("asyncio_echo.py", "--once", cwd=tmp_path)
    assert "1000/1000 messages echoed intact" in out
    assert "buffers still leased: 0" in out
