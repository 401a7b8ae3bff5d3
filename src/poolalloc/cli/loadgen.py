"""A small HTTP/1.1 load generator: many keep-alive connections on one epoll loop.

Each connection sends one request, waits for the whole response, then sends the next (no
pipelining), so a latency is one request's round trip as a client sees it. One thread drives
every connection with non-blocking sockets: a thread per connection would measure the
scheduler, not the server. Responses must carry ``Content-Length`` (the servers of this project
always send it); anything else, a status other than 2xx, a reset or a timeout counts as a failed
request, and every request a broken connection did not get to send counts as failed too, so
``ok + failed`` always equals what was asked for.

Example:
    >>> result = LoadResult(ok=3, failed=0, elapsed=0.5, latencies=[0.001, 0.002, 0.003])
    >>> result.requests_per_second, result.percentile(50)
    (6.0, 0.002)
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["LoadResult", "http_request", "percentile", "raise_open_files_limit", "run_load"]

#: Connections opened per loop turn: a burst of thousands of SYNs overflows a small backlog.
CONNECT_BATCH = 64
RECV_SIZE = 65536


@dataclass
class LoadResult:
    """What a load run measured. Latencies are in seconds, one per successful request.

    Example:
        >>> LoadResult(ok=1, failed=1, elapsed=1.0, latencies=[0.25]).percentile(99)
        0.25
    """

    ok: int
    failed: int
    elapsed: float
    latencies: list[float] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, pct: float) -> float:
        """The ``pct`` percentile of the latencies (nearest rank), 0.0 when there are none."""
        return percentile(self.latencies, pct) if self.latencies else 0.0


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank: the smallest value with at least
    ``pct`` percent of the values at or below it).

    Example:
        >>> percentile(list(range(1, 101)), 99), percentile([1, 2, 3], 50)
        (99, 2)
    """
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[min(len(ordered), int(rank)) - 1]


def http_request(host: str, port: int, path: str = "/", body: bytes = b"") -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request (a POST when there is a body).

    Example:
        >>> http_request("127.0.0.1", 8080).split(b"\\r\\n")[0]
        b'GET / HTTP/1.1'
    """
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("ascii") + b"\r\n" + body


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit).

    Example:
        >>> raise_open_files_limit(64) >= 64
        True
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


class _Conn:
    """One client connection: its socket, its unanswered request and what it still owes."""

    __slots__ = ("inbox", "left", "need", "out", "sent_at", "sock")

    def __init__(self, sock: socket.socket, requests: int) -> None:
        self.sock = sock
        self.left = requests  # requests not yet answered, the one in flight included
        self.inbox = bytearray()
        self.out = memoryview(b"")
        self.need = -1  # total bytes of the response being read, once its head is parsed
        self.sent_at = 0.0


def _response_length(inbox: bytearray) -> int:
    """Bytes of the response at the start of ``inbox``; -1 if the head is incomplete."""
    end = inbox.find(b"\r\n\r\n")
    if end < 0:
        return -1
    head = bytes(inbox[:end]).decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    if len(status) < 2 or not status[1].startswith("2"):
        raise ValueError(f"bad status line {head[0]!r}")
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return end + 4 + int(value)
    raise ValueError("response without Content-Length")


class _Run:
    """The state of one load run: the epoll set, the connections and the tallies."""

    def __init__(self, request: bytes, requests: int, deadline: float) -> None:
        self.request = request
        self.requests = requests
        self.deadline = deadline
        self.epoll = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.result = LoadResult(ok=0, failed=0, elapsed=0.0)

    def open(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, self.requests)
        self.conns[sock.fileno()] = conn
        rc = sock.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect: {errno.errorcode.get(rc, rc)}")
            return
        self.start_request(conn)
        self.epoll.register(sock.fileno(), select.EPOLLOUT | select.EPOLLIN)

    def start_request(self, conn: _Conn) -> None:
        conn.out = memoryview(self.request)
        conn.need = -1
        conn.sent_at = time.perf_counter()

    def fail(self, conn: _Conn, why: str) -> None:
        """Count every request ``conn`` still owes as failed and close it."""
        self.result.failed += conn.left
        conn.left = 0
        if len(self.result.errors) < 5:
            self.result.errors.append(why)
        self.close(conn)

    def close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self.conns.pop(fd, None) is not None:
            # It may never have been registered: its connect failed at once.
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.epoll.unregister(fd)
            conn.sock.close()

    def on_event(self, conn: _Conn, events: int) -> None:
        try:
            if events & select.EPOLLOUT and conn.out:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:]
                if not conn.out:
                    self.epoll.modify(conn.sock.fileno(), select.EPOLLIN)
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self.on_readable(conn)
        except (OSError, ValueError) as exc:
            self.fail(conn, f"{type(exc).__name__}: {exc}")

    def on_readable(self, conn: _Conn) -> None:
        while True:
            try:
                chunk = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            if not chunk:
                raise ConnectionResetError("server closed the connection")
            conn.inbox += chunk
            if conn.need < 0:
                conn.need = _response_length(conn.inbox)
            if 0 <= conn.need <= len(conn.inbox):
                self.on_response(conn)
                return

    def on_response(self, conn: _Conn) -> None:
        if len(conn.inbox) != conn.need:
            raise ValueError("more bytes than one response: the server pipelined or misframed")
        self.result.latencies.append(time.perf_counter() - conn.sent_at)
        self.result.ok += 1
        conn.left -= 1
        conn.inbox.clear()
        if conn.left == 0:
            self.close(conn)
            return
        self.start_request(conn)
        self.epoll.modify(conn.sock.fileno(), select.EPOLLOUT | select.EPOLLIN)


def run_load(
    host: str,
    port: int,
    connections: int = 1000,
    requests: int = 100,
    *,
    request: bytes | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Drive ``host:port`` with ``connections`` x ``requests`` sequential keep-alive requests.

    ``progress(done, total)`` is called about ten times a second. After ``timeout`` seconds
    the requests still owed count as failed.

    Example:
        >>> from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        >>> import threading
        >>> class Hello(BaseHTTPRequestHandler):
        ...     protocol_version = "HTTP/1.1"
        ...     def do_GET(self):
        ...         self.send_response(200); self.send_header("Content-Length", "2")
        ...         self.end_headers(); self.wfile.write(b"hi")
        ...     def log_message(self, *args): pass
        >>> server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        >>> thread = threading.Thread(target=server.serve_forever, daemon=True); thread.start()
        >>> result = run_load("127.0.0.1", server.server_address[1], connections=4, requests=5)
        >>> server.shutdown(); server.server_close()
        >>> result.ok, result.failed
        (20, 0)
    """
    raise_open_files_limit(connections + 64)
    start = time.perf_counter()
    run = _Run(request or http_request(host, port), requests, start + timeout)
    opened, total, next_report = 0, connections * requests, 0.0
    try:
        while opened < connections or run.conns:
            for _ in range(min(CONNECT_BATCH, connections - opened)):
                run.open(host, port)
                opened += 1
            now = time.perf_counter()
            if now > run.deadline:
                for conn in list(run.conns.values()):
                    run.fail(conn, f"timed out after {timeout:g}s")
                break
            for fd, events in run.epoll.poll(0.0 if opened < connections else 0.1):
                ready = run.conns.get(fd)
                if ready is not None:
                    run.on_event(ready, events)
            if progress is not None and now >= next_report:
                progress(run.result.ok + run.result.failed, total)
                next_report = now + 0.1
    finally:
        for conn in list(run.conns.values()):
            run.close(conn)
        run.epoll.close()
    run.result.failed += (connections - opened) * requests
    run.result.elapsed = time.perf_counter() - start
    if progress is not None:
        progress(run.result.ok + run.result.failed, total)
    return run.result
