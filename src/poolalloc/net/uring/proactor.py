"""The io_uring Proactor: the Reactor's interface; the kernel fills receives from a BufferPool.

Theory of operation
===================

Some facts about io_uring
-------------------------
* A Reactor asks "which fds are ready?" and then makes one system call per read and per write.
  A Proactor hands the kernel whole operations and later collects their results. io_uring does
  this through two rings shared with the kernel: we write submission entries (SQEs), the kernel
  writes completion entries (CQEs). One ``io_uring_enter`` submits every queued SQE *and* waits
  for completions, so a loop pass costs one system call however many sockets took part.
* Multishot operations (Linux 6.0): one accept SQE yields a CQE per new connection, one receive
  SQE a CQE per arrival, until an error or ``ENOBUFS`` ends it (the CQE lacks ``F_MORE``).
* Provided-buffer rings (``IORING_REGISTER_PBUF_RING``, 5.19): a ring of ``{addr, len, bid}``
  entries shared with the kernel. A receive with buffer selection takes a buffer only when data
  arrives, so an idle connection pins no memory, exactly like the Reactor's read-when-ready.
  The CQE names the buffer by its id. When the ring is empty the receive ends with
  ``ENOBUFS`` and the bytes stay queued in the socket.
* ``SEND_ZC`` posts two CQEs: the result, then a notification (``F_NOTIF``) once the kernel no
  longer reads the pages. Only then may the buffer be reused. Over loopback the kernel copies
  anyway (a deferred copy), and for small writes the page pinning costs more than a copy, so it
  is used only above ``zc_threshold`` (Netty disables it by default for the same reasons).
* Rings are per process. After ``fork()`` the child inherits the descriptor but must not use
  it: the C side maps the rings ``MADV_DONTFORK`` and refuses (``ECHILD``) every call on an
  inherited ring. A child builds its own :class:`Proactor`.
* Closing a socket does not end the operations in flight on it (they hold a file reference):
  a multishot receive on a closed fd would live as long as the ring. Every close therefore
  cancels (``IORING_OP_ASYNC_CANCEL``) the connection's operations, and the leases they use go
  back to the pool only after their final CQE.

What does this mean for us?
---------------------------
* :class:`Proactor` *is* a :class:`~poolalloc.net.epoll.reactor.Reactor` (timers, ``call_soon``,
  signals, ``register`` for any fd), whose wait is ``io_uring_enter`` instead of
  ``epoll_wait``. The Reactor's epoll set stays, watched by one multishot poll SQE on the epoll
  fd, so the eventfd wakeup, signals and any registered fd work unchanged.
* Sockets go through the ring: :class:`~poolalloc.net.uring.connection.UringConnection` has the
  Reactor connection's interface (protocols cannot tell the engines apart) and
  :class:`~poolalloc.net.uring.server.UringTcpServer` accepts with a multishot accept.
* Each completion's ``user_data`` is ``token << 8 | kind``: the token names the object that
  owns the operation (a connection, a listener), the kind which operation it was. Tokens are
  never reused, so a late CQE of a closed connection cannot reach the next user of the same
  pooled connection object.
* Completions are copied in C into an array of ``{user_data, res, flags}``; Python walks it
  with ``struct.iter_unpack``. No C-to-Python callback. A negative ``res`` becomes an exception
  in one place, :func:`poolalloc.net.uring.ring.cqe_error`.
* Python is entered once per batch, and per batch it should see only what a protocol must
  see. Two kinds of completion used to cost Python work per request for bookkeeping alone,
  and are now handled in C while the completion queue is reaped:

  - *Small writes are the ring's.* ``bytes`` of at most ``CSEND_MAX`` (16 KiB) written on a
    connection with nothing queued are copied by C (:meth:`Ring.csend
    <poolalloc.net.uring.ring.Ring.csend>`) and sent at once; what is written while that send
    is in flight is appended to a C buffer (at most ``CSEND_PENDING_MAX``, 64 KiB) and sent
    when it completes, in order. Nothing is pinned in Python, and a send that completed in
    full never reaches Python. Python hears of these sends only when one failed (the
    connection aborts) or when it asked to: a write that cannot be copied (a lease, a file, a
    large or a declined one) queues as before, but its flush waits for the copied bytes to be
    out (``csend_busy`` asks C for one event then), and so does a graceful close before its
    ``shutdown``. Backpressure is unchanged: past 64 KiB in C, writes queue in Python, where
    ``high_water`` pauses reading as on the Reactor.
  - *Receive buffers nobody kept go straight back.* When the protocol returns False from
    ``buffer_received`` the block is not released to the pool and acquired again: its bid is
    appended to the pool ring's ``recycle_bids`` and one C call per pass
    (``pa_uring_bufring_readd``) puts every such block back under its bid and publishes the
    ring. A protocol that keeps the lease takes it out of the ring as before.

  A batch is walked in C (``poolalloc.net.uring._fastpath.complete``): the common receive (an
  open connection's bytes in an incremental ring, its receive still armed) goes straight to
  ``buffer_received`` as the ring's lent slice, every other completion to
  :meth:`Proactor._complete_one`, the Python path. What is left per request in Python: the
  protocol, and one ``write`` whose copied send is a direct C call.
* A ``single_issuer`` ring enters the kernel by a registered ring fd
  (``IORING_REGISTER_RING_FDS``, :attr:`Ring.registered_index
  <poolalloc.net.uring.ring.Ring.registered_index>`), which spares the file-table lookup of
  every ``io_uring_enter``. The registration belongs to the registering thread, so only a
  ring bound to one thread uses it, and only from that thread; a kernel that refuses it enters
  by fd.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from threading import get_ident
from typing import Any, Protocol

from poolalloc.net.epoll.connection import ReadPool
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.uring import _fastpath
from poolalloc.net.uring._buffers import PoolRing
from poolalloc.net.uring._fastpath import complete
from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.ring import CQE_F_MORE, ProbeResult, Ring, probe
from poolalloc.net.uring.server import UringTcpServer

__all__ = ["Proactor", "available", "probe_result"]

_KIND_BITS = 8
#: What the kernel may still read or write after a Proactor closed with operations it could not
#: end within the drain's limit (a SEND_ZC whose notification waits on a peer that never reads
#: keeps its pages pinned until the orphaned socket is gone): kept for the life of the process,
#: never given back to a pool whose next user would overwrite bytes still to be transmitted.
_STRANDED: list[Any] = []
_EPOLL_TOKEN = 1
# what the batch walk in C needs to take the common receive as the Python path would (the
# ring's module gave it the ring's part)
_fastpath.setup(UringConnection._on_recv, UringConnection)
_CANCEL_TOKEN = 2
_FIRST_TOKEN = 16


class RingTarget(Protocol):
    """An owner of ring operations: ``handlers[kind](owner, res, flags)`` gets each completion;
    ``inflight`` says how many operations are still out."""

    inflight: int

    @property
    def handlers(self) -> Sequence[Callable[[Any, int, int], None]]: ...


@functools.cache
def probe_result() -> ProbeResult:
    """The result of the run-time probe, cached (``probe_result.cache_clear()`` probes again).

    Example:
        >>> isinstance(probe_result().ok, bool)
        True
    """
    try:
        return probe()
    except (ImportError, OSError) as exc:  # no native module, or the probe itself failed
        code = getattr(exc, "errno", None) or errno.ENOSYS
        return ProbeResult(code, str(exc), 0, 0, False, False, -1, -1, 0)


def available() -> tuple[bool, str]:
    """Whether the io_uring Proactor can run here, and why not when it cannot.

    Example:
        >>> ok, reason = available(); isinstance(reason, str)
        True
    """
    result = probe_result()
    return result.ok, result.reason


class Proactor(Reactor):
    """An io_uring event loop with the Reactor's interface.

    ``entries`` sizes the submission queue; ``ring_buffers`` the provided-buffer ring of each
    BufferPool (a power of two), of which ``initial_buffers`` are filled at first, more as
    receives find the ring empty, up to ``ring_bytes`` of blocks when given (a few big blocks
    stay in the caches: give it for bulk transfers in blocks of hundreds of KiB; ``None``, the
    default, bounds the ring by its entries and the pool only), and the target halves back once
    none did for a second. ``incremental`` (default: when the kernel has it, Linux 6.12) lets
    many receives share a block (``IOU_PBUF_RING_INC``); ``initial_buffers`` then defaults to 4,
    else to 64. Every staged block ends up resident (the kernel fills them in ring order): with
    incremental buffers 4 blocks take more small receives than 64 whole ones, at a sixteenth of
    the memory. Writes of at least ``zc_threshold`` bytes use ``SEND_ZC`` (``None`` never)
    while the peer's window is at least 32 KiB (a smaller one gets copied sends: see
    :data:`~poolalloc.net.uring.connection.ZC_MIN_WINDOW`). ``single_issuer`` binds the ring
    to the thread that first runs the loop (``SINGLE_ISSUER`` + ``DEFER_TASKRUN``: fewer
    interruptions), for a loop built, run and closed in one thread, as ``poolalloc serve`` does;
    by default any one thread at a time may drive it (``COOP_TASKRUN``), e.g. a loop run in a
    background thread and closed by the main.

    Example:
        >>> p = Proactor()
        >>> out = []
        >>> _ = p.call_later(0.01, out.append, "timer")
        >>> _ = p.call_later(0.02, p.stop)
        >>> p.run(); out
        ['timer']
        >>> p.close()

    :raises OSError: io_uring is not usable here (:func:`available` says why).
    """

    #: what servers built on this loop use (``HttpServer`` picks them up from the loop)
    connection_class = UringConnection
    server_class = UringTcpServer

    def __init__(
        self,
        *,
        entries: int = 1024,
        ring_buffers: int = 1024,
        initial_buffers: int | None = None,
        incremental: bool | None = None,
        ring_bytes: int | None = None,
        zc_threshold: int | None = 1 << 16,
        single_issuer: bool = False,
        max_events: int = 1024,
        exception_handler: Callable[[BaseException, object], None] | None = None,
    ) -> None:
        self._ring = Ring(entries, max(4096, 4 * entries), single_issuer=single_issuer)
        try:
            super().__init__(max_events=max_events, exception_handler=exception_handler)
        except BaseException:
            self._ring.close()
            raise
        self.ring_buffers = ring_buffers
        if incremental is None:
            incremental = probe_result().has_pbuf_inc
        self.incremental = incremental
        if initial_buffers is None:
            initial_buffers = 4 if incremental else 64
        self.initial_buffers = initial_buffers
        self.ring_bytes = ring_bytes
        self.zc_threshold = zc_threshold if probe_result().has_send_zc else None
        self._targets: dict[int, RingTarget] = {}
        self._pool_rings: dict[int, PoolRing] = {}
        self._next_token = _FIRST_TOKEN
        self.dirty: list[Any] = []  # connections with writes to flush before the next enter
        self._starved: list[Any] = []
        #: completions of a pass that a BaseException cut short, copied out of the reaped
        #: array (the next enter overwrites it): handled first by the next pass or the close
        self._unhandled: list[tuple[int, int, int]] = []
        self.stats.update(completions=0, enters=0, enobufs=0)
        self._draining = False
        self._arm_epoll()

    @property
    def draining(self) -> bool:
        """True while :meth:`close` cancels every operation and waits for the completions:
        nothing is re-armed then (a server left open would otherwise accept during the close).
        """
        return self._draining

    # ---- tokens and ring access ----
    @property
    def ring(self) -> Ring:
        """The ring (for connections and servers of this engine)."""
        self._check_pid()
        return self._ring

    def new_token(self, target: RingTarget) -> int:
        """A never-reused token for ``target``; ``user_data`` is ``token << 8 | kind``."""
        token = self._next_token
        self._next_token += 1
        self._targets[token] = target
        return token

    def retarget(self, token: int, target: RingTarget | None) -> None:
        """Route the token's remaining completions to ``target`` (None: forget the token)."""
        if target is None:
            self._targets.pop(token, None)
        else:
            self._targets[token] = target

    def pool_ring(self, pool: ReadPool) -> PoolRing:
        """The provided-buffer ring fed from ``pool`` (created on first use)."""
        pr = self._pool_rings.get(id(pool))
        if pr is None:
            bgid = len(self._pool_rings) + 1
            pr = PoolRing(
                self._ring,
                pool,
                bgid=bgid,
                entries=self.ring_buffers,
                initial=self.initial_buffers,
                max_bytes=self.ring_bytes,
                incremental=self.incremental,
            )
            self._pool_rings[id(pool)] = pr
            pr.refill()
        return pr

    def want_flush(self, conn: Any) -> None:
        """Flush ``conn``'s write queue just before the next ``io_uring_enter``."""
        self.dirty.append(conn)

    def starved(self, conn: Any, pool_ring: PoolRing) -> None:
        """``conn``'s receive found no buffer: grow the ring and re-arm it after a refill."""
        self.stats["enobufs"] += 1
        pool_ring.starved(self.now)
        self._starved.append(conn)

    # ---- the loop ----
    def _check_pid(self) -> None:
        if self.pid != os.getpid():
            raise RuntimeError(
                "this Proactor belongs to the parent process: an io_uring instance is not "
                "shared across fork(); create a new Proactor in the child"
            )

    def run(self) -> None:
        """Run until :meth:`stop`, as :meth:`Reactor.run`; on the way out, what the last
        pass's callbacks wrote is handed to the kernel, as the Reactor's writes are at once."""
        super().run()
        # Only on a plain return: a pass cut short by Ctrl-C leaves its flushes to the next
        # pass (or the close), which handles them first.
        if self.dirty:
            self._flush_dirty()
        self._ring.submit()

    def run_once(self) -> None:
        """One pass: flush writes, refill buffer rings, submit and wait, dispatch, run callbacks.

        :raises RuntimeError: the proactor is closed.
        """
        if self._closed:
            self._refuse_closed()
        if self._unhandled or self._undispatched or self._interrupted >= 0:
            self._finish_cut_pass()
        if self.dirty:
            self._flush_dirty()
        self._refill()
        timeout = self._poll_timeout()
        if self._starved and timeout != 0:
            timeout = 0.005 if timeout < 0 else min(timeout, 0.005)
        # at most the Reactor's MAX_WAIT seconds, however far the next timer: fits an int64
        wait_ns = -1 if timeout < 0 else int(timeout * 1e9)
        cqes = self._ring.reap(0 if wait_ns == 0 else 1, wait_ns)
        self.now = time.monotonic()
        self.stats["wakeups"] += 1
        self.stats["enters"] += 1
        if cqes:
            self._complete_batch(cqes)
        if self._timers:
            self._collect_timers()
        if self._ready:
            self._run_ready()

    def _complete_batch(self, cqes: memoryview) -> None:
        """Handle the completions one enter reaped (16 bytes each): C walks them, takes the
        common receive itself and hands every other one to :meth:`_complete_one`."""
        rest: list[tuple[int, int, int]] = []
        try:
            count = complete(cqes, self._targets, self._complete_one, self._failed, rest, self.now)
        except BaseException:
            # KeyboardInterrupt or SystemExit ends run(). The kernel has handed these over and
            # will not again: dropped, their data and buffers would be lost and their
            # connections would wait for good. The interrupted one is not repeated.
            self._unhandled[:0] = rest
            self.stats["completions"] += len(cqes) // 16 - len(rest)
            raise
        self.stats["completions"] += count

    def _complete(self, completions: Iterator[tuple[int, int, int]]) -> None:
        """Handle completions given as ``(ud, res, flags)`` (what a cut pass left)."""
        count = 0
        try:
            for ud, res, flags in completions:
                count += 1
                self._complete_one(ud, res, flags)
        except BaseException:
            self._unhandled[:0] = completions  # as in _complete_batch
            raise
        finally:
            self.stats["completions"] += count

    def _complete_one(self, ud: int, res: int, flags: int) -> None:
        token = ud >> _KIND_BITS
        target = self._targets.get(token)
        if target is None:
            if token == _EPOLL_TOKEN:
                self._on_epoll(flags)
            return  # a cancel's own completion, or a target already gone
        owner: Any = type(target)  # the class's table, as the batch walk in C reads it
        try:
            owner.handlers[ud & 0xFF](target, res, flags)
        except Exception as exc:
            self._failed(exc, target)

    def _failed(self, exc: Exception, target: Any) -> None:
        """Report an error of ``target``'s completion, flush or receive, and abort it if it is
        a connection: what raised left an operation unsubmitted or half-handled, and the
        connection would otherwise wait for it for good (a close included)."""
        self.report(exc, target)
        abort = getattr(target, "abort", None)
        if abort is not None and not getattr(target, "closed", True):
            try:
                abort(exc)
            except Exception as again:
                self.report(again, target)

    def _finish_cut_pass(self) -> None:
        """Handle what a BaseException left of the last pass: completions, then epoll events."""
        if self._unhandled:
            completions, self._unhandled = self._unhandled, []
            self._complete(iter(completions))
        super()._finish_cut_pass()

    def _flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, []
        rest = iter(dirty)
        conn = None
        try:
            for conn in rest:
                try:
                    conn.flush_now()
                except Exception as exc:
                    self._failed(exc, conn)
        except BaseException:
            # each waits for this flush, the interrupted one too (flush_now does nothing once
            # its send is out): none may be forgotten
            self.dirty[:0] = [conn, *rest] if conn is not None else list(rest)
            raise

    def _refill(self) -> None:
        thread = get_ident()
        for pr in self._pool_rings.values():
            pr.loop_thread = thread
            if pr.remote_releases:
                pr.take_remote()
            if pr.target > pr.initial:
                pr.shrink(self.now)
            if pr.recycle_bids:
                pr.publish()
            if pr.needs_refill():
                pr.refill()
        if self._starved:
            starved, self._starved = self._starved, []
            rest = iter(starved)
            conn = None
            try:
                for conn in rest:
                    pool_ring = conn.pool_ring
                    if conn.closed or pool_ring is None:
                        continue  # closed while it waited (its pooled object may be reset)
                    if not pool_ring.in_ring:
                        self._starved.append(conn)
                        continue
                    try:
                        conn.arm_recv()
                    except Exception as exc:  # the ring refused the receive
                        self._failed(exc, conn)
            except BaseException:
                # each waits for its receive to be armed again, the interrupted one too
                # (arm_recv does nothing once the receive is armed)
                if conn is not None and conn not in self._starved:
                    self._starved.append(conn)
                self._starved.extend(rest)
                raise

    # ---- the epoll set (eventfd wakeups, signals, registered fds) ----
    def _arm_epoll(self) -> None:
        self._ring.prep_poll(self._epoll.fileno(), select.POLLIN, _EPOLL_TOKEN << _KIND_BITS)

    def _on_epoll(self, flags: int) -> None:
        try:
            events = self._epoll.poll(0, self._max_events)
            if events:
                self.stats["events"] += len(events)
                self._dispatch(events)
        finally:  # even when a callback raised: unarmed, the epoll set would never fire again
            if not flags & CQE_F_MORE and not self._draining:
                self._arm_epoll()

    # ---- teardown ----
    def close(self) -> None:
        """Cancel every operation, wait for their completions, return all buffers; idempotent.

        :raises RuntimeError: the proactor is running.
        """
        if self._running:
            raise RuntimeError("cannot close a running proactor")
        if self._closed:
            return
        if self.pid == os.getpid():
            self._drain_ring()
            self._strand_leftovers()
        # In a forked child the kernel never writes into these blocks (the child has no ring of
        # its own here, and the C side leaves the parent's registration alone): the leases of
        # the child's copy of the pool can simply go back.
        for pr in self._pool_rings.values():
            pr.close()
        self._pool_rings.clear()
        self._ring.close()
        super().close()

    def _drain_ring(self, limit: float = 2.0) -> None:
        self._draining = True
        for target in list(self._targets.values()):
            abort = getattr(target, "abort", None)
            if abort is not None and not getattr(target, "closed", True):
                abort(ConnectionAbortedError("proactor closed"))
        self._flush_dirty()
        if self._unhandled:  # a cut pass's completions: their buffers go back as the rest do
            completions, self._unhandled = self._unhandled, []
            self._complete(iter(completions))
        self._ring.prep_cancel_all(_CANCEL_TOKEN << _KIND_BITS)
        deadline = time.monotonic() + limit
        while self._outstanding() and time.monotonic() < deadline:
            cqes = self._ring.reap(1, 10_000_000)
            if cqes:
                self._complete_batch(cqes)

    def _strand_leftovers(self) -> None:
        """Keep what the operations the drain could not end still use (see ``_STRANDED``)."""
        stranded = 0
        for target in self._targets.values():
            owners = getattr(target, "owners", None)
            if target.inflight > 0 and owners:
                _STRANDED.append(owners)
                target.owners = []  # type: ignore[attr-defined]
                stranded += 1
        if stranded:
            self.stats["stranded"] = stranded
            warnings.warn(
                f"Proactor closed with {stranded} connection(s) whose sends the kernel had not "
                "finished (a zero-copy send to a peer that does not read): their buffers are "
                "kept for the life of the process, never reused",
                ResourceWarning,
                stacklevel=3,
            )

    def _outstanding(self) -> int:
        return sum(t.inflight for t in self._targets.values()) + self._ring.csend_inflight()

    def ring_stats(self) -> dict[str, dict[str, int]]:
        """Per-pool buffer-ring counters (buffers in the ring, growth, exhaustion).

        Example:
            >>> p = Proactor(); p.ring_stats(); p.close()
            {}
        """
        return {f"bgid{pr.bgid}": pr.stats() for pr in self._pool_rings.values()}
