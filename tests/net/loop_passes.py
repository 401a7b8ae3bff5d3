"""Helpers the engine tests share: driving a loop pass by pass in the test's thread, a
protocol that records only how its connection ended, and a client's look at whether the
server closed its connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def run_until(loop: Any, condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Run ``loop`` pass by pass until ``condition()`` holds (failing after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        loop.call_later(0.002, lambda: None)  # bound each pass's wait
        loop.run_once()


def spin(loop: Any, seconds: float) -> None:
    """Run ``loop`` for ``seconds``."""
    end = time.monotonic() + seconds
    run_until(loop, lambda: time.monotonic() >= end, seconds + 5)


class Quiet:
    """Keeps nothing it reads; records its connection and how it ended."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.lost: list[BaseException | None] = []

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        return False

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def peer_closed(c: socket.socket) -> bool:
    """True once the server closed (FIN or RST) client ``c``; non-blocking."""
    c.setblocking(False)
    try:
        return c.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
