"""Fixtures of the io_uring tests: skip only when the probe says io_uring cannot run here.

``serve`` runs a server on a Proactor (or the Reactor) in this thread while a client function
runs in another thread, bounded in time; the loop stops when the client returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import budget
import pytest

from poolalloc.net.uring.proactor import Proactor, available

SECONDS = budget.seconds()


@pytest.fixture
def proactor() -> Iterator[Proactor]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    p = Proactor(ring_buffers=64, initial_buffers=8)
    yield p
    p.close()


@pytest.fixture
def run_with_client() -> Callable[..., dict[str, Any]]:
    """``run_with_client(loop, client, timeout)``: run ``loop`` until ``client(result)`` returns."""

    def run(
        loop: Any, client: Callable[[dict[str, Any]], None], timeout: float = 20.0
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def body() -> None:
            try:
                client(result)
            except BaseException as exc:  # reported by the test, not lost in the thread
                result["error"] = exc
            finally:
                loop.call_soon_threadsafe(loop.stop)

        guard = loop.call_later(timeout, loop.stop)
        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        loop.run()
        guard.cancel()
        thread.join(timeout)
        assert not thread.is_alive(), "client did not finish in time"
        if "error" in result:
            raise result["error"]
        return result

    return run
