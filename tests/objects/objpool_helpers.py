"""Helpers shared by the ObjectPool tests (imported by name: tests use --import-mode=importlib)."""

from __future__ import annotations

import itertools
import threading

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
