"""The pools' one context-manager shape: ``with pool:`` closes the pool on the way out.

Lowest layer (imports nothing from poolalloc), so every pool and lease can use it.

Example:
    >>> class Door(ClosesOnExit):
    ...     def close(self) -> None: print("closed")
    >>> with Door() as d: pass
    closed
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit", "ExcInfo", "warn_at_user"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: What ``__exit__`` receives: ``def __exit__(self, *exc_info: *ExcInfo)``.
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class ClosesOnExit:
    """Mixin: ``__enter__`` returns the object itself, ``__exit__`` calls its ``close()``."""

    __slots__ = ()
    close: Callable[[], object]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: *ExcInfo) -> None:
        self.close()


def warn_at_user(message: str, category: type[Warning]) -> None:
    """Warn with the location of the first caller outside poolalloc.

    A pool closed by ``with pool:`` closes from ``__exit__``: a fixed ``stacklevel`` would name
    that line of poolalloc, the same for every pool, instead of the user's ``with`` statement.

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_at_user("left open", ResourceWarning)
        >>> caught[0].filename.endswith("_closing.py")
        False
    """
    frame = sys._getframe(1)
    level = 2  # the frame that called this function
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
