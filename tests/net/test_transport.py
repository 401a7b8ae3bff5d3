"""The bookkeeping both engines' connections share (``BaseConnection``), on both engines.

Every test runs once on the epoll Reactor and once on the io_uring Proactor (skipped only
when the probe says io_uring cannot run here), over real loopback sockets, with the loop
driven pass by pass in the test's thread.
"""

from __future__ import annotations

import errno
import fcntl
import resource
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import poolalloc
from poolalloc.net.epoll.connection import Connection
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer
from poolalloc.net.transport import BaseConnection, HeldBytes

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


class Recorder:
    """Records what the connection hands it; ``on_data`` decides what to do with a read."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.reads: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.eof = 0
        self.on_data: Callable[[Recorder, bytes], None] | None = None
        self.current: Any = None  # the lease being handed over, while on_data runs

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, nbytes: int) -> bool:
        data = lease.view[:nbytes].tobytes()
        self.reads.append(data)
        self.current = lease
        try:
            if self.on_data is not None:
                self.on_data(self, data)
        finally:
            self.current = None
        return False

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class Harness:
    """A server with one Recorder per connection on the chosen engine's loop."""

    def __init__(self, engine: str, **options: Any) -> None:
        if engine == "uring":
            from poolalloc.net.uring.proactor import Proactor, available

            ok, reason = available()
            if not ok:
                pytest.skip(f"io_uring unavailable: {reason}")
            self.loop: Reactor = Proactor(ring_buffers=64, initial_buffers=8)
        else:
            self.loop = Reactor()
        self.errors: list[BaseException] = []
        self.loop.exception_handler = lambda exc, where: self.errors.append(exc)
        self.pool = poolalloc.BufferPool(4096, capacity=128, name="transport-test")
        self.protocols: list[Recorder] = []
        server_class = getattr(self.loop, "server_class", TcpServer)
        self.server = server_class(self.loop, self._protocol, buffer_pool=self.pool, **options)
        self.server.start()
        self.clients: list[socket.socket] = []

    def _protocol(self) -> Recorder:
        proto = Recorder()
        self.protocols.append(proto)
        return proto

    def connect(self) -> tuple[socket.socket, Recorder]:
        made = len(self.protocols)
        client = socket.create_connection(self.server.address, timeout=5)
        self.clients.append(client)
        self.until(lambda: len(self.protocols) > made and self.protocols[-1].conn is not None)
        return client, self.protocols[-1]

    def until(self, condition: Callable[[], bool], seconds: float = 10.0) -> None:
        """Run loop passes until ``condition()`` holds (failing after ``seconds``)."""
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            self.loop.call_later(0.002, lambda: None)  # bound each pass's wait
            self.loop.run_once()

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.until(lambda: time.monotonic() >= end, seconds + 5)

    def receive(self, client: socket.socket, nbytes: int | None = None) -> bytes:
        """Read ``nbytes`` from ``client`` (None: until EOF) while the loop runs."""
        got = bytearray()
        client.setblocking(False)
        deadline = time.monotonic() + 20
        while nbytes is None or len(got) < nbytes:
            assert time.monotonic() < deadline, f"only {len(got)} bytes came"
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                self.spin(0.002)
                continue
            if not chunk:
                assert nbytes is None, "peer closed early"
                break
            got += chunk
        return bytes(got)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close()
        self.spin(0.05)
        self.loop.close()
        assert self.pool.outstanding() == 0
        self.pool.close()
        assert self.errors == []


@pytest.fixture(params=["epoll", "uring"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(engine: str) -> Iterator[Harness]:
    h = Harness(engine)
    yield h
    h.close()


def test_the_engines_connections_are_siblings_of_one_base() -> None:
    from poolalloc.net.uring.connection import UringConnection

    assert issubclass(Connection, BaseConnection)
    assert issubclass(UringConnection, BaseConnection)
    assert not issubclass(UringConnection, Connection)
    # The epoll engine's halves are not carried by the io_uring connection.
    for name in ("_on_readable", "_retry_later", "_flush", "_send_views", "_send_file"):
        assert hasattr(Connection, name)
        assert not hasattr(UringConnection, name), name


def test_bytes_are_counted_both_ways_and_folded_into_the_totals(harness: Harness) -> None:
    client, proto = harness.connect()
    proto.on_data = lambda p, data: p.conn.write(data)  # echo
    payload = b"x" * 10000
    client.sendall(payload)
    assert harness.receive(client, len(payload)) == payload
    conn = proto.conn
    assert (conn.bytes_in, conn.bytes_out) == (len(payload), len(payload))
    client.close()
    harness.clients.remove(client)
    harness.until(lambda: bool(proto.lost))
    metrics = harness.server.metrics()
    assert metrics["bytes_in_total"] == len(payload)
    assert metrics["bytes_out_total"] == len(payload)


def test_bytes_out_is_what_the_socket_took_from_a_peer_that_never_reads(
    harness: Harness, engine: str
) -> None:
    """``bytes_out`` counts bytes the kernel took, not bytes written and still waiting: small
    writes to a peer that never reads (io_uring: the ring's copied sends, counted when they
    complete) never count more than the server's send queue and the peer's receive queue hold,
    on both engines. After the peer hangs up, the totals keep that figure."""
    made = len(harness.protocols)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, at once
    client.settimeout(5)
    client.connect(harness.server.address)
    harness.clients.append(client)
    harness.until(lambda: len(harness.protocols) > made and harness.protocols[-1].conn is not None)
    proto = harness.protocols[-1]
    conn = proto.conn
    assert conn.sock is not None
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"z" * 4096
    written = 16 * len(chunk)  # io_uring: one copied send and 60 KiB behind it
    for _ in range(16):
        conn.write(chunk)
    harness.spin(0.3)  # the sockets fill up; the rest waits in the server
    unsent = struct.unpack("i", fcntl.ioctl(conn.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    unread = struct.unpack("i", fcntl.ioctl(client.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    took = unsent + unread
    assert 0 < took < written  # the peer's window closed: some of it is still in the server
    counted = conn.bytes_out
    # epoll counts each send() at its return. A copied send (io_uring) counts at completion,
    # and the one in flight (what waited behind the first, 60 KiB) may have moved part already.
    slack = 0 if engine == "epoll" else 15 * len(chunk)
    assert took - slack <= counted <= took
    client.close()  # a hang-up with unread data: a reset, and the server drops the rest
    harness.clients.remove(client)
    harness.until(lambda: bool(proto.lost))
    assert took - slack <= harness.server.metrics()["bytes_out_total"] <= took


def test_paused_input_is_held_and_delivered_first_and_in_order_on_resume(
    harness: Harness,
) -> None:
    """A protocol that pauses mid-read hands back the unread rest; what arrives while paused
    waits behind it. The rest is bytes (it pins no pooled block) and comes first, as
    HeldBytes; then what arrived, in order. On epoll nothing arrives while paused; on io_uring
    a receive that completed before the pause's cancel is held as its pooled block, counted
    in ``held_blocks`` (tests/net/uring/test_held_receives.py bounds them)."""
    client, proto = harness.connect()
    kinds: list[type] = []

    def first_read(p: Recorder, data: bytes) -> None:
        p.conn.pause_reading()
        p.conn.hold_back(data[3:])  # "consumed" three bytes, the rest waits
        p.on_data = lambda p, data: kinds.append(type(p.conn))

    proto.on_data = first_read
    harness.spin(0.05)
    idle = harness.pool.outstanding()  # io_uring: what its buffer ring holds
    client.sendall(b"abcdef")
    harness.until(lambda: len(proto.reads) == 1)
    client.sendall(b"ghi")
    harness.spin(0.1)  # io_uring: the late read lands, and is held
    assert proto.reads == [b"abcdef"]
    assert proto.conn.paused
    # held input pins no pooled block beyond the receives that raced the pause (io_uring)
    assert harness.pool.outstanding() <= idle + proto.conn.held_blocks
    assert proto.conn.held_blocks <= 1
    original = Recorder.buffer_received
    seen: list[type] = []

    def spy(self: Recorder, lease: Any, nbytes: int) -> bool:
        seen.append(type(lease))
        return original(self, lease, nbytes)

    proto.buffer_received = spy.__get__(proto)  # type: ignore[method-assign]
    proto.conn.resume_reading()
    harness.until(lambda: b"".join(proto.reads) == b"abcdefdefghi")
    assert proto.reads[1] == b"def"  # the protocol's rest came first
    assert seen[0] is HeldBytes
    assert not proto.conn.paused


def test_the_write_queue_pauses_past_high_water_and_resumes_below_low_water(
    harness: Harness,
) -> None:
    client, proto = harness.connect()
    conn = proto.conn
    conn.high_water, conn.low_water = 64 << 10, 16 << 10
    block = b"y" * (256 << 10)
    sent = 0
    while not conn.paused:  # a peer that does not read: the queue fills
        conn.write(block)
        sent += len(block)
        harness.spin(0.005)
        assert sent < 1 << 30, "never paused"
    assert conn.queued > conn.high_water
    assert len(harness.receive(client, sent)) == sent
    harness.until(lambda: not conn.paused)
    assert conn.queued == 0
    assert conn.bytes_out == sent


def test_close_flushes_then_notifies_once_and_refuses_later_writes(harness: Harness) -> None:
    client, proto = harness.connect()
    conn = proto.conn
    closed: list[Any] = []
    on_closed = conn.on_closed

    def notify(c: Any) -> None:
        closed.append(c)
        on_closed(c)

    conn.on_closed = notify
    body = b"z" * 300000
    conn.write(body)
    conn.close()
    assert conn.is_closing()
    lease = harness.pool.acquire()
    with pytest.raises(ConnectionError):
        conn.write(b"late", owner=lease)
    assert lease.released  # the refused write's owner was released, not leaked
    assert harness.receive(client) == body  # every byte, then the graceful close's FIN
    client.close()
    harness.clients.remove(client)
    harness.until(lambda: bool(proto.lost))
    assert proto.lost == [None]
    assert closed == [conn]


def test_abort_releases_queued_owners_and_resets_the_peer(harness: Harness) -> None:
    client, proto = harness.connect()
    conn = proto.conn
    leases = []
    for _ in range(32):
        lease = harness.pool.acquire()
        lease[:] = b"q" * lease.nbytes
        leases.append(lease)
        conn.write(lease.view, owner=lease)
    conn.abort(RuntimeError("stop"))
    assert conn.closed
    harness.spin(0.05)  # io_uring: the cancelled sends' completions come back
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], RuntimeError)
    assert all(lease.released for lease in leases)
    with pytest.raises(ConnectionResetError):
        harness.receive(client)


def test_a_deadline_times_the_connection_out(engine: str) -> None:
    h = Harness(engine, sweep_interval=0.02)
    try:
        _, proto = h.connect()
        proto.conn.set_deadline(0.05)
        assert proto.conn.deadline > 0
        h.until(lambda: bool(proto.lost))
        assert isinstance(proto.lost[0], TimeoutError)
        assert h.server.metrics()["timeouts_total"] == 1
        _, other = h.connect()
        other.conn.set_deadline(0.05)
        other.conn.set_deadline(None)  # cleared: only the idle limit applies
        h.spin(0.2)
        assert other.lost == []
    finally:
        h.close()


@pytest.mark.parametrize("size", [1000, 300_000])
def test_a_reply_closed_after_the_peer_half_closed_is_delivered_whole(
    harness: Harness, size: int
) -> None:
    """A client sends its request and shuts down its writing side (``nc -N``, HTTP/1.0
    clients): its EOF must not cut off the reply that close() is still flushing."""
    client, proto = harness.connect()
    reply = bytes(range(256)) * (size // 256) + bytes(size % 256)

    def answer(p: Recorder, data: bytes) -> None:
        p.conn.write(reply)
        p.conn.close()

    proto.on_data = answer
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    assert harness.receive(client) == reply
    harness.until(lambda: bool(proto.lost))
    assert proto.lost == [None]


def test_bytes_written_just_before_an_abort_never_reach_a_socket_that_reuses_the_fd(
    harness: Harness,
) -> None:
    """The io_uring engine sends later, at the loop's next submission: a send queued by the
    pass that aborts a connection must not land on whatever socket takes its fd number."""
    client, proto = harness.connect()
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def write_then_abort(p: Recorder, data: bytes) -> None:
        p.conn.write(b"SECRET-FOR-THE-FIRST-CLIENT")
        p.conn.abort()
        pairs.append(socket.socketpair())  # takes the lowest free fds: the one just closed

    proto.on_data = write_then_abort
    client.sendall(b"go")
    harness.until(lambda: bool(pairs) and bool(proto.lost))
    harness.spin(0.1)
    a, b = pairs[0]
    b.setblocking(False)
    try:
        leaked = b.recv(1024)
    except BlockingIOError:
        leaked = b""
    a.close()
    b.close()
    assert b"SECRET" not in leaked


def test_a_protocol_error_on_a_read_aborts_and_returns_the_lease(harness: Harness) -> None:
    client, proto = harness.connect()

    def fail(p: Recorder, data: bytes) -> None:
        raise RuntimeError("protocol bug")

    proto.on_data = fail
    harness.spin(0.05)
    idle = harness.pool.outstanding()  # io_uring: what its buffer ring holds
    client.sendall(b"boom")
    harness.until(lambda: bool(proto.lost))
    harness.spin(0.05)
    assert [type(e) for e in harness.errors] == [RuntimeError]
    harness.errors.clear()
    assert harness.pool.outstanding() <= idle


def test_held_bytes_export_their_bytes_by_the_buffer_protocol() -> None:
    """A HeldBytes is handed to ``buffer_received`` in place of a pool Buffer: it exports its
    bytes the same way on every Python version, read-only."""
    held = HeldBytes(b"GET / HTTP/1.1\r\n\r\n")
    assert bytes(held) == b"GET / HTTP/1.1\r\n\r\n"
    with memoryview(held) as mv:
        assert mv.readonly
        assert mv.nbytes == held.nbytes == 18
    a, b = socket.socketpair()
    with a, b:
        assert a.send(held) == 18
        assert b.recv(64) == bytes(held)
    # `view` is fresh per access, as a pool Buffer's: releasing one leaves the lease whole
    with held.view as view:
        assert view.tobytes() == held.data
    assert held.view.tobytes() == bytes(held) == held.data
    with pytest.raises(AttributeError, match="read-only"):
        held.view = memoryview(b"other")


def test_a_pass_cut_short_by_keyboardinterrupt_loses_no_connections_input(
    harness: Harness,
) -> None:
    """Ctrl-C lands in whatever Python code runs, most often a protocol's callback, and the
    loop's ``run`` ends with it. A program that then runs the loop again (to close gracefully)
    must find every connection's input still coming, the interrupted one's included:
    edge-triggered epoll reports an arrival once, and io_uring's completions are consumed when
    reaped. Each peer sends several blocks' worth, so the interrupted read leaves some behind."""
    pairs = [harness.connect() for _ in range(4)]
    interrupted: list[int] = []

    def interrupt_once(proto: Recorder, data: bytes) -> None:
        if not interrupted:
            interrupted.append(harness.protocols.index(proto))
            raise KeyboardInterrupt

    for _, proto in pairs:
        proto.on_data = interrupt_once
    firsts = [bytes([65 + i]) * 10_000 for i in range(len(pairs))]  # 3 blocks of 4 KiB each
    for (client, _), payload in zip(pairs, firsts, strict=True):
        client.sendall(payload)
    time.sleep(0.05)  # every arrival is in: the next pass sees them all in one batch
    with pytest.raises(KeyboardInterrupt):
        harness.until(lambda: all(proto.reads for _, proto in pairs))
    assert len(interrupted) == 1
    # nothing new arrives: what the cut pass left must come by itself (a peer waiting for its
    # reply sends nothing more)
    harness.until(lambda: [b"".join(proto.reads) for _, proto in pairs] == firsts)
    for i, (client, _) in enumerate(pairs):
        client.sendall(b"second %d;" % i)
    expected = [payload + b"second %d;" % i for i, payload in enumerate(firsts)]
    harness.until(lambda: [b"".join(proto.reads) for _, proto in pairs] == expected)


@pytest.mark.parametrize("keep", ["slice", "export", "array"])
def test_views_of_a_read_kept_past_the_call_are_never_written_over(
    harness: Harness, keep: str
) -> None:
    """A protocol that returns False but keeps a view of what it was given (a slice of
    ``lease.view``, ``memoryview(lease)``, a numpy array) keeps seeing those bytes: the block
    stays out of the ring and the pool until the last view is gone, as a pool Buffer's does."""
    kept: list[tuple[Any, bytes]] = []

    def keep_a_view(proto: Recorder, data: bytes) -> None:
        lease = proto.current
        if keep == "slice":
            view: Any = lease.view[: len(data)]
        elif keep == "export":
            view = memoryview(lease)[: len(data)]
        else:
            view = np.frombuffer(lease, dtype=np.uint8, count=len(data))
        kept.append((view, data))

    client, proto = harness.connect()
    proto.on_data = keep_a_view
    for i in range(60):  # 90 KB: the ring's staged blocks (8 x 4 KiB) are all used again
        client.sendall(bytes([65 + i % 26]) * 1500)
        harness.until(lambda i=i: len(b"".join(proto.reads)) == 1500 * (i + 1))  # type: ignore[misc]
    proto.on_data = None
    assert b"".join(data for _, data in kept) == b"".join(proto.reads)
    for view, data in kept:
        assert bytes(view) == data, "a later read wrote over bytes a view still shows"
    del view
    assert harness.pool.outstanding() > 0
    kept.clear()  # the blocks go back as the views go (the harness checks at its close)


def test_a_protocols_own_pause_outlasts_the_write_queue_draining(harness: Harness) -> None:
    """Only a pause the write queue caused ends when the queue drains: a protocol that paused
    for reasons of its own (waiting on a backend, say) and wrote meanwhile stays paused until
    it resumes."""
    client, proto = harness.connect()
    reply = b"r" * (4 << 20)  # more than the socket takes at once: it queues on both engines

    def pause_and_reply(proto: Recorder, data: bytes) -> None:
        proto.conn.pause_reading()
        proto.conn.write(memoryview(reply))

    proto.on_data = pause_and_reply
    client.sendall(b"first")
    assert harness.receive(client, len(reply)) == reply  # the queue drained below low_water
    proto.on_data = None
    client.sendall(b"second")
    harness.spin(0.1)
    assert proto.reads == [b"first"]  # still the protocol's pause
    assert proto.conn.paused
    proto.conn.resume_reading()
    harness.until(lambda: proto.reads == [b"first", b"second"])


def test_a_protocol_error_on_eof_aborts_the_connection(harness: Harness) -> None:
    """As for an error on a read: the connection ends at once (before, on epoll, it stayed
    open, its peer waiting for the idle timeout) and the loop reports the error."""
    client, proto = harness.connect()

    def fail() -> bool:
        raise RuntimeError("protocol bug")

    proto.eof_received = fail  # type: ignore[method-assign]
    client.shutdown(socket.SHUT_WR)
    harness.until(lambda: bool(proto.lost))
    assert [type(e) for e in proto.lost] == [RuntimeError]
    assert [type(e) for e in harness.errors] == [RuntimeError]
    harness.errors.clear()
    assert not harness.server.connections


def test_a_protocol_error_in_connection_lost_still_returns_the_pooled_connection(
    harness: Harness,
) -> None:
    """The loop reports the error; the server still takes the connection back (before, its
    pooled object stayed in use for good, and the server counted it as active)."""
    client, proto = harness.connect()

    def fail(exc: BaseException | None) -> None:
        proto.lost.append(exc)
        raise RuntimeError("protocol bug")

    proto.connection_lost = fail  # type: ignore[method-assign]
    client.close()
    harness.until(lambda: bool(proto.lost))
    harness.spin(0.05)
    assert [type(e) for e in harness.errors] == [RuntimeError]
    harness.errors.clear()
    assert not harness.server.connections
    assert harness.server.conn_pool.stats().in_use == 0


def test_a_loop_closed_before_its_server_returns_the_pooled_connections(engine: str) -> None:
    """The Proactor's close aborts the connections left open; the Reactor's leaves them to
    their owner, who may abort them after it. Either way the pooled connection goes straight
    back: no later pass will come to run a deferred release (before, the Proactor's went
    back only when the garbage collector found the dropped callback, and an abort after the
    Reactor's close raised ``RuntimeError("Reactor is closed")`` from the server's hook)."""
    h = Harness(engine)
    client, proto = h.connect()
    try:
        h.loop.close()
        if not proto.lost:  # the Reactor: the connection is its owner's to end
            proto.conn.abort()
        assert len(proto.lost) == 1
        stats = h.server.conn_pool.stats()
        assert (stats.in_use, stats.gc_returns) == (0, 0)
        assert not h.server.connections
    finally:
        h.server.close()
        client.close()
    assert h.pool.outstanding() == 0
    h.pool.close()
    assert h.errors == []


def test_a_file_write_of_a_bad_descriptor_ends_the_connection(harness: Harness) -> None:
    """A descriptor that is not open (a file closed before its ``write_file``): the connection
    is aborted with the error, on both engines. Before, on epoll, closing the range's fd raised
    again inside the abort, which stopped half-way: the socket stayed open, the protocol never
    heard of it (the peer waited for good) and the server's close could not end it."""
    client, proto = harness.connect()
    bad = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # never an open descriptor
    proto.conn.write_file(bad, 0, 10)
    harness.until(lambda: bool(proto.lost))
    harness.spin(0.05)
    assert [getattr(e, "errno", None) for e in proto.lost] == [errno.EBADF]
    harness.errors.clear()  # io_uring's flush reports it to the loop as well
    with pytest.raises(ConnectionResetError):  # aborted: the peer is not left waiting
        harness.receive(client)
    assert not harness.server.connections


def test_a_write_of_a_strided_view_is_refused_at_the_call(harness: Harness) -> None:
    """Both engines refuse a view that is not C-contiguous when it is written, and the
    connection goes on. Before, io_uring queued it and aborted the connection at the flush."""
    client, proto = harness.connect()
    with pytest.raises(BufferError, match="C-contiguous"):
        proto.conn.write(memoryview(bytes(range(20)))[::2])
    proto.conn.write(b"still open")
    assert harness.receive(client, 10) == b"still open"
    assert proto.lost == []


@pytest.mark.parametrize("reply", [b"bye", b"x" * 300_000])
def test_a_reply_written_in_the_pass_that_stops_the_loop_goes_out(
    harness: Harness, reply: bytes
) -> None:
    """``stop()`` from the callback that wrote: once ``run()`` returns the kernel has what fit
    (epoll sends at the write). Before, io_uring kept it queued for the next pass, so the
    peer got nothing while the loop was stopped."""
    client, proto = harness.connect()

    def answer(p: Recorder, data: bytes) -> None:
        p.conn.write(reply)
        harness.loop.stop()

    proto.on_data = answer
    client.sendall(b"go")
    harness.loop.run()
    client.settimeout(5)
    assert client.recv(3) == reply[:3]


def test_a_connection_without_a_server_ends_its_linger_in_time(engine: str) -> None:
    """``close()`` lingers for the peer's EOF at most ``linger`` seconds, as documented, also
    for a connection a program opened itself (a client): no server's sweep looks at its
    deadline, so a timer does. Before, it lingered for good on a peer that stayed silent."""
    loop: Reactor
    if engine == "uring":
        from poolalloc.net.uring.proactor import Proactor, available

        if not available()[0]:
            pytest.skip("io_uring unavailable")
        loop = Proactor(ring_buffers=64, initial_buffers=8)
    else:
        loop = Reactor()
    pool = poolalloc.BufferPool(4096, capacity=8)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()  # stays open and silent
    try:
        proto = Recorder()
        conn = getattr(loop, "connection_class", Connection)()
        conn.linger = 0.1
        conn.open(loop, client, pool, proto, 4096)
        conn.close()
        deadline = time.monotonic() + 5
        while not proto.lost and time.monotonic() < deadline:
            loop.call_later(0.01, lambda: None)
            loop.run_once()
        assert proto.lost == [None]
        peer.settimeout(1)
        assert peer.recv(1) == b""  # a FIN: the linger's end is not a reset
    finally:
        peer.close()
        listener.close()
        loop.close()
    assert pool.outstanding() == 0
    pool.close()


@pytest.mark.parametrize("where", ["hook", "held"])
def test_a_protocol_error_on_resume_aborts_the_connection(harness: Harness, where: str) -> None:
    """An exception from the protocol's optional ``resume_reading`` hook, or from its
    ``buffer_received`` for input it held back, aborts the connection and the loop reports it,
    as for a fresh read. Before, the connection stayed open, unpaused but never read again
    (its held input stuck), until the idle timeout."""
    client, proto = harness.connect()

    def fail(*args: Any) -> None:
        raise RuntimeError("protocol bug")

    def first_read(p: Recorder, data: bytes) -> None:
        p.conn.pause_reading()
        p.conn.hold_back(data[3:])
        if where == "hook":
            p.resume_reading = fail  # type: ignore[attr-defined]
        else:
            p.on_data = fail

    proto.on_data = first_read
    client.sendall(b"abcdef")
    harness.until(lambda: len(proto.reads) == 1)
    proto.conn.resume_reading()
    harness.until(lambda: bool(proto.lost), 3)
    assert [type(e) for e in proto.lost] == [RuntimeError]
    assert [type(e) for e in harness.errors] == [RuntimeError]
    harness.errors.clear()
    assert not harness.server.connections


def test_a_connection_back_in_its_pool_refuses_work_plainly(harness: Harness) -> None:
    """A protocol that keeps its connection past ``connection_lost`` (a relay closing its
    other side) finds it closed: ``close`` and ``abort`` do nothing and ``write`` raises
    ``ConnectionError``. Before, the pooled object, reset, looked open, and each failed on
    its missing socket (an ``AssertionError`` on epoll, an ``AttributeError`` on io_uring)."""
    client, proto = harness.connect()
    conn = proto.conn
    client.close()
    harness.until(lambda: bool(proto.lost))
    harness.spin(0.05)  # the server hands the object back to its pool
    assert harness.server.conn_pool.stats().in_use == 0
    assert conn.closed
    conn.close()
    conn.abort()
    with pytest.raises(ConnectionError):
        conn.write(b"late")
    assert harness.server.conn_pool.stats().in_use == 0
