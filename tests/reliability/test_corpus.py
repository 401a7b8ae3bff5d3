"""Replays the corpus of interesting inputs kept in ``corpus/`` (add a file to add a case).

``corpus/http/<expect>-<what>.http``: raw request bytes. ``<expect>`` is ``okN`` (N requests
served, no error) or a status, optionally followed by ``-okN`` (N requests served before the
error). Each is fed whole, one byte per read, and in 7-byte reads with backpressure.
``corpus/pools/<what>.json``: a pool program for poolprog.run_program.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from poolprog import run_program
from relkit import CORPUS, FakeApp, drive

from poolalloc import BufferPool

HTTP_CASES = sorted((CORPUS / "http").glob("*.http"))
POOL_CASES = sorted((CORPUS / "pools").glob("*.json"))


def expectation(path: Path) -> tuple[int, int | None]:
    m = re.match(r"(?:ok(\d+)|(\d{3})(?:-ok(\d+))?)-", path.name)
    assert m, f"corpus file name does not say what to expect: {path.name}"
    if m.group(1):
        return int(m.group(1)), None
    return int(m.group(3) or 0), int(m.group(2))


def test_corpus_is_not_empty() -> None:
    assert len(HTTP_CASES) >= 30
    assert len(POOL_CASES) >= 8


def replay_http(path: Path, read_size: int) -> None:
    served, status = expectation(path)
    data = path.read_bytes()
    size = read_size or len(data)
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    app = FakeApp()
    with BufferPool(2048, capacity=8) as pool:
        drive(pieces, app, pool, pause_every=read_size % 3)
        assert pool.outstanding() == 0
    assert len(app.finished) == served
    assert app.errors == ([] if status is None else [status])


def failures(cases: list[tuple[str, Callable[[], None]]]) -> list[str]:
    """Run every case; one test per corpus (the test-wide teardown costs more than a case)."""
    failed = []
    for name, case in cases:
        try:
            case()
        except AssertionError as exc:
            failed.append(f"{name}: {exc!r}")
    return failed


def test_http_corpus() -> None:
    cases = [
        (f"{path.name} in reads of {size or 'all'}", partial(replay_http, path, size))
        for path in HTTP_CASES
        for size in (0, 1, 7)
    ]
    assert failures(cases) == []


def test_pool_corpus() -> None:
    cases = [(p.name, partial(run_program, json.loads(p.read_text()))) for p in POOL_CASES]
    assert failures(cases) == []
