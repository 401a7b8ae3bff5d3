"""A tiny asyncio HTTP/1.1 server for the load generator's tests, and a CLI runner."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from child_env import child_env


class _Server(asyncio.Protocol):
    """Answers each request head with 200 and a 5-byte body; the test can change the status
    or ask it to close the connection after ``close_after`` answers."""

    status = b"200 OK"
    close_after = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inbox = b""
        self.answered = 0

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        while b"\r\n\r\n" in self.inbox:
            _, self.inbox = self.inbox.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 5\r\n\r\nhello")
            self.answered += 1
            if self.close_after and self.answered >= self.close_after:
                self.transport.close()
                return


@pytest.fixture
def http_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """Port of a loopback HTTP server; parametrize indirectly with (status, close_after)."""
    status, close_after = getattr(request, "param", (b"200 OK", 0))
    protocol = type("Proto", (_Server,), {"status": status, "close_after": close_after})
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", 0, backlog=1024))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


class Cli:
    """Runs ``python -m poolalloc ARGS`` in a scratch directory, so the installed package (not
    the source tree) is what runs."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "poolalloc", *args],
            cwd=self.cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A runner of the ``poolalloc`` command in ``tmp_path``."""
    return Cli(tmp_path)
