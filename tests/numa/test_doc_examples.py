"""The examples in the NUMA modules' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from poolalloc import numa
from poolalloc.numa import kernel, machine, sysfs, testing


@pytest.mark.parametrize(
    "module", [numa, machine, sysfs, kernel, testing], ids=lambda m: m.__name__
)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
