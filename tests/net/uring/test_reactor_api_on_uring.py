"""The Reactor's own loop tests (tests/net/epoll/test_reactor.py), run again on the Proactor.

Every test there that takes the ``reactor`` fixture runs here with a Proactor instead: timers,
``call_soon(_threadsafe)``, ``stop`` from a thread, fd callbacks through the epoll set the
Proactor watches with a multishot poll, signals. Tests that build a ``Reactor()`` themselves
are not repeated (they test the class, not the engine).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolalloc.net.uring.proactor import Proactor, available

_spec = importlib.util.spec_from_file_location(
    "reactor_tests_for_uring", Path(__file__).parent.parent / "epoll" / "test_reactor.py"
)
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

pytestmark = [pytest.mark.uring, pytest.mark.timeout(20)]

for _name, _fn in vars(_module).items():
    if _name.startswith("test_") and "reactor" in inspect.signature(_fn).parameters:
        globals()[_name] = _fn


@pytest.fixture
def reactor() -> Iterator[Proactor]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    p = Proactor()
    yield p
    p.close()
