"""The examples in the NUMA modules' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from poolalloc import _numa_fake, _numa_os, _numa_sysfs, _numa_system, numa


@pytest.mark.parametrize(
    "module", [numa, _numa_system, _numa_sysfs, _numa_os, _numa_fake], ids=lambda m: m.__name__
)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
