"""Ints from callers: sizes and counts checked as the C argument parsers take them, and shown in
error messages however large."""

from __future__ import annotations

import operator

__all__ = ["integer", "shown"]


def shown(n: int) -> str:
    """``str(n)``, or a description of an int too long to print (Python refuses past 4300
    digits), so that the error about a size is the one raised.

        >>> shown(4096), shown(10**5000)
        ('4096', 'an int of 16610 bits')
    """
    try:
        return str(n)
    except ValueError:
        return f"an int of {n.bit_length()} bits"


def integer(value: object, what: str) -> int:
    """``value`` as an int: an int, or an integer of another type (numpy's), as the C argument
    parsers take them. bools are ints to Python, but True is no size (numpy's bool has no
    ``__index__``); floats are refused, not truncated, and so is an array (it has
    ``__index__`` too, refused unless 0-d).

        >>> integer(4096, "size")
        4096
        >>> integer(True, "size")
        Traceback (most recent call last):
        TypeError: size must be an int, not bool

    :raises TypeError: ``value`` is no integer.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
