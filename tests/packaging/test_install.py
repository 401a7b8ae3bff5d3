"""Installing from source behaves the same on every machine (setup.py, native/ffi/build_check.py).

- No C compiler, or no Python headers: the build stops with one paragraph saying what to
  install, before any compiler output.
- A ``build/`` directory left by an earlier build (other flags, modules since removed) is never
  reused: setup.py builds in a fresh temporary directory.
- The wheel carries the licence, the classifiers, and the one version of ``_version.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import poolalloc

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "site", "*.egg-info", "__pycache__", "*.so", ".mypy_cache"
)


def _build_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_check", ROOT / "native/ffi/build_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pip_wheel(src: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(src)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, **env},
    )  # fmt: skip


def test_no_compiler_is_one_paragraph_saying_what_to_install() -> None:
    problem = _build_check().toolchain_problem(cc=["/nonexistent/cc"])
    assert problem is not None
    assert "\n" not in problem
    assert "no C compiler found" in problem
    assert "'/nonexistent/cc'" in problem
    assert "apt-get install gcc python3-dev" in problem


def test_missing_python_headers_are_named(tmp_path: Path) -> None:
    problem = _build_check().toolchain_problem(include_dir=str(tmp_path))
    assert problem is not None
    assert "\n" not in problem
    assert f"no Python.h in {tmp_path}" in problem
    assert "python3-dev" in problem


def test_a_compiler_that_fails_is_reported(tmp_path: Path) -> None:
    problem = _build_check().toolchain_problem(cc=["false"])
    assert problem is not None
    assert "could not compile a file that includes Python.h" in problem


def test_this_machine_can_build() -> None:
    assert _build_check().toolchain_problem() is None


def test_version_has_one_source() -> None:
    text = (ROOT / "src/poolalloc/_version.py").read_text()
    assert f'__version__ = "{poolalloc.__version__}"' in text
    assert importlib.metadata.version("poolalloc") == poolalloc.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("checkout") / "poolalloc"
    shutil.copytree(ROOT, src, ignore=SKIP)
    return src


def test_pip_without_a_compiler_stops_with_the_paragraph(source_copy: Path, tmp_path: Path) -> None:
    run = _pip_wheel(source_copy, tmp_path, CC="/nonexistent/cc")
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "poolalloc: cannot build: no C compiler found (looked for '/nonexistent/cc'" in out
    assert "apt-get install gcc python3-dev" in out
    assert not list(tmp_path.glob("*.whl"))


@pytest.mark.timeout(900)
def test_a_stale_build_directory_is_not_reused(source_copy: Path, tmp_path: Path) -> None:
    # What an earlier build could leave: a module the tree no longer has, and objects that
    # would break the link if they were reused (they are not object files at all).
    plat = f"linux-x86_64-cpython-{sys.version_info[0]}{sys.version_info[1]}"
    stale = source_copy / "build" / f"lib.{plat}" / "poolalloc"
    stale.mkdir(parents=True)
    (stale / "removed_module.py").write_text("raise ImportError('stale')\n")
    for obj in ("native/lease/lease.o", "native/lease/buffer.o"):
        junk = source_copy / "build" / f"temp.{plat}" / obj
        junk.parent.mkdir(parents=True, exist_ok=True)
        junk.write_bytes(b"not an object file")
    for path in (source_copy / "build").rglob("*"):
        os.utime(path, (2**31, 2**31))  # newer than every source: setuptools would skip them
    run = _pip_wheel(source_copy, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = tmp_path.glob("poolalloc-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert not [n for n in names if "removed_module" in n]
    assert any(n.startswith("poolalloc/_lease.") and n.endswith(".so") for n in names)
    assert any(n.startswith("poolalloc/net/uring/_fastpath.") and n.endswith(".so") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Version: {poolalloc.__version__}" in meta
    assert "License-Expression: MIT" in meta
    assert "Classifier: Topic :: System :: Networking" in meta
    assert "Classifier: Development Status :: 3 - Alpha" in meta


def _install_blocks() -> list[str]:
    text = (ROOT / "docs" / "index.md").read_text()
    section = text[text.index("## Install") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)


@pytest.mark.timeout(900)
def test_the_documented_install_from_a_clone_works(tmp_path: Path) -> None:
    clone_install, wheel_install = _install_blocks()
    assert clone_install in (ROOT / "README.md").read_text()  # the README says the same
    clone = tmp_path / "poolalloc"
    shutil.copytree(ROOT, clone, ignore=SKIP)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)  # the Python running the tests
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{bindir}:/usr/local/bin:/usr/bin:/bin"
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", clone_install],
        cwd=clone, env=env, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "selfcheck: ok" in run.stdout
    # The wheel route is what `make wheel-check` runs (in CI), command for command.
    makefile = (ROOT / "Makefile").read_text()
    commands = [line.split("#")[0].strip() for line in wheel_install.splitlines()]
    assert commands == ["make wheel", "pip install dist/poolalloc-*manylinux*.whl"]
    assert "\nwheel:" in makefile
    assert "dist/poolalloc-*manylinux*.whl" in makefile[makefile.index("\nwheel-check:") :]
