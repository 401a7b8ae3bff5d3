"""Every code example of the docs runs: the ```python blocks of the pages, and the doctests.

A page's blocks run in order in one fresh interpreter (a later block may use an earlier block's
names), in a scratch directory, against the installed package. A block opts out only with a
visible first line ``# doc: no-run (reason)``, e.g. a server that runs until interrupted.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from child_env import child_env

import poolalloc

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [*sorted([*DOCS.glob("*.md"), *DOCS.glob("guide/*.md")]), DOCS.parent / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)$")
NO_RUN = re.compile(r"^# doc: no-run \((?P<reason>[^)]+)\)")

# Runs the blocks sent on stdin; a traceback names the page and the block's first line.
HARNESS = """
import json, sys
namespace = {"__name__": "__main__"}
for where, code in json.load(sys.stdin):
    exec(compile(code, where, "exec"), namespace)
"""


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The ```python blocks of ``page`` as (first line number, source), dedented."""
    blocks: list[tuple[int, str]] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match["info"].strip().startswith("python"):
            i += 1
            continue
        indent, start, body = len(match["indent"]), i + 2, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        blocks.append((start, "\n".join(body) + "\n"))
        i += 1
    return blocks


def runnable(page: Path) -> list[tuple[str, str]]:
    """The blocks of ``page`` that run, as (where, source)."""
    rel = page.relative_to(DOCS.parent) if page.is_relative_to(DOCS.parent) else page
    return [(f"{rel}:{line}", code) for line, code in python_blocks(page) if not NO_RUN.match(code)]


def test_extraction_finds_blocks_and_opt_outs(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n"
        '!!! note\n    ```python title="server"\n    # doc: no-run (starts a server)\n'
        "    serve()\n    ```\n```sh\nls\n```\n"
    )
    assert python_blocks(page) == [
        (3, "x = 1\n"),
        (7, "# doc: no-run (starts a server)\nserve()\n"),
    ]
    assert [code for _, code in runnable(page)] == ["x = 1\n"]


def test_every_opt_out_gives_a_reason_and_stays_rare() -> None:
    blocks = [code for page in PAGES for _, code in python_blocks(page)]
    opted_out = [code for code in blocks if code.startswith("# doc: no-run")]
    assert all(NO_RUN.match(code) for code in opted_out), opted_out
    assert len(opted_out) * 5 <= len(blocks), "keep no-run blocks rare"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS.parent)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = runnable(page)
    if not blocks:
        return
    done = subprocess.run(
        [sys.executable, "-c", HARNESS],
        input=json.dumps(blocks),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def public_modules() -> list[ModuleType]:
    """poolalloc and every submodule whose dotted name has no ``_`` component."""
    names = ["poolalloc"] + [
        info.name
        for info in pkgutil.walk_packages(poolalloc.__path__, "poolalloc.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def public_names(module: ModuleType) -> list[str]:
    """``__all__``, or else the public classes and functions defined in the module itself."""
    if hasattr(module, "__all__"):
        return [name for name in module.__all__ if not name.startswith("__")]
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    ]


# Each module's doctests run in their own interpreter: a hung example fails by timeout alone.
DOCTEST = """
import doctest, importlib, sys
module = importlib.import_module(sys.argv[1])
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
result = doctest.testmod(module, optionflags=flags)
print(f"attempted={result.attempted} failed={result.failed}")
sys.exit(1 if result.failed else 0)
"""


@pytest.mark.parametrize("module", public_modules(), ids=lambda m: m.__name__)
def test_module_doctests_pass(module: ModuleType, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DOCTEST, module.__name__],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "attempted=0 " not in done.stdout, f"{module.__name__} has no docstring example"


PRIVATE_DOCTESTS = """
import doctest, importlib, pkgutil, poolalloc
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
failed = []
for info in pkgutil.walk_packages(poolalloc.__path__, "poolalloc."):
    parts = info.name.split(".")
    if any(p.startswith("_") for p in parts) and parts[-1] != "__main__":
        result = doctest.testmod(importlib.import_module(info.name), optionflags=flags)
        if result.failed:
            failed.append(info.name)
print("failed:", failed)
raise SystemExit(1 if failed else 0)
"""


def test_private_modules_doctests_pass(tmp_path: Path) -> None:
    # Not held to having examples, but the ones they have are run: two stale examples in a
    # private module once went unnoticed.
    done = subprocess.run(
        [sys.executable, "-c", PRIVATE_DOCTESTS],
        cwd=tmp_path,
        env=child_env(),  # the workload report imports matplotlib, C++ under test-asan
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def _ours(obj: object) -> bool:
    # A name re-exported from the standard library (``BufferLike`` is ``collections.abc.Buffer``
    # on 3.12+) carries that library's docstring, not one of ours.
    return str(getattr(obj, "__module__", "")).split(".")[0] == "poolalloc"


@pytest.mark.parametrize("module", public_modules(), ids=lambda m: m.__name__)
def test_every_public_name_has_an_example(module: ModuleType) -> None:
    missing = [
        name
        for name in public_names(module)
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isroutine(obj))
        and _ours(obj)
        and ">>>" not in (inspect.getdoc(obj) or "")
    ]
    assert not missing, f"{module.__name__}: no docstring example for {missing}"


def test_api_page_covers_every_public_module() -> None:
    page = (DOCS / "api.md").read_text()
    listed = set(re.findall(r"^::: ([\w.]+)$", page, flags=re.M))
    assert listed == {m.__name__ for m in public_modules()} - {"poolalloc"}
