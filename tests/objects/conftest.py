"""Fixtures for the ObjectPool tests: a recording factory and pools checked balanced at teardown."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helpers module needs it.
sys.path.insert(0, str(Path(__file__).parent))

from objpool_helpers import Factory, Thing

from poolalloc import ObjectPool


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def make_pool(factory: Factory) -> Iterator[object]:
    """Build pools with the recording factory; each is checked balanced and closed at teardown."""
    pools: list[ObjectPool[Thing]] = []

    def make(**kwargs: object) -> ObjectPool[Thing]:
        kwargs.setdefault("dispose", factory.dispose)
        pool: ObjectPool[Thing] = ObjectPool(factory, **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    alive = 0
    for pool in pools:
        stats = pool.stats()
        assert stats.is_balanced, stats
        alive += stats.alive
    assert alive == len(factory.alive()), (alive, factory.alive())
    for pool in pools:
        pool.close()
