"""Servers for the ASGI tests: poolalloc's and uvicorn's, each on its own loop in a thread."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

# apps.py sits beside this file. It is loaded under a name of its own rather than by putting
# this folder on sys.path: a folder with a conftest.py on sys.path would shadow the
# ``from conftest import ...`` of tests elsewhere.
_spec = importlib.util.spec_from_file_location(
    "asgi_test_apps", os.path.join(os.path.dirname(__file__), "apps.py")
)
assert _spec is not None
assert _spec.loader is not None
asgi_test_apps = importlib.util.module_from_spec(_spec)
sys.modules["asgi_test_apps"] = asgi_test_apps
_spec.loader.exec_module(asgi_test_apps)


class Running:
    """An ASGI server running ``app`` in a background thread; ``url`` to reach it."""

    def __init__(self, kind: str, app: Any) -> None:
        self.kind = kind
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.stopped = threading.Event()
        self.host, self.port = "127.0.0.1", 0
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.started.wait(20):
            raise RuntimeError(f"{kind} did not start")
        if self.error is not None:
            raise self.error

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:
            self.error = exc
            self.started.set()
        finally:
            self.loop.close()
            self.stopped.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        if self.kind == "poolalloc":
            from poolalloc.net.asgi import AsgiServer

            server = AsgiServer(self.app, "127.0.0.1", 0, lifespan="auto")
            await server.start()
            self.port = server.address[1]
            self.started.set()
            await self._stop.wait()
            await server.shutdown(timeout=5)
        else:
            import uvicorn

            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            config = uvicorn.Config(self.app, lifespan="auto", log_level="warning")
            userver = uvicorn.Server(config)
            task = asyncio.ensure_future(userver.serve(sockets=[sock]))
            while not userver.started and not task.done():
                await asyncio.sleep(0.01)
            self.started.set()
            await self._stop.wait()
            userver.should_exit = True
            await task
            sock.close()

    def stop(self) -> None:
        if self._stop is not None and not self.stopped.is_set():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.stopped.wait(20)
        self.thread.join(5)


@pytest.fixture
def make_server() -> Iterator[Any]:
    running: list[Running] = []

    def start(kind: str, app: Any) -> Running:
        server = Running(kind, app)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
    gc.collect()
