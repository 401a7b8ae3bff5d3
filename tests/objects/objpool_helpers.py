"""Helpers shared by the ObjectPool tests (imported by name: tests use --import-mode=importlib)."""

from __future__ import annotations

import inspect
import itertools
import sys
import threading
from collections.abc import Callable
from typing import Any

import budget

#: Stress tests scale with PA_TEST_SECONDS (CI default small: 2 cores, several Pythons).
TEST_SECONDS = budget.seconds()


class Thing:
    """A pooled object that knows its identity, whether it is dirty and whether it was disposed."""

    _ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(Thing._ids)
        self.dirty = False
        self.disposed = False
        self.holder: object = None


class Factory:
    """Makes Things, records them, and can be told to fail."""

    def __init__(self) -> None:
        self.made: list[Thing] = []
        self.disposed: list[Thing] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    def __call__(self) -> Thing:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("factory failed (on purpose)")
            thing = Thing()
            self.made.append(thing)
            return thing

    def dispose(self, thing: Thing) -> None:
        with self._lock:
            assert not thing.disposed, "disposed twice"
            thing.disposed = True
            self.disposed.append(thing)

    def alive(self) -> set[int]:
        with self._lock:
            return {t.id for t in self.made if not t.disposed}


def interrupt_on_line(
    function: Callable[..., Any], where: Callable[[list[str], int], bool]
) -> Callable[..., Any]:
    """A trace function for ``sys.settrace`` that raises KeyboardInterrupt once, on the line of
    ``function`` that ``where(lines, index)`` picks, as ``PyThreadState_SetAsyncExc`` would."""
    lines, first = inspect.getsourcelines(function)
    (target,) = [first + i for i in range(len(lines)) if where(lines, i)]
    code = function.__code__

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == target:
            sys.settrace(None)
            raise KeyboardInterrupt
        return local

    return tracer
