"""Old module paths keep working, with a DeprecationWarning that names the new one."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from poolalloc import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_path_gives_the_new_objects_and_warns(old: str) -> None:
    new = importlib.import_module(_moved.MOVED[old])
    alias = importlib.import_module(old)
    name = next(n for n in getattr(new, "__all__", dir(new)) if not n.startswith("_"))
    with pytest.warns(DeprecationWarning, match=_moved.MOVED[old].replace(".", r"\.")):
        value = getattr(alias, name)
    assert value is getattr(new, name)


def test_old_path_without_the_name_raises_attribute_error() -> None:
    alias = importlib.import_module("poolalloc.core")
    with pytest.raises(AttributeError):
        alias.no_such_name  # noqa: B018


def test_public_package_paths_still_import() -> None:
    from poolalloc.net import HttpServer, Reactor
    from poolalloc.net.http import HttpServer as Http2
    from poolalloc.net.uring import Proactor

    assert HttpServer is Http2
    assert issubclass(Proactor, Reactor)


def test_python_dash_m_from_the_repository_root() -> None:
    # The src layout: the checkout no longer shadows the installed package.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "poolalloc", "info", "--json"],
        cwd=root, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"poolalloc"' in done.stdout
