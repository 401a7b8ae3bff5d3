"""``serve()``: the HTTP server with its pools, on one process or N ``SO_REUSEPORT`` workers.

With ``workers > 1`` the parent forks N children; each opens its own listening socket on the
same port with ``SO_REUSEPORT``, so the kernel spreads new connections across them (no shared
accept lock, no thundering herd), and each runs its own Reactor and pools. The parent forwards
``SIGINT``/``SIGTERM``, and logs and replaces a worker that dies (:func:`_supervise`).

Example:
    >>> serve("127.0.0.1", 8080, root=".", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import json
import math
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from poolalloc.buffers import BufferPool
from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer, listen_socket
from poolalloc.net.http.parser import Request
from poolalloc.net.http.server import (
    BODY_MIN_RATE,
    BODY_TIMEOUT,
    HttpServer,
    Response,
    per_second,
    seconds,
)
from poolalloc.net.metrics import prometheus_text
from poolalloc.net.sockets import LeaseSource
from poolalloc.net.uring.proactor import Proactor, available

__all__ = ["auto_engine", "build_server", "make_loop", "serve", "stop_signals"]


def build_server(
    reactor: Reactor,
    host: str = "127.0.0.1",
    port: int = 8080,
    root: str | None = None,
    *,
    uploads: bool = False,
    reuse_port: bool = False,
    buffer_size: int = 65536,
    buffer_capacity: int = 1024,
    max_connections: int | None = None,
    idle_timeout: float = 60.0,
    read_pool: Callable[[int], LeaseSource] | None = None,
    body_timeout: float = BODY_TIMEOUT,
    body_min_rate: float = BODY_MIN_RATE,
) -> HttpServer:
    """An :class:`HttpServer` with its buffer pool, listening (not yet started).

    ``GET /metrics`` answers the server's metrics in the Prometheus text format.
    ``read_pool(buffer_size)``, when given, makes the pool of read buffers in place of a
    ``BufferPool`` (``poolalloc demo`` passes one that allocates a fresh ``bytearray`` per read).

    Example:
        >>> r = Reactor(); srv = build_server(r, port=0)
        >>> srv.address[0]
        '127.0.0.1'
        >>> srv.close(); r.close()

    :raises OSError: the address is in use or not local.
    """
    pool: LeaseSource
    if read_pool is not None:
        pool = read_pool(buffer_size)
    else:
        pool = BufferPool(buffer_size, capacity=buffer_capacity, name="http-read")
    sock = _listen_or_explain(host, port, reuse_port=reuse_port)
    try:
        server = HttpServer(
            reactor,
            buffer_pool=pool,
            root=root,
            uploads=uploads,
            sock=sock,
            idle_timeout=idle_timeout,
            body_timeout=body_timeout,
            body_min_rate=body_min_rate,
            conn_pool=getattr(reactor, "server_class", TcpServer).make_connection_pool(
                max_connections
            ),
        )
    except BaseException:
        sock.close()
        raise
    server.route("/metrics", _metrics_handler(server))
    return server


_NOT_ALLOWED = Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))


def _metrics_handler(server: HttpServer) -> Callable[[Request], Response]:
    def handler(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):  # a scrape only reads
            return _NOT_ALLOWED
        text = prometheus_text(server.metrics())
        return Response(body=text.encode(), content_type="text/plain; version=0.0.4")

    return handler


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    root: str | None = None,
    workers: int = 1,
    **options: Any,
) -> int:
    """Run the HTTP server until SIGINT/SIGTERM; returns an exit status.

    The first SIGINT or SIGTERM stops gracefully (:meth:`HttpServer.shutdown`): the answers
    under way get ``graceful_timeout`` seconds (default 30; inf: no bound), then the rest is
    reset; a second SIGINT stops at once (:func:`stop_signals`).

    Example:
        >>> serve(workers=0)
        Traceback (most recent call last):
        ...
        ValueError: workers must be at least 1

    :raises ValueError: ``workers`` is not positive, ``graceful_timeout`` is below 0 or NaN, or
        a body limit is out of its range.
    :raises TypeError: ``graceful_timeout`` or a body limit is no number.
    :raises OSError: the address cannot be bound.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    # here, before any worker is forked (each would fail in turn)
    if "graceful_timeout" in options:
        seconds("graceful_timeout", options["graceful_timeout"], zero=True)
    if "body_timeout" in options:
        seconds("body_timeout", options["body_timeout"])
    if "body_min_rate" in options:
        per_second("body_min_rate", options["body_min_rate"])
    if workers == 1:
        return _run_worker(host, port, root, reuse_port=False, **options)
    # Bind once here, without SO_REUSEPORT: a busy address is one error from the parent (not one
    # per child), and port 0 becomes one concrete port that every worker then shares.
    with _listen_or_explain(host, port) as probe:
        port = probe.getsockname()[1]
    return _supervise(lambda: _run_worker(host, port, root, reuse_port=True, **options), workers)


#: What to do when listening fails, by errno; "{addr}" is the address as host:port.
_HINTS = {
    errno.EADDRINUSE: "{addr} is already in use: stop the program listening there, or pick "
    "another port (0: any free port)",
    errno.EADDRNOTAVAIL: "{addr} is not an address of this machine: give one of its addresses "
    "as --host (e.g. 127.0.0.1, 0.0.0.0, ::1 or ::)",
    errno.EACCES: "{addr}: permission denied: ports below 1024 need privileges, pick a port of "
    "1024 or above",
    errno.EAFNOSUPPORT: "{addr}: address family not supported here: use an IPv4 --host such "
    "as 127.0.0.1",
}


def _say(line: str) -> None:
    """One line on stderr in one write: the workers share it, and ``print`` writes the text
    and its newline separately, so two workers' lines could interleave."""
    data = (line + "\n").encode(errors="replace")
    # stderr closed or its reader gone: there is no one to say it to, and the supervisor must
    # go on (a BrokenPipeError there left the workers running without it)
    with contextlib.suppress(OSError, ValueError, AttributeError):  # (None when fd 2 is shut)
        sys.stderr.flush()
        while data:
            data = data[os.write(sys.stderr.fileno(), data) :]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listen_or_explain(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """``listen_socket``, its OSError saying what to change (one line, no traceback)."""
    with explained_bind(host, port):
        return listen_socket(host, port, reuse_port=reuse_port)


@contextlib.contextmanager
def explained_bind(host: str, port: int) -> Iterator[None]:
    """Re-raise an OSError of binding or listening on ``host:port`` as one that says what to
    change (one line, no traceback): the ASGI server's ``serve`` binds through it too.

    Example:
        >>> try:
        ...     with explained_bind("127.0.0.1", 80):
        ...         raise PermissionError(errno.EACCES, "Permission denied")
        ... except OSError as exc:
        ...     print(exc.strerror[:40])
        127.0.0.1:80: permission denied: ports b
    """
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        yield
    except socket.gaierror as exc:
        why = f"{host}: {exc.strerror}: give an IP address or a name this machine resolves"
        raise OSError(errno.EINVAL, why) from None
    except OSError as exc:
        hint = _HINTS.get(exc.errno or 0, "{addr}: " + (exc.strerror or str(exc)))
        raise OSError(exc.errno, hint.format(addr=addr)) from None
    except UnicodeError as exc:  # an over-long host name
        raise OSError(errno.EINVAL, f"{host!r}: {exc}") from None


#: Seconds after the first stop signal in which a SIGINT is not a second Ctrl-C: with
#: ``--workers`` one Ctrl-C brings a worker SIGINT (the terminal) and SIGTERM (the supervisor)
#: together, in either order (see :func:`stop_signals`); a person's second Ctrl-C comes later.
SIGNALS_TOGETHER = 0.25


def stop_signals(
    add_signal_handler: Callable[..., object],
    graceful: Callable[[], object],
    now: Callable[[], object],
) -> None:
    """The stop rule of every ``poolalloc serve`` worker (the built-in server's and an ASGI
    application's), installed through the loop's ``add_signal_handler``: the first SIGINT or
    SIGTERM calls ``graceful()``; a SIGINT after it (the second Ctrl-C) calls ``now()``, as
    uvicorn's does. A repeated SIGTERM changes nothing: with ``--workers``, one Ctrl-C reaches
    every worker from the terminal and then as the supervisor's SIGTERM, and systemd signals
    the whole group too; neither may cut the answers in flight.

    A SIGINT within :data:`SIGNALS_TOGETHER` seconds of ``graceful()``'s return is part of the
    first stop: the terminal's SIGINT and the supervisor's SIGTERM are often both pending when
    a worker next runs, and Linux then runs the handler of the higher signal number first
    (SIGTERM, then SIGINT), or they reach two threads of the worker in either order.

    Example:
        >>> stop_signals(loop.add_signal_handler, begin_shutdown, stop_at_once)  # doctest: +SKIP
    """
    began: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal began
        if began is None:
            began = math.inf  # a signal that graceful() lets in is part of this stop
            try:
                graceful()
            finally:  # after graceful(), which may take a while (or fail: Ctrl-C still works)
                began = time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - began >= SIGNALS_TOGETHER:
            now()

    for signum in _STOP_SIGNALS:
        add_signal_handler(signum, on_signal, signum)


#: Seconds a graceful stop lets the answers under way take before the rest is reset (the ASGI
#: server's default too; nginx's worker_shutdown_timeout has none, uvicorn's neither)
GRACEFUL_TIMEOUT = 30.0


def _run_worker(
    host: str,
    port: int,
    root: str | None,
    engine: str = "auto",
    graceful_timeout: float = GRACEFUL_TIMEOUT,
    **options: Any,
) -> int:
    reactor = make_loop(engine)
    try:
        server = build_server(reactor, host, port, root, **options)
    except BaseException:
        reactor.close()
        raise
    pid = os.getpid()

    def graceful() -> None:
        _say(f"poolalloc serve: pid {pid} shutting down (answers under way get up to "
             f"{graceful_timeout:g} s)")  # fmt: skip
        server.shutdown(graceful_timeout, done=reactor.stop)

    def now() -> None:
        _say(f"poolalloc serve: pid {pid} signal received again: stopping now")
        reactor.stop()

    stop_signals(reactor.add_signal_handler, graceful, now)
    server.start()
    h, p = server.address
    kind = type(reactor).__name__
    _say(f"poolalloc serve: pid {pid} ({kind}) listening on {_url(h, p)}")
    try:
        reactor.run()
    finally:
        server.close()
        reactor.close()
        # The books after every connection is gone: `poolalloc demo` reads this line to check
        # that no lease is outstanding at the end.
        final = json.dumps(server.metrics(), sort_keys=True)
        _say(f"poolalloc serve: pid {os.getpid()} final metrics {final}")
    return 0


#: What ``auto`` picks. The io_uring Proactor becomes the default once it meets its goals in
#: bench/bench_uring.py on this project's machines (docs/benchmarks.md, "## io_uring"): CPU per
#: request at most 0.9x the epoll Reactor's at c = 100 and 1000 (since completions are handled
#: in C: 0.73-0.86 at c = 1000, 0.83-0.91 at c = 100, at the threshold) and at most nginx's at
#: c = 1000 (not yet: 0.98-1.03, a tie).
FASTEST_ENGINE = "epoll"


def auto_engine() -> tuple[str, str]:
    """The engine ``--engine auto`` runs on this machine (``"epoll"`` or ``"uring"``), and why.

    Example:
        >>> engine, why = auto_engine(); engine in ("epoll", "uring") and bool(why)
        True
    """
    if FASTEST_ENGINE == "epoll":
        return "epoll", "the default engine (docs/benchmarks.md, io_uring: why not io_uring yet)"
    ok, reason = available()
    if ok:
        return "uring", "the io_uring Proactor spent the least CPU per request (docs/benchmarks.md)"
    return "epoll", f"io_uring is unavailable here: {reason}"


def make_loop(engine: str = "auto") -> Reactor:
    """The event loop for ``engine``: ``epoll``, ``uring``, or ``auto`` (the fastest measured,
    :data:`FASTEST_ENGINE`). When io_uring is asked for and unavailable, epoll is used and the
    reason goes to stderr.

    Example:
        >>> loop = make_loop("epoll"); type(loop).__name__
        'Reactor'
        >>> loop.close()

    :raises ValueError: unknown engine.
    """
    if engine not in ("auto", "epoll", "uring"):
        raise ValueError(f"engine must be auto, epoll or uring, not {engine!r}")
    if engine == "auto":
        engine = auto_engine()[0]  # quietly epoll where io_uring cannot run
    if engine == "epoll":
        return Reactor()
    ok, reason = available()
    if ok:
        return Proactor(single_issuer=True)  # serve builds, runs and closes it in one thread
    _say(f"poolalloc serve: io_uring unavailable ({reason}); using epoll")
    return Reactor()


#: The parent gives up when this many workers in a row die within :data:`START_WINDOW` seconds
#: of their start: a worker that cannot start (a bad option, the port taken between the parent's
#: check and the worker's bind, an application whose startup fails) would otherwise be forked
#: again and again. systemd's default start limit is the model (5 starts in 10 s).
START_LIMIT = 5
START_WINDOW = 5.0

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Signals that end a worker from outside (an operator's ``kill``, the OOM killer's SIGKILL, a
#: hang-up): such a death says nothing about whether a worker can start, so it is not counted
#: toward :data:`START_LIMIT`. A crash (SIGSEGV, SIGABRT...) or a nonzero exit is. Their
#: replacements are paced instead: at most :data:`START_LIMIT` per :data:`START_WINDOW` (a
#: worker OOM-killed during a big app's startup was forked again hundreds of times a second).
_KILLED_FROM_OUTSIDE = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: Where a worker has no pidfd (a kernel before 5.3, a sandbox that refuses it), how often its
#: end is looked for (seconds); with pidfds the supervisor sleeps until a worker ends.
_WAIT_TICK = 0.2
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _supervise(
    run: Callable[[], int], workers: int, started: Callable[[], None] | None = None
) -> int:
    """Fork ``workers`` processes that each return ``run()`` as their exit status, keep that
    many running, and stop them all on SIGINT/SIGTERM; returns the parent's exit status.

    A worker that dies while the server runs is logged (its pid, exit status or signal) and
    replaced, as nginx's master and uvicorn's supervisor do; :data:`START_LIMIT` deaths in a row
    within :data:`START_WINDOW` of a start end the server instead (one line, status 1, or the
    workers' own status when they exited with one, such as 3 for an ASGI startup failure). A
    worker killed from outside (:data:`_KILLED_FROM_OUTSIDE`) is replaced without being
    counted, at most :data:`START_LIMIT` such replacements per :data:`START_WINDOW` (one line
    says when they start to wait). ``started()`` is called in the parent once the first
    ``workers`` are forked.

    Only the workers are waited for (:func:`_wait_worker`): other children of the calling
    program (a subprocess it started) are left to it.
    """
    children: dict[int, float] = {}  # pid: when it was forked (monotonic)
    stopping = False
    watch = _Watch()

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        # A SIGINT after the first stop signal is passed on as it is: the workers' second
        # SIGINT (stop_signals), which ends their graceful stop at once.
        forward = signal.SIGINT if stopping and signum == signal.SIGINT else signal.SIGTERM
        stopping = True
        watch.wake()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, forward)

    def fork() -> None:
        # Blocked across the fork so that a SIGTERM arriving now reaches the parent once the
        # new pid is in `children` (and is forwarded to it), never the child's copy of `stop`.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        parent = os.getpid()
        try:
            pid = os.fork()
            if pid == 0:
                watch.close()  # the supervisor's: a worker holding a sibling's pidfd keeps it
                _worker_main(run, mask, parent)
            children[pid] = time.monotonic()
            if stopping:  # a signal that came before the block had its handler run meanwhile
                os.kill(pid, signal.SIGTERM)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    old = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        return _supervise_loop(
            children, fork, stop, workers, watch, started=started, stopping=lambda: stopping
        )
    except BaseException:
        # the supervisor itself failed (a fork refused, an interrupt): no worker outlives it
        stop()
        _reap(children)
        raise
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        watch.close()


class _Watch:
    """The supervisor's descriptors, in one place so that a forked worker closes them all: a
    pidfd per worker (:func:`_wait_worker`) and a pipe that a stop signal's handler writes
    to, which ends a wait for a paced replacement at once (the handler alone would not: the
    ``poll`` goes on after it, PEP 475)."""

    def __init__(self) -> None:
        self.pidfds: dict[int, int] = {}  # pid: its pidfd, -1 where the kernel refused one
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake is pending already) or closed
            os.write(self.wake_w, b"\0")

    def close(self) -> None:
        for fd in [*self.pidfds.values(), self.wake_r, self.wake_w]:
            if fd >= 0:
                os.close(fd)
        self.pidfds.clear()
        self.wake_r = self.wake_w = -1


def _wait_worker(
    children: dict[int, float], watch: _Watch, timeout: float | None = None
) -> tuple[int, int] | None:
    """Wait until one of ``children`` ends and reap it: its pid and wait status; None once
    ``timeout`` seconds passed or a stop signal came.

    ``os.waitpid(-1)`` would reap any child of the process, also one the program that called
    :func:`serve` started itself, whose own wait would then fail. So each worker gets a pidfd
    (``watch.pidfds``, kept across calls, opened here for new workers), readable once it
    ended, and only the pids found ready are reaped. The wait is ``poll``, with no timeout
    while every worker has one and no ``timeout`` is given."""
    pidfds = watch.pidfds
    by_fd: dict[int, int] = {}
    for pid in children:
        if pid not in pidfds:
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # no pidfd here: this worker is looked at every _WAIT_TICK
                pidfds[pid] = -1
        if pidfds[pid] >= 0:
            by_fd[pidfds[pid]] = pid
    end = math.inf if timeout is None else time.monotonic() + timeout
    while True:
        poller = select.poll()
        for fd in [*by_fd, watch.wake_r]:
            poller.register(fd, select.POLLIN)
        blind = [pid for pid in children if pidfds[pid] < 0]
        wait = min(end - time.monotonic(), _WAIT_TICK if blind else math.inf)
        ready = poller.poll(None if wait == math.inf else max(wait, 0.0) * 1000)
        if any(fd == watch.wake_r for fd, _ in ready):
            with contextlib.suppress(OSError):
                os.read(watch.wake_r, 64)
            return None
        for pid in [by_fd[fd] for fd, _ in ready] + blind:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its status is lost
                done, status = pid, 0
            if done:
                fd = pidfds.pop(pid)
                if fd >= 0:
                    os.close(fd)
                return pid, status
        if time.monotonic() >= end:
            return None


def _reap(children: dict[int, float], grace: float = 10.0) -> None:
    """Wait for ``children`` (already told to stop) for up to ``grace`` seconds, then kill."""
    end = time.monotonic() + grace
    while children:
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            children.pop(pid, None)
        if children and time.monotonic() > end:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            end = math.inf
        time.sleep(0.01)


def _supervise_loop(
    children: dict[int, float],
    fork: Callable[[], None],
    stop: Callable[[], None],
    workers: int,
    watch: _Watch,
    *,
    started: Callable[[], None] | None,
    stopping: Callable[[], bool],
) -> int:
    """:func:`_supervise`'s body: start the workers, then replace the ones that die."""
    for _ in range(workers):
        fork()
    if started is not None:
        started()
    status = 0
    quick_deaths = 0
    gave_up = ""
    # The replacements of workers killed from outside: when each was forked (the last
    # START_WINDOW's), how many wait for the pace, and whether that wait was said.
    paced: collections.deque[float] = collections.deque()
    owed = 0
    pacing = False

    def pace_full() -> bool:
        while paced and time.monotonic() - paced[0] >= START_WINDOW:
            paced.popleft()
        return len(paced) >= START_LIMIT

    while True:
        if stopping():
            owed = 0
        while owed and not pace_full():
            owed -= 1
            paced.append(time.monotonic())
            fork()
        if not children and not owed:
            break
        if owed and not pacing:
            pacing = True
            _say(
                f"poolalloc serve: workers are killed as they start: at most {START_LIMIT} "
                f"replacements per {START_WINDOW:g} s from now on"
            )
        wait = paced[0] + START_WINDOW - time.monotonic() if owed else None
        got = _wait_worker(children, watch, wait)
        if got is None:  # a fork is allowed, or a stop came
            continue
        pid, wait_status = got
        born = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping():
            if status == 0 and (code > 0 or (code < 0 and -code not in _STOP_SIGNALS)):
                _say(f"poolalloc serve: worker pid {pid} {_how_it_ended(code)} while stopping")
                status = max(code, 1)
            continue
        if code < 0 and -code in _KILLED_FROM_OUTSIDE:
            # not a failed start: neither counted nor ending a row of failed ones, but paced
            _say(f"poolalloc serve: worker pid {pid} {_how_it_ended(code)}; starting a new one")
            if not owed and not pace_full():
                pacing = False  # replaced at once: a later wait is a new stretch, said again
            owed += 1
            continue
        if code == 3 or time.monotonic() - born < START_WINDOW:
            # (status 3 is a startup that failed, an ASGI app's lifespan, however long it took)
            quick_deaths += 1
        else:
            quick_deaths = 0
        if quick_deaths >= START_LIMIT:
            # Said once the others are gone, so that it is the last line, after every worker's
            # own error.
            gave_up = (
                f"poolalloc serve: {quick_deaths} workers in a row ended within "
                f"{START_WINDOW:g} s of their start or failed to start (the last, pid "
                f"{pid}, {_how_it_ended(code)}): stopping; the lines above say why"
            )
            status = max(code, 1)
            stop()
            continue
        _say(f"poolalloc serve: worker pid {pid} {_how_it_ended(code)}; starting a new one")
        fork()
    if gave_up:
        _say(gave_up)
    return status


def _worker_main(run: Callable[[], int], mask: set[int | signal.Signals], parent: int) -> NoReturn:
    """A forked worker's life: default signal actions until ``run`` sets its own, a SIGTERM
    when the parent dies (killed with -9, its workers served on and held the port for good),
    and every failure said on stderr (the worker has no caller to report to)."""
    status = 1
    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        _stop_with_parent(parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        status = run()
    except Exception as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        _say(f"poolalloc serve: pid {os.getpid()}: {why}")
    finally:
        os._exit(status)


def _stop_with_parent(parent: int) -> None:
    """Ask the kernel for a SIGTERM when the parent exits (``PR_SET_PDEATHSIG``), and stop at
    once if it already has. (The signal comes when the thread that forked exits: the CLI forks
    from its main thread.)"""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:  # a sandbox refused it
        _say(f"poolalloc serve: pid {os.getpid()}: no signal when the parent dies: "
             f"{os.strerror(ctypes.get_errno())}")  # fmt: skip
    if os.getppid() != parent:
        os._exit(0)


def _how_it_ended(code: int) -> str:
    """``os.waitstatus_to_exitcode``'s value in words.

    Example:
        >>> _how_it_ended(-9), _how_it_ended(3)
        ('was killed by signal 9 (SIGKILL)', 'exited with status 3')
    """
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-code}"
