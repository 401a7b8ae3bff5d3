"""When a slot or a permit dies unplaced, its finalizer gives it back; in a garbage collection
that decision waits until the collection ends.

A slot (or a permit) dropped by reference counting is gone: its finalizer gives its object (or
its count) back to the pool at once. A garbage collection is different: it runs the finalizers
of everything unreachable before freeing any of it, so a slot's finalizer can run in the same
collection as the finalizer that *uses* the slot. The usual case is an asyncio task collected
inside ``async with pool.acquire_async()`` while it waits for something else: closing its
coroutine runs ``__aexit__``, which releases the lease, and the slot goes back to a stash,
alive after all.
Given back by its own finalizer as well, the one object would sit in the pool twice and go to
two users. So during a collection a finalizer keeps its slot or permit (a *suspect*), and when
the collection ends each suspect that nothing else holds is given back; one that something
holds (a stash, a lease, a waiter) stays a suspect, since its finalizer cannot run again, and is
looked at after the next collection (or by a waiting thread or task, between its steps).

Example:
    >>> from poolalloc.objects._waiting import Permit
    >>> held_during_collection(Permit(None))  # no collection running
    False
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any


class _Collection:
    running = False  # between the gc callbacks' "start" and "stop"
    thread = 0  # the thread it runs on (threading.get_ident())


#: slots and permits whose finalizer ran during a collection, not yet settled
suspects: list[Any] = []


class Returned:
    """What a pool counts and gets back when it is lost: a slot (its object) or a permit (its
    count). ``home`` is a weak reference to the pool, None once placed for good or given back.
    A subclass says in ``_return_to`` what going back means for it."""

    __slots__ = ("home",)
    home: weakref.ref[Any] | None

    def __del__(self) -> None:
        try:
            home = self.home
        except AttributeError:  # an interrupt landed in __init__: nothing was counted yet
            return
        if home is not None and not held_during_collection(self):
            self.give_back()

    def give_back(self) -> None:
        """It is lost: it goes back to its pool (once)."""
        home = self.home
        if home is not None:
            # Whoever gives it back first (this, or the finalizer of a lease collected in the
            # same garbage cycle) clears `home`, so it comes back once.
            self.home = None
            pool = home()
            if pool is not None:
                self._return_to(pool)

    def _return_to(self, pool: Any) -> None:
        raise NotImplementedError  # pragma: no cover - every subclass says it


def held_during_collection(thing: Any) -> bool:
    """In a finalizer: True when a collection is running and ``thing`` waits for its end.

    ``thing`` has ``home`` (a weak reference to its pool) and ``give_back()``."""
    if not _Collection.running or thing.home() is None:
        return False  # reference counting freed it, or its pool is garbage too
    suspects.append(thing)
    return True


def collecting_here() -> bool:
    """True inside a garbage collection on this thread: no lock of a pool may be waited for
    (this thread may hold it, and the locks are not reentrant)."""
    return _Collection.running and _Collection.thread == threading.get_ident()


def settle() -> None:
    """Give back the suspects that nothing holds any more (any time; the pools' waiters call
    it between their steps, so a suspect lost after its collection does not wait for the next)."""
    if suspects and not _Collection.running:
        _settle()


def _refs(thing: object) -> int:
    return sys.getrefcount(thing)


def _alone() -> int:
    held = [object()]
    probe = held[0]
    return _refs(probe)  # in a list and a local, as _settle holds a suspect nothing else holds


_ALONE = _alone()


def _settle() -> None:
    # By index, each suspect left in the list until it is settled: an asynchronous exception
    # landing here (the gc callback's errors are only printed) loses none of them. Removed by
    # identity: another thread, or a collection on this one, may settle at the same time.
    i = 0
    while i < len(suspects):
        try:
            thing = suspects[i]
        except IndexError:
            break  # another settle took the rest
        if thing.home is None:
            _forget(thing)  # disposed, used (a permit), or given back already
        elif _refs(thing) > _ALONE:
            i += 1  # alive where it belongs: settled after a later collection, or by a waiter
        else:
            thing.give_back()
            _forget(thing)


def _forget(thing: object) -> None:
    for j, other in enumerate(suspects):
        if other is thing:
            del suspects[j]
            return


def _on_collection(
    phase: str,
    info: dict[str, int],
    *,
    state: type[_Collection] = _Collection,
    settle: Callable[[], None] = _settle,
    suspects: list[Any] = suspects,
    ident: Callable[[], int] = threading.get_ident,
) -> None:
    # what it uses is bound here: collections at interpreter exit run after module globals
    # may have been cleared
    state.thread = ident()
    state.running = phase == "start"
    if phase == "stop" and suspects:
        settle()


def _after_fork_in_child() -> None:
    _Collection.running = False  # a fork while another thread collected: not in the child


gc.callbacks.append(_on_collection)
os.register_at_fork(after_in_child=_after_fork_in_child)
