"""The memray recipe of docs/guide/leaks.md runs as written and profiles the server process.

The page's ``sh`` block is run by bash (only the port is changed, to a free one), and the flame
graph it writes must show the pooled allocation site: the ``acquire()`` call, the lease layer
and the core's slab mapping. The old recipe traced the load generator instead, where none of
those frames exist.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "leaks.md"

pytestmark = [pytest.mark.net, pytest.mark.timeout(300)]


def recipe() -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", PAGE.read_text(), re.M | re.S)
    (block,) = [b for b in blocks if "memray run" in b]
    return block


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_recipe_traces_the_server_not_the_load_generator() -> None:
    block = recipe()
    assert "-m poolalloc serve" in block
    assert "-m poolalloc demo" not in block


def test_memray_recipe_draws_the_pooled_buffers(tmp_path: Path) -> None:
    script = recipe().replace("8080", str(free_port()))
    bindir = str(Path(sys.executable).parent)  # this venv's python and memray come first
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "final metrics" in run.stderr  # the server stopped cleanly, capture complete
    html = (tmp_path / "server.html").read_text()
    assert "pool.acquire()" in html
    for frame in ("lp_acquire", "native/lease/leasepool.c", "pa_alloc_batch", "pai_chunk_map"):
        assert frame in html, f"{frame} is not in the flame graph"
