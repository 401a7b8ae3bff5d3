"""Run a function in a forked child and get its exit code, for the tests of pools after fork().

Example:
    >>> in_child(lambda: None)
    0
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable

#: the child raised (its error is written to stderr)
RAISED = 2
#: the child did not end within the limit and was killed
HUNG = -9


def in_child(body: Callable[[], None], limit: float = 20.0) -> int:
    """Fork, run ``body`` in the child and return its exit code (RAISED, HUNG, or 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        pid = os.fork()
    if pid == 0:
        code = RAISED
        try:
            body()
            code = 0
        except BaseException as exc:
            sys.stderr.write(f"child: {exc!r}\n")
        finally:
            os._exit(code)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return HUNG
