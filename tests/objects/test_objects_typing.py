"""ObjectPool[T] type-checks under mypy --strict: run mypy's API on typing_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is a dev extra (installed by make test)")

HERE = Path(__file__).parent


def test_generic_pool_type_checks_under_strict_mypy(tmp_path: Path) -> None:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path),
            "--python-version",
            "3.11",
            str(HERE / "typing_check.py"),
        ]
    )
    assert status == 0, stdout + stderr
    assert "Success" in stdout
