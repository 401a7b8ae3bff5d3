"""The environment for a test's child Python process.

Under ``make test-asan`` (libasan preloaded) it also preloads libstdc++: ASan intercepts
``__cxa_throw`` and must find the real one when a non-instrumented C++ extension (matplotlib's
ft2font, imported by the workload report) throws, or it aborts.

Example:
    >>> "PATH" in child_env()
    True
"""

from __future__ import annotations

import os


def child_env() -> dict[str, str]:
    """``os.environ``, with libstdc++ preloaded beside a preloaded libasan."""
    env = dict(os.environ)
    if "libasan" in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] += ":libstdc++.so.6"
    return env
