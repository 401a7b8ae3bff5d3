"""The docstring examples of the core's modules run and hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from poolalloc import _ffi, slab, stats


@pytest.mark.parametrize("module", [slab, stats, _ffi], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
