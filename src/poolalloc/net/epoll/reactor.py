"""An epoll Reactor: edge-triggered readiness, batched dispatch, timers, wakeups and signals.

Theory of operation
===================

Some facts about epoll
----------------------
* An fd is registered once with a mask; ``epoll_wait`` then reports it whenever the mask's
  conditions hold (level-triggered) or whenever they *become* true (``EPOLLET``, edge-triggered).
* Every ``epoll_ctl`` is a system call. A server that toggles ``EPOLLOUT`` on and off around
  each partial write, or re-arms ``EPOLLONESHOT`` after each event, pays one or two extra system
  calls per request. At 50k requests a second that is most of a core's system time.
* With ``EPOLLET`` an fd registered for ``EPOLLIN|EPOLLOUT`` costs nothing while idle: the kernel
  reports it only on a transition (new bytes arrive, send space opens up after being full).
* The price of ``EPOLLET``: an edge that nobody consumes is gone. Whoever owns the fd must keep
  reading until the kernel says ``EAGAIN`` (or until a short read proves the queue was drained),
  and must try a write *before* waiting for writability.
* ``EPOLLHUP`` and ``EPOLLERR`` are always reported; like CPython's selectors and trio, we wake
  both the reader and the writer for them, so that whichever is interested sees the error from
  its own system call.

What does this mean for the Reactor?
------------------------------------
* ``register(fd, on_readable, on_writable)`` makes exactly one ``epoll_ctl(ADD)`` with
  ``EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET``. ``modify`` only swaps the Python callbacks: no system
  call, so changing interest in steady state is free. ``unregister`` makes one
  ``epoll_ctl(DEL)`` (the kernel would drop the fd at close anyway, but an fd can be handed on).
* Callers follow the curio rule "try the system call, wait only on ``EAGAIN``". A callback that
  is installed while the fd is already ready will not be called until the next edge, so the
  installer must try first. :class:`poolalloc.net.epoll.connection.Connection` does so.
* One ``epoll_wait`` returns up to ``max_events`` ready fds, and all of them are dispatched
  before the next wait (batched dispatch). Then due timers move to the ready queue, then the
  ready queue runs (only the callbacks present when it started, so a callback that re-schedules
  itself cannot starve IO).
* Timers live in a binary heap of :class:`TimerHandle`; the earliest deadline becomes the epoll
  timeout, rounded *up* to the next millisecond (as CPython's selectors do) so the loop never
  wakes just before a deadline and spins. Cancelled timers stay in the heap and are skipped;
  when they are more than half of it the heap is rebuilt.
* ``epoll_wait`` takes an ``int`` of milliseconds, so one wait lasts at most ``2**31 - 1`` ms
  (some 24.8 days): a timer further off (``math.inf`` included) is waited for in waits of
  that length, as asyncio waits in steps of a day. A NaN deadline would order nowhere in the
  heap; ``call_at`` and ``call_later`` refuse it with ``ValueError`` (asyncio accepts it and
  runs the timer at its next pass).
* ``stop()`` sets a flag that ``run()`` reads after each pass and clears when it returns, as
  asyncio's ``run_forever`` does: a ``stop()`` made before ``run()`` makes it return after one
  pass (without sleeping), and one made during a run does not reach the next run.
* ``time()`` reads a clock sampled once per wakeup (``now``). Connections store it as their
  last-activity stamp, so idle tracking costs no system call and no timer per request.
* ``call_soon_threadsafe`` appends to a deque (atomic under the GIL) and writes an ``eventfd``
  that is registered like any other fd; the eventfd counter coalesces many writes into one
  wakeup. A lock orders it (and ``stop``) with ``close``: a thread that found the loop open
  must not write after ``close`` freed the eventfd's number for another file. A forked child
  gets a free one (a thread of the parent that held it is not there to let go).
* Signals: a Python-level handler alone can be delayed indefinitely while the loop sleeps in
  ``epoll_wait``. ``signal.set_wakeup_fd`` makes the C-level handler write the signal number
  into a non-blocking socket we watch, so the loop wakes at once and learns *which* signals came;
  every byte is a delivery, so two different signals arriving together are both dispatched.
  (Linux's signalfd would do the same, but the stdlib does not expose it.) This works only in
  the main thread, as every Python signal API does.
* Exceptions escaping a callback are counted and passed to ``exception_handler`` (logging by
  default, with the traceback); the loop carries on, because one bad connection must not stop
  a server. An error the code reporting it dealt with comes with a
  :class:`~poolalloc.net.transport.Handled` as its ``where``: logged as one warning line.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import math
import os
import select
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

from poolalloc.net.transport import Handled

__all__ = ["MAX_WAIT", "Handle", "Reactor", "TimerHandle"]

_log = logging.getLogger("poolalloc.net.epoll.reactor")

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
_READ_EVENTS = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_REGISTER_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET

Callback = Callable[..., object]

#: The longest wait, in seconds: ``epoll_wait`` takes an ``int`` of milliseconds (a timeout over
#: ``2**31 - 1`` ms raises ``OverflowError``); the io_uring wait takes it too.
MAX_WAIT = (2**31 - 1) // 1000

#: The open loops whose signal socket became the process's wakeup fd, each keeping the fd it
#: replaced (a chain, oldest first): a loop that closes splices itself out of it (main thread
#: only, as every signal API).
_signal_loops: list[Reactor] = []


class Handle:
    """A scheduled callback; ``cancel()`` stops it from running.

    Example:
        >>> r = Reactor()
        >>> h = r.call_soon(print, "never")
        >>> h.cancel(); h.cancelled
        True
        >>> r.close()
    """

    __slots__ = ("args", "callback", "cancelled")

    def __init__(self, callback: Callback, args: tuple[Any, ...]) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run this callback (a no-op if it already ran)."""
        self.cancelled = True


class TimerHandle(Handle):
    """A callback due at ``when`` (reactor clock); ordered by deadline, then creation.

    Example:
        >>> r = Reactor()
        >>> t = r.call_later(10.0, print, "late")
        >>> t.when > r.time()
        True
        >>> t.cancel(); r.close()
    """

    __slots__ = ("_reactor", "seq", "when")

    def __init__(
        self, when: float, seq: int, callback: Callback, args: tuple[Any, ...], reactor: Reactor
    ) -> None:
        super().__init__(callback, args)
        self.when = when
        self.seq = seq
        self._reactor = reactor

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        """Cancel the timer; the heap entry is dropped lazily."""
        if not self.cancelled:
            self.cancelled = True
            self._reactor._timer_cancelled()


class Reactor:
    """An edge-triggered epoll event loop with timers, thread-safe wakeups and signals.

    Example:
        >>> r = Reactor()
        >>> out = []
        >>> _ = r.call_later(0.01, out.append, "timer")
        >>> _ = r.call_later(0.02, r.stop)
        >>> r.run()
        >>> out
        ['timer']
        >>> r.close()
    """

    def __init__(
        self,
        *,
        max_events: int = 1024,
        exception_handler: Callable[[BaseException, object], None] | None = None,
    ) -> None:
        self._epoll = select.epoll()
        #: The process that made the loop: a forked child shares its epoll set (see _check_pid)
        self.pid = os.getpid()
        self._max_events = max_events
        self._handlers: dict[int, list[Callback | None]] = {}
        self._ready: collections.deque[Handle] = collections.deque()
        #: events of a pass that a BaseException (Ctrl-C in a callback) cut short: dispatched
        #: first by the next pass, since an edge-triggered epoll reports each arrival once
        self._undispatched: list[tuple[int, int]] = []
        self._interrupted = -1  # the fd whose callback the cut pass interrupted
        self._timers: list[TimerHandle] = []
        self._cancelled_timers = 0
        self._seq = 0
        self._stopping = False
        self._running = False
        self._closed = False
        self.now = time.monotonic()
        #: The epoll mask of the event being dispatched (lets a reader see EPOLLRDHUP).
        self.event_mask = 0
        self.exception_handler = exception_handler or _log_exception
        self.stats = {"wakeups": 0, "events": 0, "callbacks": 0, "timers": 0, "errors": 0}
        self._wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Held by other threads' wakeups and by close() while it marks the loop closed: a
        # wakeup that found the loop open must not write into a file that took the closed
        # eventfd's number meanwhile (a client's socket, in a server). Re-entrant: a Python
        # signal handler that calls stop() may run while this thread is inside stop() or
        # call_soon_threadsafe, holding it.
        self._wakeup_lock = threading.RLock()
        _loops.add(self)
        self.register(self._wakeup_fd, self._drain_wakeup, None)
        self._signal_handlers: dict[int, Handle] = {}
        #: what each signal did before this loop took it, put back when the loop lets it go
        self._signals_before: dict[int, Any] = {}
        self._signal_sock: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup_fd = -1

    # ---- file descriptors ----
    def register(self, fd: int, on_readable: Callback | None, on_writable: Callback | None) -> None:
        """Watch ``fd`` (one ``epoll_ctl``); callbacks run with no arguments on each edge.

        :raises FileExistsError: ``fd`` is already registered.
        :raises OSError: epoll refused the fd (e.g. a regular file: ``EPERM``).
        :raises RuntimeError: the reactor is closed, or this is a forked child.
        """
        if self._closed:
            self._refuse_closed()
        self._check_pid()
        if fd in self._handlers:
            raise FileExistsError(f"fd {fd} is already registered")
        self._epoll.register(fd, _REGISTER_MASK)
        self._handlers[fd] = [on_readable, on_writable]

    def modify(self, fd: int, on_readable: Callback | None, on_writable: Callback | None) -> None:
        """Swap the callbacks of a registered fd; makes no system call.

        :raises KeyError: ``fd`` is not registered.
        """
        entry = self._handlers[fd]
        entry[0] = on_readable
        entry[1] = on_writable

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``; safe to call after the fd was closed.

        :raises KeyError: ``fd`` is not registered.
        """
        del self._handlers[fd]
        if self.pid != os.getpid():
            return  # the set is the parent's too: a child closing what it inherited keeps off it
        # An fd already closed was dropped from the set by the kernel: nothing to undo.
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def is_registered(self, fd: int) -> bool:
        """True while ``fd`` is watched."""
        return fd in self._handlers

    # ---- scheduling ----
    def time(self) -> float:
        """The reactor clock (``time.monotonic``), sampled once per wakeup."""
        return self.now

    def call_soon(self, callback: Callback, *args: Any) -> Handle:
        """Run ``callback(*args)`` on the next pass of the loop (not thread-safe).

        :raises RuntimeError: the reactor is closed (the callback could never run).
        """
        if self._closed:
            self._refuse_closed()
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> Handle:
        """Like :meth:`call_soon`, from any thread; wakes the loop through the eventfd.

        :raises RuntimeError: the reactor is closed (its eventfd is gone).
        """
        handle = Handle(callback, args)
        with self._wakeup_lock:
            if self._closed:
                self._refuse_closed()
            self._ready.append(handle)
            # BlockingIOError: the counter is saturated, so a wakeup is pending anyway.
            with contextlib.suppress(BlockingIOError):
                os.eventfd_write(self._wakeup_fd, 1)
        return handle

    def call_at(self, when: float, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once the reactor clock reaches ``when``.

        ``when`` may be ``math.inf`` (a timer that never fires) or any time, however far.

        :raises ValueError: ``when`` is NaN (it has no place among the deadlines).
        :raises TypeError: ``when`` is not a real number.
        :raises RuntimeError: the reactor is closed.
        """
        if self._closed:
            self._refuse_closed()
        if math.isnan(when):
            raise ValueError("a timer's time (or delay) is NaN, not a number of seconds")
        self._seq += 1
        timer = TimerHandle(when, self._seq, callback, args, self)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callback, *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds (measured from now); a negative
        delay is 0, ``math.inf`` never fires.

        :raises ValueError: ``delay`` is NaN.
        :raises RuntimeError: the reactor is closed.
        """
        # a NaN delay stays NaN through max() (every comparison with it is false): call_at
        # refuses it, the one check on this path
        return self.call_at(time.monotonic() + max(delay, 0.0), callback, *args)

    def _refuse_closed(self) -> NoReturn:
        raise RuntimeError(f"{type(self).__name__} is closed")

    def _check_pid(self) -> None:
        # A forked child's epoll fd is the very set of the parent: run there, the child would
        # take the parent's events (each edge is reported once); an fd it registered would
        # wake the parent under a number the parent may use for another file.
        if self.pid != os.getpid():
            name = type(self).__name__
            raise RuntimeError(
                f"this {name} belongs to the parent process: its epoll set is shared across "
                f"fork(); create a new {name} in the child"
            )

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    # ---- signals ----
    def add_signal_handler(self, signum: int, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` in the loop when ``signum`` arrives (main thread only).

        :raises ValueError: not called from the main thread, or an invalid signal.
        :raises RuntimeError: the reactor is closed.
        """
        if self._closed:
            self._refuse_closed()
        if self._signal_sock is None:
            self._signal_sock = socket.socketpair()
            for s in self._signal_sock:
                s.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(
                self._signal_sock[1].fileno(), warn_on_full_buffer=False
            )
            _signal_loops.append(self)
            self.register(self._signal_sock[0].fileno(), self._drain_signals, None)
        before = signal.signal(signum, _ignore_in_python)
        self._signals_before.setdefault(signum, before)
        self._signal_handlers[signum] = Handle(callback, args)

    def remove_signal_handler(self, signum: int) -> bool:
        """Give ``signum`` back the handler it had before :meth:`add_signal_handler` (Python's
        ``KeyboardInterrupt`` for SIGINT, say); False if no handler was set."""
        if self._signal_handlers.pop(signum, None) is None:
            return False
        before = self._signals_before.pop(signum, None)
        # None: the handler before was not set from Python, which cannot put it back
        signal.signal(signum, signal.SIG_DFL if before is None else before)
        return True

    def _drain_signals(self) -> None:
        assert self._signal_sock is not None
        while True:
            try:
                data = self._signal_sock[0].recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            for signum in data:
                handle = self._signal_handlers.get(signum)
                if handle is not None:
                    self._ready.append(handle)

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wakeup_fd)

    # ---- running ----
    def run(self) -> None:
        """Run until :meth:`stop`; callbacks registered before ``run`` start at once.

        After a :meth:`stop` made while the loop was not running, ``run`` makes one pass that
        does not sleep, then returns (asyncio's ``run_forever`` does the same).

        :raises RuntimeError: the reactor is closed, already running, or called in a forked
            child (make a new loop there).
        """
        if self._closed:
            self._refuse_closed()
        self._check_pid()
        if self._running:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._running = True
        try:
            while True:
                self.run_once()
                if self._stopping:
                    break
        finally:
            # cleared on the way out, not on the way in: a stop() made before run() counts,
            # and one made during this run does not stop the next
            self._stopping = False
            self._running = False

    def stop(self) -> None:
        """Make :meth:`run` return after the current pass, or after its first pass when it
        is not running yet (thread-safe). A no-op on a closed reactor."""
        self._stopping = True
        with self._wakeup_lock:
            if self._closed:
                return  # its eventfd is closed, and the number may name another file by now
            with contextlib.suppress(BlockingIOError, OSError):
                os.eventfd_write(self._wakeup_fd, 1)

    def run_once(self) -> None:
        """One pass: wait for IO (bounded by the next timer), dispatch, run due callbacks.

        :raises RuntimeError: the reactor is closed.
        """
        if self._closed:
            self._refuse_closed()
        if self._undispatched or self._interrupted >= 0:
            self._finish_cut_pass()
        events = self._epoll.poll(self._poll_timeout(), self._max_events)
        self.now = time.monotonic()
        self.stats["wakeups"] += 1
        if events:
            self.stats["events"] += len(events)
            self._dispatch(events)
        if self._timers:
            self._collect_timers()
        if self._ready:
            self._run_ready()

    def _poll_timeout(self) -> float:
        if self._ready or self._stopping:
            return 0
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        if not timers:
            return -1
        delay = timers[0].when - time.monotonic()
        if delay <= 0:
            return 0
        if delay >= MAX_WAIT:  # the wait ends before the timer is due; the next pass waits on
            return MAX_WAIT
        return -(-delay // 0.001) * 0.001  # ceil to 1 ms

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        handlers = self._handlers
        rest = iter(events)
        fd = mask = -1
        try:
            for fd, mask in rest:
                entry = handlers.get(fd)
                if entry is None:
                    continue  # unregistered earlier in this batch
                self.event_mask = mask
                try:
                    if mask & _READ_EVENTS and entry[0] is not None:
                        entry[0]()
                    if mask & _WRITE_EVENTS and entry[1] is not None and handlers.get(fd) is entry:
                        entry[1]()
                except Exception as exc:
                    self.report(exc, entry)
        except BaseException:
            # KeyboardInterrupt or SystemExit ends run(); a program that runs the loop again
            # (say, to close gracefully) gets the rest of this batch first, and the interrupted
            # fd's event again while the fd is still ready: edge-triggered, it would not be
            # reported again while input waits (a level-triggered loop, asyncio's, reports it
            # anew).
            self._undispatched[:0] = list(rest)
            if fd >= 0:
                self._interrupted = fd
            raise

    def _finish_cut_pass(self) -> None:
        """Dispatch what a BaseException left of the last pass's events: the interrupted fd's
        event again if the fd is still ready (a zero-timeout poll: a callback of the user's
        need not cope with a readiness that is gone), then the rest as they came."""
        events, self._undispatched = self._undispatched, []
        fd, self._interrupted = self._interrupted, -1
        if fd >= 0 and fd in self._handlers:
            probe = select.poll()
            probe.register(fd, select.POLLIN | select.POLLOUT | select.POLLPRI)
            ready = [(fd, mask) for fd, mask in probe.poll(0) if not mask & select.POLLNVAL]
            events[:0] = ready
        self._dispatch(events)

    def _collect_timers(self) -> None:
        timers = self._timers
        end = self.now
        while timers and timers[0].when <= end:
            timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled_timers -= 1
            else:
                self.stats["timers"] += 1
                self._ready.append(timer)

    def _run_ready(self) -> None:
        ready = self._ready
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle.cancelled:
                continue
            self.stats["callbacks"] += 1
            try:
                handle.callback(*handle.args)
            except Exception as exc:
                self.report(exc, handle.callback)

    def report(self, exc: BaseException, where: object) -> None:
        """Count ``exc`` and pass it to ``exception_handler``: what the loop does with an
        exception a callback let out, and what a server calls for one it handled itself (a
        route that raised and was answered 500).

        Example:
            >>> r = Reactor(exception_handler=lambda exc, where: print(type(exc).__name__))
            >>> r.report(ValueError("bug"), None); r.stats["errors"]
            ValueError
            1
            >>> r.close()
        """
        self.stats["errors"] += 1
        self.exception_handler(exc, where)

    # ---- teardown ----
    def close(self) -> None:
        """Release the epoll fd, the eventfd and signal plumbing; idempotent.

        :raises RuntimeError: the reactor is running.
        """
        if self._running:
            raise RuntimeError("cannot close a running reactor")
        if self._closed:
            return
        with self._wakeup_lock:  # no wakeup is under way, and none starts (see __init__)
            self._closed = True
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)
        if self._signal_sock is not None:
            self._let_go_of_wakeup_fd()
            for s in self._signal_sock:
                s.close()
        os.close(self._wakeup_fd)
        self._epoll.close()
        self._handlers.clear()
        self._ready.clear()
        self._timers.clear()

    def _let_go_of_wakeup_fd(self) -> None:
        """Take this loop's socket out of the wakeup fd chain (see ``_signal_loops``): the
        wakeup fd goes back to the one it replaced only if it is still this loop's (a newer loop
        may run on with its own), and a newer loop that replaced this one will put back this
        one's predecessor, not this closed socket's number."""
        assert self._signal_sock is not None
        mine = self._signal_sock[1].fileno()
        _signal_loops.remove(self)
        for other in _signal_loops:
            if other._old_wakeup_fd == mine:
                other._old_wakeup_fd = self._old_wakeup_fd
        current = signal.set_wakeup_fd(-1)  # the only way to read it
        restore = self._old_wakeup_fd if current == mine else current
        if restore != -1:
            with contextlib.suppress(OSError, ValueError):  # its owner closed it meanwhile
                signal.set_wakeup_fd(restore, warn_on_full_buffer=False)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __enter__(self) -> Reactor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: Every loop alive, for the fork handler below.
_loops: weakref.WeakSet[Reactor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A thread of the parent that was waking a loop held its lock at the fork, and that thread
    # is not in the child to let go of it: the child's close() of what it inherited would wait
    # on it for good.
    for loop in list(_loops):
        loop._wakeup_lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _ignore_in_python(signum: int, frame: object) -> None:
    """The Python-level handler: the real work happens in the loop via the wakeup fd."""


def _log_exception(exc: BaseException, where: object) -> None:
    if isinstance(where, Handled):  # dealt with (a client reset, say): no bug to trace
        _log.warning("%s: %s", exc, where.what)
        return
    _log.error("unhandled exception in reactor callback %r", where, exc_info=exc)
