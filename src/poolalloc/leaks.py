"""Leak tracking for buffer leases: where was each outstanding lease acquired?

Three levels, like Netty's ``ResourceLeakDetector`` but exact for ``all``:

- ``off``: no stacks are recorded (the default; the lease counters still count every lease).
- ``sampled``: one lease in :data:`SAMPLE_EVERY` records the stack that acquired it.
- ``all``: every lease records its stack, so every outstanding lease is reported with it.

The level comes from the environment variable ``POOLALLOC_LEAKS`` (``off``, ``sampled`` or
``all``) or from :func:`set_level`; a pool reads it when it is created. With tracking on, a pool
closed with leases still outstanding emits a :class:`LeakWarning` naming where each was acquired
(each place once, with a count), and a lease that was garbage-collected without ``release()`` is
reported too (its block went back to the pool, so no memory was lost, but the code that forgot it
is still wrong): once per place, with a count, for the first :data:`GC_LEAKS_KEPT` of them. Those
collected without a stack (tracking off, or not sampled) are counted in the report all the same.

Example:
    >>> from poolalloc import leaks
    >>> leaks.set_level("all")
    >>> leaks.level()
    'all'
    >>> leaks.set_level(None)  # back to the environment's choice
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from typing import Protocol

from poolalloc import _lease, settings

__all__ = [
    "GC_LEAKS_KEPT",
    "LEVELS",
    "SAMPLE_EVERY",
    "LeakWarning",
    "capture",
    "level",
    "places",
    "report",
    "set_level",
]

#: the tracking levels, in the order of their cost
LEVELS = ("off", "sampled", "all")
#: ``sampled`` records the stack of one lease in this many (Netty samples 1 in 128)
SAMPLE_EVERY = 128
#: frames kept per stack: enough to see the caller's caller, cheap enough for ``all`` in tests
STACK_LIMIT = 12
#: stacks of leases collected unreleased that a pool keeps (the rest are only counted), so that a
#: leak that recurs does not make the tracker grow without bound
GC_LEAKS_KEPT = _lease.GC_LEAKS_KEPT

_override: str | None = None
_INTERNAL = (
    os.path.join("poolalloc", "buffers.py"),
    os.path.join("poolalloc", "_waiting.py"),
    *(os.path.join("poolalloc", "objects", f) for f in ("pool.py", "_store.py", "lease.py")),
)


class LeakWarning(UserWarning):
    """Leases were still outstanding at ``close()``, or were collected without ``release()``.

    Example:
        >>> issubclass(LeakWarning, UserWarning)
        True
    """


class TrackedPool(Protocol):
    """What :func:`report` reads from a lease layer (``poolalloc._lease.LeasePool``).

    Example:
        >>> from poolalloc import BufferPool
        >>> with BufferPool(64, leaks="all") as pool:
        ...     pool._leases.tracked
        {}
    """

    @property
    def name(self) -> str | None: ...
    @property
    def tracked(self) -> dict[int, traceback.StackSummary]: ...
    @property
    def gc_leaks(self) -> list[traceback.StackSummary]: ...

    def counters(self) -> dict[str, int]: ...


def _parse(value: str, source: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{source} must be one of {', '.join(LEVELS)}, not {type(value).__name__}")
    value = value.strip().lower()
    if value not in LEVELS:
        raise ValueError(f"{source} must be one of {', '.join(LEVELS)}, not {value!r}")
    return value


def level() -> str:
    """The tracking level new pools get: :func:`set_level`'s, else ``$POOLALLOC_LEAKS``, else off.

    :raises ValueError: when ``POOLALLOC_LEAKS`` names no level.

    Example:
        >>> level() in LEVELS
        True
    """
    if _override is not None:
        return _override
    return _parse(settings.value("POOLALLOC_LEAKS"), "POOLALLOC_LEAKS")


def set_level(value: str | None) -> None:
    """Set the level for pools created from now on; ``None`` goes back to the environment.

    :raises ValueError: when ``value`` names no level.
    :raises TypeError: when ``value`` is no str (or None).

    Example:
        >>> set_level("sampled"); level()
        'sampled'
        >>> set_level(None)
    """
    global _override  # noqa: PLW0603 - one process-wide switch, as the environment variable is
    _override = None if value is None else _parse(value, "leak tracking level")


def mode_of(value: str) -> tuple[int, int]:
    """The ``(mode, every)`` pair the C lease layer takes for a level name.

    Example:
        >>> mode_of("all"), mode_of("off")
        ((2, 1), (0, 1))
    """
    mode = LEVELS.index(_parse(value, "leak tracking level"))
    return mode, SAMPLE_EVERY if mode == 1 else 1


def capture() -> traceback.StackSummary:
    """The stack of the code that is acquiring a lease, without poolalloc's own frames.

    Example:
        >>> capture()[-1].name
        '<module>'
    """
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.endswith(_INTERNAL):
        frame = frame.f_back
    return traceback.extract_stack(frame, limit=STACK_LIMIT)


def _format_stack(stack: traceback.StackSummary) -> str:
    return "".join(stack.format()).rstrip()


def places(texts: Iterable[str]) -> list[tuple[str, int]]:
    """Each distinct text (a formatted stack) once, with how many times it came, first seen first:
    a leak in a loop repeats one place, which a report names once rather than once a lease.

    Example:
        >>> places(["a", "b", "a"])
        [('a', 2), ('b', 1)]
    """
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    return list(counts.items())


def report(pool: TrackedPool) -> str:
    """A readable report of a pool's outstanding and collected-unreleased leases ('' if none).

    Example:
        >>> from poolalloc import BufferPool
        >>> with BufferPool(64) as pool:
        ...     report(pool._leases)
        ''
    """
    counters = pool.counters()
    out = counters["live"] + counters["parked"]
    lines: list[str] = []
    name = pool.name if pool.name is not None else "unnamed pool"
    if out:
        lines.append(
            f"{name}: {out} lease(s) outstanding ({counters['live']} not released, "
            f"{counters['parked']} released but still viewed)"
        )
        for text, count in places(_format_stack(s) for s in pool.tracked.values()):
            lines.append(f"  {count} lease(s) acquired at:\n{text}")
        untracked = counters["live"] - len(pool.tracked)
        if untracked > 0:
            lines.append(f"  {untracked} lease(s) without a stack: set POOLALLOC_LEAKS=all")
    for text, count in places(_format_stack(s) for s in pool.gc_leaks):
        what = "a lease was" if count == 1 else f"{count} leases were"
        lines.append(f"{name}: {what} garbage-collected without release(), acquired at:")
        lines.append(text)
    unknown = counters["gc_returns"] - len(pool.gc_leaks)
    if unknown > 0:
        where = (
            f"only the first {GC_LEAKS_KEPT} stacks are kept"
            if len(pool.gc_leaks) >= GC_LEAKS_KEPT
            else "set POOLALLOC_LEAKS=all to see where they were acquired"
        )
        lines.append(
            f"{name}: {unknown} lease(s) garbage-collected without release() and no stack: {where}"
        )
    return "\n".join(lines)
