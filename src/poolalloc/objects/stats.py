"""The snapshots an ObjectPool reports: counters (:class:`ObjectPoolStats`) and its close report.

Example:
    >>> s = ObjectPoolStats(name=None, max_size=4, created=2, reused=6, disposed=1, in_use=1,
    ...                     idle=0, waiting=0, timeouts=0, invalid=0, reset_failures=1,
    ...                     retired=0, acquires=8)
    >>> s.alive, s.hit_rate, s.is_balanced
    (1, 0.75, True)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectPoolStats:
    """One snapshot of an ObjectPool's counters (exact when no other thread is mid-call).

    ``created - disposed`` objects are alive; each is either ``in_use`` (leased) or ``idle``, and
    ``in_use == acquires - releases - gc_returns``.
    ``reused`` counts acquisitions served by an existing object, so ``hit_rate`` is
    ``reused / acquires``.

    Example:
        >>> ObjectPoolStats(name="p", max_size=None, created=0, reused=0, disposed=0, in_use=0,
        ...                 idle=0, waiting=0, timeouts=0, invalid=0, reset_failures=0,
        ...                 retired=0, acquires=0).hit_rate
        0.0
    """

    name: str | None
    max_size: int | None
    created: int
    reused: int
    disposed: int
    in_use: int
    idle: int
    waiting: int
    timeouts: int
    #: objects that failed ``validate`` on borrow and were replaced
    invalid: int
    #: objects whose ``reset`` raised on return (they were disposed)
    reset_failures: int
    #: objects disposed on return because they outlived ``max_lifetime``
    retired: int
    acquires: int
    #: leases garbage-collected without ``release()`` (their objects came back)
    gc_returns: int = 0

    @property
    def alive(self) -> int:
        """Objects that exist now: created and not yet disposed."""
        return self.created - self.disposed

    @property
    def hit_rate(self) -> float:
        """Share of acquisitions that reused an object (0.0 before the first one)."""
        return self.reused / self.acquires if self.acquires else 0.0

    @property
    def is_balanced(self) -> bool:
        """True when every live object is either leased or idle, none counted twice."""
        return self.in_use + self.idle == self.alive


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What :meth:`ObjectPool.close` found still leased (``stacks`` only with leak tracking).

    Example:
        >>> CloseReport(outstanding=0, stacks=()).is_clean
        True
    """

    outstanding: int
    #: one formatted acquisition stack per unreleased lease, when leak tracking is on
    stacks: tuple[str, ...]

    @property
    def is_clean(self) -> bool:
        """True when no lease was still out at close."""
        return self.outstanding == 0
