"""When a slot or a permit dies unplaced, its finalizer gives it back; in a garbage collection
that decision waits until the collection ends.

A slot (or a permit) dropped by reference counting is gone: its finalizer gives its object (or
its count) back to the pool at once. A garbage collection is different: it runs the finalizers
of everything unreachable before freeing any of it, so a slot's finalizer can run in the same
collection as the finalizer that *uses* the slot. The usual case is an asyncio task collected
while it waits inside ``async with pool.acquire_async()``: closing its coroutine runs
``__aexit__``, which releases the lease, and the slot goes back to a stash, alive after all.
Given back by its own finalizer as well, the one object would sit in the pool twice and go to
two users. So during a collection a finalizer keeps its slot or permit (a *suspect*), and when
the collection ends each suspect that nothing else holds is given back; one that something
holds (a stash, a lease, a waiter) stays a suspect, since its finalizer cannot run again, and is
looked at after the next collection.

Example:
    >>> from poolalloc.objects._waiting import Permit
    >>> held_during_collection(Permit(None))  # no collection running
    False
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any


class _Collection:
    running = False  # between the gc callbacks' "start" and "stop"


#: slots and permits whose finalizer ran during a collection, not yet settled
_suspects: list[Any] = []


def held_during_collection(thing: Any) -> bool:
    """In a finalizer: True when a collection is running and ``thing`` waits for its end.

    ``thing`` has ``home`` (a weak reference to its pool) and ``give_back()``."""
    if not _Collection.running or thing.home() is None:
        return False  # reference counting freed it, or its pool is garbage too
    _suspects.append(thing)
    return True


def _refs(thing: object) -> int:
    return sys.getrefcount(thing)


def _alone() -> int:
    probe = object()
    return _refs(probe)  # one local holds it: the count a suspect has when nothing else does


_ALONE = _alone()


def _settle() -> None:
    kept = []
    while _suspects:
        try:
            thing = _suspects.pop()
        except IndexError:
            break
        if thing.home is None:
            continue  # disposed, used (a permit), or given back already
        if _refs(thing) > _ALONE:
            kept.append(thing)  # alive where it belongs: settled after a later collection
            continue
        thing.give_back()
    _suspects.extend(kept)


def _on_collection(
    phase: str,
    info: dict[str, int],
    state: type[_Collection] = _Collection,
    settle: Callable[[], None] = _settle,
    suspects: list[Any] = _suspects,
) -> None:
    # what it uses is bound here: collections at interpreter exit run after module globals
    # may have been cleared
    state.running = phase == "start"
    if phase == "stop" and suspects:
        settle()


gc.callbacks.append(_on_collection)
