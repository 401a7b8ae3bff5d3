"""Each example runs briefly on loopback and reports success (exit status 0)."""

from __future__ import annotations

import http.client
import json
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


def test_numpy_frames_of_one_value(tmp_path: Path) -> None:
    # the marker and the frame number share the one value: the check refused such frames
    out = run_example(
        "numpy_frames.py", "--frames", "3", "--rows", "1", "--cols", "1", cwd=tmp_path
    )
    assert "3 frames of 1x1 float32" in out


def test_asyncio_echo_server(tmp_path: Path) -> None:
    out = run_example("asyncio_echo.py", "--once", cwd=tmp_path)
    assert "1000/1000 messages echoed intact" in out
    assert "buffers still leased: 0" in out


def test_file_server_upload_and_download(tmp_path: Path) -> None:
    out = run_example(
        "file_server.py", "--once", "--port", "0", "--size", str(3 << 20), cwd=tmp_path
    )
    assert f"PUT 201, GET 200, {3 << 20} bytes, intact: True" in out
    assert "buffers still leased: 0" in out


def test_file_server_creates_its_root(tmp_path: Path) -> None:
    # the docstring's `--root /tmp/files`: a missing directory answered every request 404
    root = tmp_path / "files"
    out = run_example(
        "file_server.py", "--once", "--port", "0", "--size", "1000", "--root", str(root),
        cwd=tmp_path,
    )  # fmt: skip
    assert "PUT 201, GET 200, 1000 bytes, intact: True" in out
    assert (root / "upload.bin").stat().st_size == 1000


def test_web_server_answers_then_stops(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "web_server.py"), "--port", "0", "--duration", "3"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "serving on http://127.0.0.1:PORT/"
        port = int(first.rsplit(":", 1)[1].strip("/\n"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/hello?name=test")
        assert conn.getresponse().read() == b"Hello, test!\n"
        conn.request("GET", "/stats")
        assert json.loads(conn.getresponse().read())["requests_total"] >= 0
        conn.close()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "buffers still leased: 0" in out
