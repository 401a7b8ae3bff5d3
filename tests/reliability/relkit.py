"""Shared pieces of the reliability tests: budgets from the environment, and an HTTP harness.

``PA_FUZZ_EXAMPLES`` scales every fuzz test (CI default: a few seconds in all);
``PA_TEST_SECONDS`` bounds every stress loop. The harness drives the real
:class:`~poolalloc.net.http.protocol.HttpProtocol` over real pooled leases with a fake connection,
so the parser can be fuzzed at thousands of inputs a second without sockets.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import budget
from hypothesis import HealthCheck, settings

from poolalloc import BufferPool
from poolalloc.net.http._cache import ReplyCache
from poolalloc.net.http.parser import Request
from poolalloc.net.http.protocol import HttpProtocol
from poolalloc.net.transport import HeldBytes

FUZZ_EXAMPLES = int(os.environ.get("PA_FUZZ_EXAMPLES", "150"))
TEST_SECONDS = budget.seconds(2)
CORPUS = Path(__file__).with_name("corpus")

#: Every status the parser and protocol document (http/parser.py and http/protocol.py docstrings).
HTTP_ERROR_STATUSES = frozenset({400, 413, 414, 431, 501, 505})


def fuzz_settings(share: float = 1.0) -> settings:
    """Hypothesis settings for one fuzz test: ``share`` of the ``PA_FUZZ_EXAMPLES`` budget."""
    return settings(
        max_examples=max(10, int(FUZZ_EXAMPLES * share)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=os.environ.get("PA_FUZZ_RANDOM", "") in ("", "0"),
        database=None,
    )


class FakeConn:
    """The part of the Transport interface HttpProtocol uses; ``pause_every`` simulates
    backpressure."""

    def __init__(self, pause_every: int = 0) -> None:
        self.paused = self.closing = self.closed = False
        self.deadline: float | None = None
        self.writes: list[bytes] = []
        self.held: deque[bytes] = deque()
        self.pause_every = pause_every

    def set_deadline(self, seconds: float | None) -> None:
        self.deadline = seconds

    def hold_back(self, data: bytes) -> None:
        self.held.appendleft(data)

    def resume(self, proto: HttpProtocol) -> None:
        """As a connection resumes: held input first, until it pauses again."""
        self.paused = False
        while self.held and not (self.paused or self.closing):
            data = self.held.popleft()
            proto.buffer_received(HeldBytes(data), len(data))

    def write(self, data: bytes, *, more: bool = False) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))
        if self.pause_every and len(self.writes) % self.pause_every == 0:
            self.paused = True

    def close(self, *, linger: bool = True) -> None:
        self.closing = True


class _Sink:
    def __init__(self, req: Request) -> None:
        self.req, self.data, self.state = req, bytearray(), "open"

    def write(self, data: memoryview) -> None:
        assert self.state == "open"
        self.data += data

    def close(self) -> None:
        self.state = "closed"
        self.req.body = bytes(self.data)

    def abort(self) -> None:
        self.state = "aborted"


@dataclass
class FakeApp:
    """An HttpApp that records what the protocol hands it."""

    max_head: int = 1024
    max_target: int = 256
    max_body: int = 4096
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_rate: float = 500.0
    finished: list[Request] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    #: The reply cache HttpProtocol fills; this app has no static routes.
    replies: ReplyCache = field(default_factory=ReplyCache)

    def static_reply(self, req: Request) -> bytes | None:
        return None

    def body_limit(self, req: Request) -> int:
        return self.max_body

    def begin(self, proto: HttpProtocol, req: Request) -> _Sink:
        return _Sink(req)

    def finish(self, proto: HttpProtocol, req: Request) -> None:
        self.finished.append(req)
        proto.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", close=not req.keep_alive)

    def error_reply(self, status: int, message: str, *, with_body: bool = True) -> bytes:
        self.errors.append(status)
        return f"HTTP/1.1 {status} x\r\n\r\n".encode()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, duplicates ignored)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def drive(
    pieces: list[bytes], app: FakeApp, pool: BufferPool, pause_every: int = 0
) -> HttpProtocol:
    """Feed ``pieces`` as separate reads, as Connection would, then lose the connection."""
    conn = FakeConn(pause_every)
    proto = HttpProtocol(app)
    proto.connection_made(conn)  # type: ignore[arg-type]
    reads = [p[i : i + 2048] for p in pieces for i in range(0, len(p), 2048)]
    for part in reads:
        while conn.paused and not conn.closing:  # the peer read our output: resume
            conn.resume(proto)
        if conn.closing:
            break  # Connection discards input after close()
        lease = pool.acquire()
        lease[: len(part)] = part
        if not proto.buffer_received(lease, len(part)):
            lease.release()
    while conn.paused and not conn.closing:
        conn.resume(proto)
    conn.closed = True
    proto.connection_lost(None)
    return proto


class ThreadedHttp:
    """An HttpServer on a Reactor in a background thread (stopped and balanced on exit)."""

    def __init__(self, pool: BufferPool | None = None, **options: Any) -> None:
        from poolalloc.net.epoll.reactor import Reactor
        from poolalloc.net.http.server import HttpServer

        self.pool = pool if pool is not None else BufferPool(16384, capacity=128, name="rel-http")
        self.reactor = Reactor()
        self.http = HttpServer(self.reactor, buffer_pool=self.pool, **options)
        self.http.start()
        self.thread = threading.Thread(target=self.reactor.run, daemon=True)
        self.thread.start()
        self.port = self.http.address[1]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the reactor thread and return its result."""
        box: list[Any] = []
        done = threading.Event()

        def run() -> None:
            box.append(fn())
            done.set()

        self.reactor.call_soon_threadsafe(run)
        assert done.wait(10), "the reactor did not answer"
        return box[0]

    def close(self) -> None:
        self.call(self.http.close)
        self.reactor.call_soon_threadsafe(self.reactor.stop)
        self.thread.join(10)
        self.reactor.close()
        gc.collect()
        assert self.pool.outstanding() == 0, self.pool.stats()
        self.pool.close()

    def __enter__(self) -> ThreadedHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(port: int, raw: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection; return (status, body) of the first response.

    Status 0: the server closed without answering.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        f = sock.makefile("rb")
        try:
            line = f.readline()
        except ConnectionResetError:
            return 0, b""
        if not line:
            return 0, b""
        status = int(line.split()[1])
        length = 0
        while (h := f.readline()) not in (b"\r\n", b""):
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, f.read(length)
