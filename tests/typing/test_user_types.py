"""User code type-checks under ``mypy --strict`` against the installed package.

Two inputs: ``user_program.py`` beside this file (sockets, asyncio, numpy, ObjectPool and
BufferPool as a user writes them), checked for the oldest and newest supported Python (numpy's
stubs differ there), and the ```python blocks of every docs page, one module per page (the
blocks of a page run in one namespace, so they are checked as one program). mypy runs in a
scratch directory with no configuration file, so it sees what a user's project sees: the
installed package, its ``py.typed`` and its stubs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

pytestmark = pytest.mark.timeout(600)  # a cold mypy run over numpy's stubs takes a while


def _mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    return tmp_path


@pytest.mark.parametrize("version", ["3.11", "3.13"])
def test_user_program_type_checks(scratch: Path, version: str) -> None:
    shutil.copy(HERE / "user_program.py", scratch / "user_program.py")
    run = _mypy(scratch, "--python-version", version, "user_program.py")
    assert run.returncode == 0, run.stdout + run.stderr


def test_user_program_runs(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(HERE / "user_program.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"


def _doc_blocks() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "_doc_examples", ROOT / "tests" / "docs" / "test_doc_examples.py"
    )
    assert spec is not None
    assert spec.loader is not None
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    modules = {}
    for page in docs.PAGES:
        blocks = docs.python_blocks(page)
        if blocks:
            name = "_".join(page.relative_to(ROOT).with_suffix("").parts).replace("-", "_")
            modules[f"doc_{name}.py"] = "\n".join(code for _, code in blocks)
    return modules


def test_docs_examples_type_check(scratch: Path) -> None:
    modules = _doc_blocks()
    assert "doc_docs_index.py" in modules
    assert "doc_README.py" in modules
    for name, source in modules.items():
        (scratch / name).write_text(source)
    run = _mypy(scratch, *sorted(modules))
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_type_error_in_user_code_is_reported(scratch: Path) -> None:
    # The check can fail: a lease used as the wrong type is an error, not Any.
    (scratch / "bad.py").write_text(
        "import poolalloc\n"
        "from poolalloc.net.sockets import recv_into\n"
        "import socket\n"
        "def f(s: socket.socket, pool: poolalloc.BufferPool) -> str:\n"
        "    got = recv_into(s, pool)\n"
        "    assert got is not None\n"
        "    return got[0]\n"
    )
    run = _mypy(scratch, "bad.py")
    assert run.returncode == 1
    assert 'Incompatible return value type (got "Buffer", expected "str")' in run.stdout
