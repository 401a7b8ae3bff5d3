"""Ints in error messages: the sizes and counts a caller passed, however large."""

from __future__ import annotations

__all__ = ["shown"]


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
