"""The pools' one context-manager shape: ``with pool:`` closes the pool on the way out.

Lowest layer (imports nothing from poolalloc), so every pool and lease can use it.

Example:
    >>> class Door(ClosesOnExit):
    ...     def close(self) -> None: print("closed")
    >>> with Door() as d: pass
    closed
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit", "ExcInfo"]

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
