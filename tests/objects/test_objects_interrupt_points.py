"""An asynchronous exception landing at each point of ObjectPool's code, one point per run.

A KeyboardInterrupt (or ``PyThreadState_SetAsyncExc``) lands after a call returns or as a Python
function starts. A profile function raises at exactly those events in the pool's own modules,
at the first of them in one run, at the second in the next, and so on through every event of a
scenario: however the scenario ends, the pool must balance, wait for nobody, and have its whole
``max_size`` to hand out again (the random storm in tests/buffers/test_interrupts.py finds the
same windows only by chance, and on some runs not at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import gc
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import poolalloc.objects
from poolalloc import ObjectPool, PoolExhausted

POOL_CODE = str(Path(poolalloc.objects.__file__).parent)
#: events after which an asynchronous exception can land: a Python function starting or
#: returning, a C function returning
LANDINGS = ("call", "return", "c_return")
WAIT = 0.2  # every wait in a scenario is bounded: a landing may strand the other side
SIZE = 1  # one object: the second thread or task always has to wait for it


class Landed(BaseException):
    """The simulated asynchronous exception (a BaseException, as KeyboardInterrupt is)."""


def _suspends(frame: FrameType, event: str) -> bool:
    """A coroutine's "return" that is an ``await`` giving way, not a return. Nothing can land
    in a suspended frame: an interrupt then lands in the event loop, which cancels the task
    (raised in the frame as it suspends, the task would end with the frame still waiting)."""
    if event != "return":
        return False
    return not dis.opname[frame.f_code.co_code[frame.f_lasti]].startswith("RETURN")


def _in_finalizer(frame: FrameType | None) -> bool:
    # A finalizer swallows what lands in it ("Exception ignored in"); its one-line window
    # between a dying slot and the pool is the part no Python code can close.
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextmanager
def landing(at: int) -> Iterator[list[str]]:
    """Raise Landed at the ``at``-th landing point in the pool's code (0: count them only).

    Yields a list that ends up holding one entry per landing point passed."""
    seen: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if (
            event in LANDINGS
            and frame.f_code.co_filename.startswith(POOL_CODE)
            and not _suspends(frame, event)
            and not _in_finalizer(frame)
        ):
            seen.append(f"{event} {frame.f_code.co_name}:{frame.f_lineno}")
            if len(seen) == at:
                sys.setprofile(None)
                raise Landed(seen[-1])

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def reuse(pool: ObjectPool[list[int]]) -> None:
    """No contention: the first acquisition builds the object, the second reuses it."""
    for _ in range(2):
        lease = pool.acquire(timeout=WAIT)
        lease.obj.append(1)
        lease.release()


def _then(run: Callable[[], None], after: Callable[[], None]) -> None:
    """``run()``, then ``after()``; when a landing stops ``run``, ``after`` runs once the frames
    it unwound let go of what they held, as a thread's frames do when it dies of an interrupt."""
    try:
        run()
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)
        after()
        raise
    after()


def wait_for_a_thread(pool: ObjectPool[list[int]]) -> None:
    """This thread waits until another one gives the only object back."""
    held = threading.Event()

    def holder() -> None:
        with pool.acquire(timeout=WAIT):
            held.set()
            time.sleep(0.005)

    def wait() -> None:
        held.wait(WAIT)
        pool.acquire(timeout=WAIT).release()

    thread = threading.Thread(target=holder)
    thread.start()
    _then(wait, thread.join)


def hand_to_a_thread(pool: ObjectPool[list[int]]) -> None:
    """This thread gives the only object back to another one that waits for it."""

    def waiter() -> None:
        # the landing may stop the hand-over: the pool must still balance
        with contextlib.suppress(PoolExhausted):
            pool.acquire(timeout=WAIT).release()

    thread = threading.Thread(target=waiter)

    def hand() -> None:
        lease = pool.acquire(timeout=WAIT)
        thread.start()
        time.sleep(0.005)  # the waiter queues (no polling: each poll would be landings)
        lease.release()

    _then(hand, lambda: thread.join() if thread.ident else None)


def take_in_a_finished_thread(pool: ObjectPool[list[int]]) -> None:
    """This thread's first call takes in the stash of a thread that finished, counters too."""

    def user() -> None:
        pool.acquire(timeout=WAIT)  # dropped unreleased: back, counted in gc_returns
        pool.acquire(timeout=WAIT).release()  # into that thread's stash

    thread = threading.Thread(target=user)
    thread.start()
    thread.join()
    pool.acquire(timeout=WAIT).release()


def hand_between_tasks(pool: ObjectPool[list[int]]) -> None:
    """Two asyncio tasks: one holds the only object, the other waits for it."""

    async def main() -> None:
        lease = await pool.acquire_async(timeout=WAIT)
        second = asyncio.ensure_future(pool.acquire_async(timeout=WAIT))
        try:
            await asyncio.sleep(0.001)
            lease.release()
            (await second).release()
        finally:
            second.cancel()

    asyncio.run(main())


SCENARIOS: dict[str, Callable[[ObjectPool[list[int]]], None]] = {
    "reuse": reuse,
    "wait_for_a_thread": wait_for_a_thread,
    "hand_to_a_thread": hand_to_a_thread,
    "hand_between_tasks": hand_between_tasks,
    "take_in_a_finished_thread": take_in_a_finished_thread,
}
POOLS: dict[str, dict[str, Any]] = {
    "plain": {},
    # the other return path: reset, validation, lifetime and leak records
    "checked": {
        "reset": list.clear,
        "validate": lambda obj: True,
        "max_lifetime": 60.0,
        "track_leaks": True,
    },
}


def _check(pool: ObjectPool[list[int]], where: str) -> None:
    gc.collect()  # leases and waiters of the frames the landing unwound
    s = pool.stats()
    assert (s.in_use, s.waiting, s.is_balanced, s.reused >= 0) == (0, 0, True, True), (where, s)
    try:
        leases = [pool.acquire(timeout=0) for _ in range(SIZE)]  # all of max_size, at once
    except PoolExhausted:
        pytest.fail(f"landing at {where}: capacity lost ({pool.stats()})")
    for lease in leases:
        lease.release()
    assert pool.close().is_clean, where


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_landing_anywhere_loses_nothing(
    scenario: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = SCENARIOS[scenario]
    with landing(0) as points:
        run(ObjectPool(list, max_size=SIZE, **POOLS[kind]))
    assert len(points) > 20, points  # the profile sees the pool's code
    for at in range(1, len(points) + 1):
        pool: ObjectPool[list[int]] = ObjectPool(list, max_size=SIZE, **POOLS[kind])
        where = "nowhere (the run took another path)"
        try:
            with landing(at):
                run(pool)
        except Landed as landed:
            where = str(landed)
        _check(pool, where)
        caplog.clear()  # collected leases of tracked pools log where they were acquired
