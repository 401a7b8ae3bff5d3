"""A listening socket on the Reactor: accept, pooled connection state, timeouts, metrics.

Accepting and running out of descriptors
----------------------------------------
The listener is edge-triggered like every other fd. Each edge accepts until ``EAGAIN``, but
at most ``accept_batch`` (64) connections per loop pass: under a flood of short connections the
backlog refills as fast as it drains, and an unbounded drain would hold the loop for seconds
(timers, other connections and a shutdown signal wait, and ``reactor.now`` goes stale). A full
batch schedules its continuation with ``call_soon`` for the next pass, since no new edge comes
for what is already queued. 64 keeps a pass to a few milliseconds of accepting (each accept
also opens the connection and makes its first read) while still taking many connections per
wakeup; asyncio bounds its accept loop the same way (by its backlog, 100). A paused or
closed server drops a scheduled continuation (resuming tries ``accept`` itself).

When ``accept`` fails with ``EMFILE``/``ENFILE``, or the connection pool is at
``max_connections`` while a connection waits in the backlog, the pending connection stays in
the kernel's backlog and the listener is *paused*: its callback is removed (no ``epoll_ctl``;
a level-triggered loop would spin here, which is the classic bug). Accepting resumes when one
of our connections closes (a descriptor came free), or after ``accept_retry`` seconds in case
descriptors were freed elsewhere in the process. On resume the server tries ``accept`` at
once, because the edges that arrived while paused are gone. A full pool with an empty backlog
does not pause: the listener stays registered, so the next client's edge is seen at once (the
io_uring server's accept likewise pauses only for a connection it took).

A connection in its lingering close (answered, waiting for the peer's FIN) still holds its
pooled object, but gives way: when a client waits (the backlog is readable, or an accept
failed for want of a descriptor), the pause ends the oldest lingering connection as a linger's
end does (no reset), and its close resumes accepting; a connection that starts lingering while
a client waits in a pause ends the same way. So lingering connections are bounded by
``max_connections``, as nginx's reusable connections are by ``worker_connections``, and never
keep a new client waiting; the metrics count them apart from the active ones.

Timeouts
--------
One periodic sweep (every ``sweep_interval`` seconds) ends connections whose
``deadline`` passed (protocols set it, e.g. the HTTP header-read timeout) or that were idle
for ``idle_timeout``. Per-request work is one float store, with no timer per connection.
Idle means that nothing arrived, no queued write completed and the peer took none of the
output: a connection with nothing stamped for half the timeout is sampled (the bytes its
peer's TCP acknowledged, ``TCP_INFO``; ``bytes_out`` where the socket is not TCP), and at the
timeout it is spared if that grew since (a download read slower than the send buffer drains
completes no write for a long time; a protocol that only writes never queues). A peer that
stopped reading is cut once its receive buffer is full and a timeout has passed. Sweeps must
come at least every half timeout for this to be exact; a later sample is given half a timeout.
Each is ended by its ``timed_out``: a protocol that opts in closes it gracefully (the HTTP
server closes an idle keep-alive connection with a FIN, and answers an unfinished request
``408``); anything else, and a connection whose queued output the peer does not read, are
aborted (RST). A graceful close that outlived its ``linger`` time is closed plainly (what the
kernel holds for the peer still reaches it). A lingering connection is bounded by its linger
deadline alone, not by the idle limit.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import select
import socket
from collections.abc import Callable
from typing import Any

from poolalloc.errors import PoolExhausted
from poolalloc.net._tcp_info import acked_bytes
from poolalloc.net.epoll.connection import Connection, ConnectionProtocol
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.metrics import flatten_stats
from poolalloc.net.transport import BaseConnection, all_acknowledged
from poolalloc.objects import ObjectPool

__all__ = ["TcpServer", "listen_socket"]

_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_PEER_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
#: The per-connection counters a server sums into its totals.
_COUNTED = ("requests_total", "bytes_in_total", "bytes_out_total", "errors_total")


def _taken(conn: BaseConnection[Any]) -> int:
    """How much of its output ``conn``'s peer has taken: what its TCP acknowledged, or, where
    the socket cannot say (not TCP), what was handed to the kernel."""
    acked = acked_bytes(conn.sock)
    return conn.bytes_out if acked is None else acked


def listen_socket(
    host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False, backlog: int = 1024
) -> socket.socket:
    """A non-blocking listening TCP socket; ``reuse_port`` lets N processes share the port.

    Example:
        >>> s = listen_socket(); s.getsockname()[0]
        '127.0.0.1'
        >>> s.close()

    :raises OSError: bind or listen failed (``EADDRINUSE``...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" takes IPv4 clients too, whatever the sysctl says
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class TcpServer:
    """Serve ``protocol_factory()`` protocols on a listening socket with pooled state.

    ``buffer_pool`` is a ``poolalloc.BufferPool`` (reads land in its leases); ``conn_pool`` an
    ``ObjectPool`` of :class:`Connection` (use :meth:`make_connection_pool`).

    Example:
        >>> import poolalloc
        >>> r = Reactor(); bufs = poolalloc.BufferPool(4096, capacity=64)
        >>> srv = TcpServer(r, MyProtocol, buffer_pool=bufs)  # doctest: +SKIP
        >>> srv.start(); r.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        reactor: Reactor,
        protocol_factory: Callable[[], ConnectionProtocol],
        *,
        buffer_pool: Any,
        conn_pool: Any = None,
        sock: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        idle_timeout: float = 60.0,
        high_water: int = 1 << 20,
        low_water: int = 1 << 18,
        accept_retry: float = 0.5,
        sweep_interval: float | None = None,
    ) -> None:
        self.reactor = reactor
        self.protocol_factory = protocol_factory
        self.buffer_pool = buffer_pool
        self.conn_pool = conn_pool if conn_pool is not None else self.make_connection_pool(None)
        self.sock = sock if sock is not None else listen_socket(host, port, reuse_port=reuse_port)
        self.sock.setblocking(False)
        host, port = self.sock.getsockname()[:2]
        self._address: tuple[str, int] = (host, port)
        self.idle_timeout = idle_timeout
        self.high_water, self.low_water = high_water, low_water
        self.accept_retry = accept_retry
        self.sweep_interval = sweep_interval or max(0.05, min(1.0, idle_timeout / 4))
        self.chunk_size = self._chunk_size(buffer_pool)
        self.connections: set[BaseConnection[Any]] = set()
        self.totals = dict.fromkeys(
            ("connections_total", "requests_total", "bytes_in_total", "bytes_out_total"), 0
        )
        self.totals.update(errors_total=0, accept_paused_total=0, timeouts_total=0)
        # Only the io_uring server queues accepted connections (and can drop some); the same
        # figures here keep both engines' metrics alike.
        self.totals["accept_dropped_total"] = 0
        self.totals["lingering_ended_total"] = 0
        self.accept_paused = False
        self._room_made = False  # a lingering connection was ended in this pause
        self._retry_timer: Any = None
        self._accept_more: Any = None  # the scheduled continuation of a full accept batch
        self._batch_pass = -1  # the loop pass that ran the last full batch
        self._sweeper: Any = None
        # per connection idle for half the idle timeout: (when, what its peer took by then)
        self._idle_seen: dict[BaseConnection[Any], tuple[float, int]] = {}
        #: The connections in their lingering close, oldest first (a dict keeps the order).
        self._lingering: dict[BaseConnection[Any], None] = {}
        self._closed = False
        #: After :meth:`stop_accepting`: the listener is gone, the connections are still served.
        self._stopped_accepting = False
        self._started = False

    @staticmethod
    def make_connection_pool(max_connections: int | None) -> Any:
        """An ``ObjectPool`` of :class:`Connection` objects, reset on return."""
        return ObjectPool(Connection, reset=Connection.reset, max_size=max_connections)

    @staticmethod
    def _chunk_size(pool: Any) -> int:
        lease = pool.acquire()
        try:
            return int(lease.nbytes)
        finally:
            lease.release()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (also once the listener is closed)."""
        return self._address

    @property
    def listening(self) -> bool:
        """Neither closed nor stopped accepting (the listener's fd is still open)."""
        return not (self._closed or self._stopped_accepting)

    def _check_startable(self) -> None:
        """Refuse a second start, and a start after close, in the loops' words.

        Started twice, epoll refused the listener's second registration (FileExistsError) and
        io_uring armed a second accept; closed, the listener's fd was -1 (a ValueError, or an
        OSError(EBADF) from the ring).

        :raises RuntimeError: the server is closed, or was started already.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._started:
            raise RuntimeError(f"{type(self).__name__} was started already")
        self._started = True

    def start(self) -> None:
        """Register the listener and the timeout sweep; accepts start with the reactor."""
        self._check_startable()
        self.reactor.register(self.sock.fileno(), self._on_acceptable, None)
        self._sweeper = self.reactor.call_later(self.sweep_interval, self._sweep)

    #: The most connections one loop pass accepts (see the module docstring).
    accept_batch = 64

    # ---- accepting ----
    def _on_acceptable(self) -> None:
        accept = self.sock.accept
        for _ in range(self.accept_batch):
            if not self.listening:
                return
            try:
                lease = self.conn_pool.acquire(timeout=0)
            except PoolExhausted:  # max_connections reached
                # Paused only for a client that is there (in the backlog), as io_uring's
                # accept pauses only for a connection it took: otherwise the listener stays
                # registered, so the next client's edge comes and a lingering slot is its.
                if _backlog(self.sock):
                    self._pause_accepting()
                return
            try:
                sock, _ = accept()
            except (BlockingIOError, InterruptedError):
                lease.release()
                return
            except OSError as exc:
                lease.release()
                if exc.errno in _OUT_OF_FDS:
                    self._pause_accepting()
                    return
                if exc.errno in _PEER_GONE:
                    continue
                raise
            try:
                self._adopt(lease, sock)
            except Exception as exc:
                # One connection's failure (its protocol raised on its first read, which
                # open() makes at once) must not end this loop: the listener is
                # edge-triggered, and the connections still in the backlog would wait for
                # the next one to arrive.
                self.reactor.report(exc, self)
        # A full batch: more may be queued, and the edge that announced them is spent.
        self._batch_pass = self.reactor.stats["wakeups"]
        if self._accept_more is None:
            self._accept_more = self.reactor.call_soon(self._continue_accepting)

    def _continue_accepting(self) -> None:
        self._accept_more = None
        if not self.listening or self.accept_paused:
            return  # resuming tries accept itself; closing ends it
        if self.reactor.stats["wakeups"] == self._batch_pass:
            # Scheduled from this pass's IO dispatch, so it would run in this same pass: the
            # next batch waits one pass, so timers and other callbacks run in between.
            self._accept_more = self.reactor.call_soon(self._continue_accepting)
            return
        self._on_acceptable()

    def _adopt(self, lease: Any, sock: socket.socket) -> None:
        conn: BaseConnection[Any] = lease.obj
        if sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):  # a peer that reset already: open() finds out
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol = conn.spare_protocol
        if protocol is None:
            protocol = conn.spare_protocol = self.protocol_factory()
        conn.pooled = lease
        conn.on_closed = self._connection_closed
        conn.on_lingering = self._connection_lingering
        conn.high_water, conn.low_water = self.high_water, self.low_water
        self.connections.add(conn)
        self.totals["connections_total"] += 1
        try:
            conn.open(self.reactor, sock, self.buffer_pool, protocol, self.chunk_size)
        except Exception as exc:
            # The peer must not be left connected to nothing (its protocol's connection_made
            # or first read raised, or the engine refused it): an adopted connection is
            # aborted, which hands the pooled object back; otherwise both go back here.
            if conn.sock is sock:
                if not conn.closed:
                    conn.abort(exc)
            else:
                self.connections.discard(conn)
                sock.close()
                lease.release()
            raise

    def _pause_accepting(self) -> None:
        """Stop accepting until a connection closes or ``accept_retry`` passes. A pause is
        always for a client that waits for the slot (or descriptor) that is missing: the oldest
        lingering connection ends to make room (see the module docstring)."""
        if self.accept_paused or self._stopped_accepting:
            return
        self.accept_paused = True
        self.totals["accept_paused_total"] += 1
        self._stop_listening()
        self._retry_timer = self.reactor.call_later(self.accept_retry, self._resume_accepting)
        if self._lingering:
            self._end_a_lingering()

    def _end_a_lingering(self) -> None:
        """Make room for a waiting client: its close brings the resume (_connection_closed),
        since accepting is paused; one per pause, the next pause ends the next one."""
        self._room_made = True
        self.totals["lingering_ended_total"] += 1
        self._lingering_to_end().end_linger()

    #: How many of the oldest lingering connections are looked at for one to end.
    _LINGER_CANDIDATES = 16

    def _lingering_to_end(self) -> BaseConnection[Any]:
        """The oldest lingering connection whose peer acknowledged all of our output (among the
        oldest few), else the oldest: closed while our answer is unacknowledged, a byte the peer
        sends afterwards makes the kernel reset the connection and drop what it still holds."""
        oldest = None
        for conn in itertools.islice(self._lingering, self._LINGER_CANDIDATES):
            if all_acknowledged(conn.sock):
                return conn
            if oldest is None:
                oldest = conn
        assert oldest is not None  # called with some lingering
        return oldest

    def _resume_accepting(self) -> None:
        if not self.accept_paused or not self.listening:
            return
        self.accept_paused = False
        self._room_made = False
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        self._start_listening()

    # The engine-specific halves of pausing (the io_uring server overrides these two).
    def _stop_listening(self) -> None:
        self.reactor.modify(self.sock.fileno(), None, None)

    def _start_listening(self) -> None:
        self.reactor.modify(self.sock.fileno(), self._on_acceptable, None)
        self._on_acceptable()  # edges that came while paused are gone: try now

    def _connection_lingering(self, conn: BaseConnection[Any]) -> None:
        self._lingering[conn] = None
        if self.accept_paused and not self._closed:
            # A client paused for may be waiting for this slot. Looked at after the current
            # callback: the connection's drain, which runs next, may find the EOF and close.
            self.reactor.call_soon(self._make_room)

    def _make_room(self) -> None:
        if (
            self.accept_paused
            and not self._closed
            and not self._room_made
            and self._lingering
            and self._client_waits()
        ):
            self._end_a_lingering()

    def _client_waits(self) -> bool:
        """Whether a client waits to be accepted (the io_uring server also has a queue)."""
        return _backlog(self.sock)

    def _connection_closed(self, conn: BaseConnection[Any]) -> None:
        self.connections.discard(conn)
        self._lingering.pop(conn, None)
        self._idle_seen.pop(conn, None)
        self._fold(conn)
        lease, conn.pooled = conn.pooled, None
        assert lease is not None  # set by _adopt
        reactor = self.reactor
        if self._closed or reactor.closed or getattr(reactor, "draining", False):
            lease.release()  # no later pass will come to run a deferred release
            return
        # Return to the pool after the current callback chain: callers up the stack still
        # look at this object's flags, and the pool's reset would clear them. The resume goes
        # after it whether or not accepting is paused now: a client arriving later in this
        # pass finds the pool full and pauses, and this slot is then the one it waits for.
        self.reactor.call_soon(lease.release)
        self.reactor.call_soon(self._resume_accepting)

    def _fold(self, conn: BaseConnection[Any]) -> None:
        _add_counts(self.totals, conn)

    # ---- timeouts ----
    def _sweep(self) -> None:
        now = self.reactor.now
        idle_limit = now - self.idle_timeout
        half_limit = now - self.idle_timeout / 2
        seen = self._idle_seen
        try:
            for conn in list(self.connections):
                if (conn.deadline and now > conn.deadline) or (
                    conn.last_active < half_limit
                    and not conn._lingering
                    and not self._output_moved(conn, now, idle_limit)
                ):
                    seen.pop(conn, None)
                    self.totals["timeouts_total"] += 1
                    try:
                        conn.timed_out()
                    except Exception as exc:  # a protocol's hook raised: the sweep goes on
                        self.reactor.report(exc, conn)
        finally:  # whatever raised, the next sweep comes
            if not self._closed:
                self._sweeper = self.reactor.call_later(self.sweep_interval, self._sweep)

    def _output_moved(self, conn: BaseConnection[Any], now: float, idle_limit: float) -> bool:
        """Whether ``conn``, with nothing read for half the idle timeout, is still in use: it
        is spared (True) until the idle limit, and past it when the peer took some of its
        output over the last half timeout or more (a download read slower than the kernel's
        send buffer drains completes no write of ours for a long time; a protocol that only
        writes never queues). Sampled twice per idle stretch, for idle connections only:
        nothing is stored per write. A sample taken late (a sweep that came after half the
        timeout) is given half a timeout before it decides."""
        seen = self._idle_seen
        sample = seen.get(conn)
        if sample is None or sample[0] < conn.last_active:  # none taken in this idle stretch
            seen[conn] = (now, _taken(conn))
            return True
        if conn.last_active >= idle_limit or now - sample[0] < self.idle_timeout / 2:
            return True
        taken = _taken(conn)
        if taken != sample[1]:  # spared for a timeout more, measured from this sample
            seen[conn] = (now, taken)
            conn.last_active = now
            return True
        return False

    # ---- metrics and teardown ----
    def metrics(self) -> dict[str, float]:
        """Totals plus live connections, and the pools' numeric stats.

        Example:
            >>> srv.metrics()["connections_active"]  # doctest: +SKIP
            0
        """
        out: dict[str, float] = dict(self.totals)
        for conn in self.connections:
            _add_counts(out, conn)
        out["connections_active"] = len(self.connections) - len(self._lingering)
        out["connections_lingering"] = len(self._lingering)
        out["accepting"] = int(not (self.accept_paused or self._stopped_accepting))
        out["accept_waiting"] = self._accept_waiting()
        out.update(flatten_stats("buffer_pool", self.buffer_pool.stats()))
        out.update(flatten_stats("connection_pool", self.conn_pool.stats()))
        return out

    def _accept_waiting(self) -> int:
        return 0  # waiting connections stay in the kernel's backlog, unaccepted

    def stop_accepting(self) -> None:
        """Close the listening socket and serve on (a graceful stop's first step): a client
        that comes now is refused by the kernel, one in the backlog is reset, the connections
        already accepted keep their timeouts. Idempotent; :meth:`close` ends the rest."""
        if not self.listening:
            return
        self._stopped_accepting = True
        self.accept_paused = False
        for timer in (self._retry_timer, self._accept_more):
            if timer is not None:
                timer.cancel()
        self._retry_timer = self._accept_more = None
        self._close_listener()

    def _close_listener(self) -> None:
        """The engine's half of :meth:`stop_accepting` (the io_uring server cancels its accept)."""
        if self.reactor.is_registered(self.sock.fileno()):
            self.reactor.unregister(self.sock.fileno())
        self.sock.close()

    def close(self, *, abort: bool = True) -> None:
        """Stop accepting; abort (or gracefully close) every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._retry_timer, self._sweeper, self._accept_more):
            if timer is not None:
                timer.cancel()
        if self.reactor.is_registered(self.sock.fileno()):
            self.reactor.unregister(self.sock.fileno())
        self.sock.close()
        self._idle_seen.clear()
        for conn in list(self.connections):
            conn.abort() if abort else conn.close()


def _backlog(sock: socket.socket) -> bool:
    """Whether a connection waits in listening ``sock``'s backlog (readable)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _add_counts(totals: dict[str, Any], conn: BaseConnection[Any]) -> None:
    """Add one connection's counters (its bytes, its protocol's requests and errors)."""
    protocol = conn.protocol
    counts = (
        getattr(protocol, "requests", 0),
        conn.bytes_in,
        conn.bytes_out,
        getattr(protocol, "errors", 0),
    )
    for name, count in zip(_COUNTED, counts, strict=True):
        totals[name] += count
