"""Test-wide checks (uvloop's tearDown idea): no lease may be outstanding when a test ends.

After every test the garbage collector runs (so parked blocks whose views died come back, and
leases dropped without ``release()`` return their block), then every BufferPool/Allocator lease
layer still alive must have nothing out. A failure names the pool and, when leak tracking was
on (``POOLALLOC_LEAKS=all``), the stack that acquired each outstanding lease.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolalloc import buffers, leaks
from poolalloc._lease import LeasePool

# --import-mode=importlib puts no test folder on sys.path: shared helpers (``budget``) live here.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config: pytest.Config) -> None:
    # `make test-asan` runs with -p no:memray: its markers must still be known (--strict-markers)
    # so that the leak tests are collected and then deselected by -m "not leaks".
    if not config.pluginmanager.hasplugin("memray"):
        for name in ("limit_leaks", "limit_memory"):
            config.addinivalue_line("markers", f"{name}(limit): pytest-memray marker (inactive)")


def _holding_layers() -> list[LeasePool]:
    return [
        layer
        for layer in buffers.live_lease_layers()
        if layer.counters()["live"] or layer.counters()["parked"]
    ]


@pytest.fixture(autouse=True)
def _no_outstanding_leases() -> Iterator[None]:
    yield
    if not buffers.live_lease_layers():
        return  # no pool alive: nothing can be out (and no collection to pay for)
    for _ in range(3):  # garbage cycles may hold leases or views: three passes, as uvloop does
        if not _holding_layers():
            return
        gc.collect()
    holding = _holding_layers()
    if holding:
        report = "\n".join(leaks.report(layer) for layer in holding)
        for layer in holding:
            buffers.forget_lease_layer(layer)  # reported once, not again by every later test
        pytest.fail(f"leases still outstanding at the end of the test:\n{report}", pytrace=False)
