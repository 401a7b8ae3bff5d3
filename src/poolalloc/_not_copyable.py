"""Objects that stand for one native resource refuse ``copy`` and ``pickle``.

A copy of a pool would be a second Python object over the same native pool (closed twice, or
used after the other closed it); a copy of a block or a lease a second owner of one block
(freed twice, or written after the block went to someone else). Lowest layer: imports nothing
from poolalloc.

Example:
    >>> import copy
    >>> class Door(NotCopyable):
    ...     _not_copyable_why = "it is the only door"
    >>> copy.copy(Door())
    Traceback (most recent call last):
    ...
    TypeError: a Door cannot be copied: it is the only door
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

__all__ = ["NotCopyable"]


class NotCopyable:
    """Mixin: ``copy.copy``, ``copy.deepcopy`` and ``pickle`` raise TypeError."""

    __slots__ = ()
    #: Why, for the error message.
    _not_copyable_why: ClassVar[str] = "it owns native memory"

    def _refuse(self, what: str) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} cannot be {what}: {self._not_copyable_why}")

    def __copy__(self) -> NoReturn:
        self._refuse("copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse("copied")

    def __reduce__(self) -> NoReturn:
        self._refuse("pickled")
