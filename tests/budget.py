"""The test time budget, read in one place: ``PA_TEST_SECONDS`` scales every stress or load loop.

The default is small (CI has 2 cores and runs the suite on three Pythons); a longer local run
sets e.g. ``PA_TEST_SECONDS=30``. Each loop asks for a share of it, so the relative lengths of
the suites stay as they were chosen.

Example:
    >>> seconds(0.5) == TEST_SECONDS * 0.5
    True
"""

from __future__ import annotations

import os

#: the budget unit in seconds (env ``PA_TEST_SECONDS``, default 1)
TEST_SECONDS = float(os.environ.get("PA_TEST_SECONDS", "1"))


def seconds(share: float = 1.0) -> float:
    """``share`` of the budget unit, in seconds."""
    return TEST_SECONDS * share
