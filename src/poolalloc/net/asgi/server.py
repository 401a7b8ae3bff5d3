"""Run an ASGI 3 application: :class:`AsgiServer` in code, :func:`serve` as a program.

The server is an asyncio ``create_server`` whose protocol
(:mod:`poolalloc.net.asgi._protocol`) reads into pooled leases and parses with the sans-IO
parser of :mod:`poolalloc.net.http.parser`. It runs on uvloop when uvloop is installed (the
default ``loop="auto"``), else on asyncio's own loop.

:func:`serve` adds what a program needs: the ``lifespan`` protocol around the server's life,
``SIGINT``/``SIGTERM`` for a graceful shutdown (stop accepting, close idle keep-alive
connections, let in-flight requests finish up to ``graceful_timeout``, then the lifespan
shutdown), and ``workers > 1``: forked processes, each with its own ``SO_REUSEPORT`` socket on
the same port.

Example:
    >>> import asyncio
    >>> async def app(scope, receive, send):
    ...     await send({"type": "http.response.start", "status": 200, "headers": []})
    ...     await send({"type": "http.response.body", "body": b"hi"})
    >>> async def main() -> bytes:
    ...     server = AsgiServer(app, port=0, lifespan="off")
    ...     await server.start()
    ...     reader, writer = await asyncio.open_connection(*server.address)
    ...     writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    ...     reply = await reader.read()
    ...     writer.close(); await server.shutdown()
    ...     return reply.split(b"\\r\\n\\r\\n")[1]
    >>> asyncio.run(main())
    b'hi'
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from poolalloc.buffers import BufferPool
from poolalloc.net.asgi._protocol import (
    App,
    ClientDisconnected,
    HttpAsgiProtocol,
    Message,
    ServerState,
)
from poolalloc.net.http.serve import (  # the same supervisor, stop rule, words for a bind's error
    GRACEFUL_TIMEOUT,
    _supervise,
    explained_bind,
    stop_signals,
)
from poolalloc.net.http.server import BODY_MIN_RATE, BODY_TIMEOUT, per_second, seconds
from poolalloc.net.sockets import LeaseSource

__all__ = [
    "AsgiServer",
    "ClientDisconnected",
    "LifespanError",
    "import_app",
    "new_event_loop",
    "serve",
]

logger = logging.getLogger("poolalloc.asgi")
#: Seconds the app's lifespan task gets to end at each step: after its startup or shutdown
#: completed, after its cancellation, after its coroutine was closed.
_END_GRACE = 1.0


class LifespanError(RuntimeError):
    """The application reported ``lifespan.startup.failed`` (or failed during startup).

    Example:
        >>> issubclass(LifespanError, RuntimeError)
        True
    """


class _Lifespan:
    """The ``lifespan`` scope: startup before serving, shutdown after."""

    def __init__(self, app: App, state: dict[str, Any], mode: str, timeout: float) -> None:
        self.app = app
        self.state = state
        self.mode = mode  # "on": failure to run is an error; "auto": an app without it is fine
        self.timeout = timeout
        self.supported = True
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failed: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting = asyncio.Event()  # the app waits in receive() with nothing queued

    async def receive(self) -> Message:
        if self._queue.empty():
            self._waiting.set()
        try:
            return await self._queue.get()
        finally:
            self._waiting.clear()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failed = str(message.get("message", ""))
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind.endswith("failed"):
                logger.error("lifespan shutdown failed: %s", message.get("message", ""))
            self._stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a lifespan scope")

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                raise  # cancelled, or closed by _end_task
            if not self._started.is_set() and self.mode == "auto":
                self.supported = False
                logger.info("ASGI 'lifespan' unsupported by the app (%r): serving without", exc)
            else:
                self._failed = self._failed or repr(exc)
                logger.error("lifespan failed\n%s", "".join(traceback.format_exception(exc)))
        finally:
            self._started.set()
            self._stopped.set()

    async def startup(self) -> None:
        name = getattr(self.app, "__qualname__", type(self.app).__qualname__)
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name=f"lifespan of the ASGI application {name}"
        )
        await self._queue.put({"type": "lifespan.startup"})
        try:
            started = await self._within_timeout(self._started)
        except asyncio.CancelledError:
            # a stop asked for during the startup (Ctrl-C while the app's startup hangs): the
            # app's task ends with it rather than outlive the server
            await self._end_task(completed=False)
            raise
        if not started:
            await self._end_task(completed=False)
            raise LifespanError(f"lifespan startup did not complete in {self.timeout:g} s")
        if self._failed is not None and self.supported:
            await self._end_task(completed=True)
            raise LifespanError(f"lifespan startup failed: {self._failed}")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        await self._queue.put({"type": "lifespan.shutdown"})
        completed = await self._within_timeout(self._stopped)
        if not completed:
            logger.error("lifespan shutdown did not complete in %g s: cancelled", self.timeout)
        await self._end_task(completed=completed)

    async def _within_timeout(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` up to the timeout (an app stuck in its startup or shutdown must
        not keep the server from starting or exiting)."""
        try:
            await asyncio.wait_for(event.wait(), self.timeout)
        except TimeoutError:
            return False
        return True

    async def _end_task(self, *, completed: bool) -> None:
        """See the app's lifespan task end, in bounded time: if it ``completed`` (it reported
        the end of its startup or shutdown) it may return first, then it is cancelled. A task
        still running after that swallowed the cancellation, and ``asyncio.run()`` would wait
        for it forever at its teardown (it cancels every task left and gathers them): its
        coroutine is closed then, as the interpreter closes a coroutine it collects
        (``GeneratorExit`` runs the ``finally`` blocks). That coroutine is :meth:`_main`, not
        the app's: an app coroutine that ignores ``GeneratorExit`` too raises
        ``RuntimeError`` into it (logged as a lifespan failure) and is left suspended,
        belonging to no task, while the task ends."""
        task = self._task
        if task is None or task.done():
            return
        if completed:  # it may return after its report; waiting in receive() it never will
            waiting = asyncio.ensure_future(self._waiting.wait())
            await asyncio.wait(
                {task, waiting}, timeout=_END_GRACE, return_when=asyncio.FIRST_COMPLETED
            )
            waiting.cancel()
            if task.done():
                return
        task.cancel()
        await asyncio.wait({task}, timeout=_END_GRACE)  # its finally blocks, bounded too
        if task.done():
            return
        await _close_ignoring([task], "the application's lifespan task")


class AsgiServer:
    """An ASGI 3 app on a listening socket, in the running event loop.

    :param app: the ASGI 3 application (``async def app(scope, receive, send)``).
    :param pool: read buffers (None: a ``BufferPool`` of ``buffer_size`` bytes, at most
        ``buffer_capacity`` out at once; None: no limit).
    :param lifespan: ``"auto"`` (run it if the app supports it), ``"on"`` or ``"off"``.
    :param root_path: the path the application is mounted at (a proxy in front strips it):
        the scope's ``root_path``, and the start of its ``path`` and ``raw_path``, as ASGI
        and uvicorn have it.
    :param keep_alive_timeout: seconds a connection may wait between requests, and for a
        request head to arrive whole (past it a begun head is answered ``408``).
    :param idle_timeout: seconds a request body may stop arriving while the app waits for it
        in ``receive()`` (the HTTP server's bound on a stalled body, and its default): then the
        request is answered ``408`` if no response began, the app's ``receive()`` returns
        ``http.disconnect`` and the connection closes.
    :param body_timeout: seconds a request body may take to arrive whole, one more per
        ``body_min_rate`` bytes received (Apache mod_reqtimeout's ``body=20,MinRate=500``, as
        the HTTP server's; not counting the time reading is paused for the app): past it,
        while the app waits for more, the request ends as for ``idle_timeout`` (a body
        trickled in a byte at a time held its connection for good).
    :param body_min_rate: bytes per second that earn a body a second more (0: the whole body
        within ``body_timeout``).
    :param lifespan_timeout: seconds the app's lifespan startup and shutdown may each take;
        past it the startup fails with :class:`LifespanError` and a shutdown is given up (logged),
        the app's lifespan task cancelled either way. A task that swallows the cancellation
        has its coroutine closed a second later (logged), so that ``asyncio.run()`` around
        the server does not wait for it forever at its teardown.
    :param sock: a bound socket to serve on instead of ``host``/``port``.
    :param reuse_port: set ``SO_REUSEPORT`` (workers sharing a port).
    :raises ValueError: a timeout that is not above 0 (NaN included; ``inf``: no limit), or an
        unknown ``lifespan``.
    :raises TypeError: a timeout that is not a number.

    Example:
        >>> AsgiServer(lambda s, r, w: None, port=0).address
        Traceback (most recent call last):
        ...
        RuntimeError: the server is not started
    """

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        pool: LeaseSource | None = None,
        buffer_size: int = 16384,
        buffer_capacity: int | None = None,
        lifespan: str = "auto",
        lifespan_timeout: float = 60.0,
        root_path: str = "",
        keep_alive_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        body_timeout: float = BODY_TIMEOUT,
        body_min_rate: float = BODY_MIN_RATE,
        max_body: int = 1 << 30,
        backlog: int = 2048,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
    ) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be auto, on or off, not {lifespan!r}")
        lifespan_timeout = seconds("lifespan_timeout", lifespan_timeout)
        keep_alive_timeout = seconds("keep_alive_timeout", keep_alive_timeout)
        idle_timeout = seconds("idle_timeout", idle_timeout)
        body_timeout = seconds("body_timeout", body_timeout)
        body_min_rate = per_second("body_min_rate", body_min_rate)
        self._own_pool = pool is None
        self.pool: LeaseSource = (
            pool if pool is not None else BufferPool(buffer_size, capacity=buffer_capacity)
        )
        self.state = ServerState(
            app, self.pool, root_path=root_path, keep_alive_timeout=keep_alive_timeout,
            idle_timeout=idle_timeout, body_timeout=body_timeout, body_min_rate=body_min_rate,
            max_body=max_body,
        )  # fmt: skip
        self.host, self.port = host, port
        self._lifespan_mode = lifespan
        self._lifespan_timeout = lifespan_timeout
        self._lifespan: _Lifespan | None = None
        self._backlog = backlog
        self._sock = sock
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        """Open connections."""
        return len(self.state.connections)

    def metrics(self) -> dict[str, float]:
        """Timeouts that ended a connection (``timeouts_total``, named and counted as the HTTP
        server's: idle, a head or a body not received in time), connections answered 503
        because no read buffer was free (``overloaded_total``), open connections
        (``connections_active``) and connections in their lingering close
        (``connections_lingering``: answered and half-closed, reading what the client still
        sends until its FIN, up to 2 s), as the HTTP server counts them.

        Example:
            >>> AsgiServer(lambda s, r, w: None, port=0).metrics()["timeouts_total"]
            0
        """
        state = self.state
        lingering = sum(1 for conn in state.connections if conn.lingering)
        return {
            "timeouts_total": state.timeouts,
            "overloaded_total": state.overloaded,
            "connections_active": len(state.connections) - lingering,
            "connections_lingering": lingering,
        }

    async def start(self) -> None:
        """Run the lifespan startup, then listen.

        :raises LifespanError: the app's startup failed.
        :raises OSError: the address cannot be bound (the lifespan shutdown has run then).
        :raises RuntimeError: start() was called before (a server starts once): a second
            start ran the app's lifespan startup again and opened a second listener, the
            first left open for the life of the process.
        """
        if self._started:
            raise RuntimeError("AsgiServer was started already: a server starts once")
        self._started = True
        loop = asyncio.get_running_loop()
        if self._lifespan_mode != "off":
            self._lifespan = _Lifespan(
                self.state.app, self.state.state, self._lifespan_mode, self._lifespan_timeout
            )
            try:
                await self._lifespan.startup()
            except BaseException:
                self._close_pool()
                raise
        state = self.state

        def factory() -> HttpAsgiProtocol:
            return HttpAsgiProtocol(state, loop)

        try:
            if self._sock is not None:
                self._server = await loop.create_server(
                    factory, sock=self._sock, backlog=self._backlog
                )
            else:
                self._server = await loop.create_server(
                    factory, self.host, self.port, backlog=self._backlog,
                    reuse_port=self._reuse_port or None,
                )  # fmt: skip
        except BaseException:
            # the app started (its lifespan startup ran): it shuts down as after serving
            if self._lifespan is not None:
                await self._lifespan.shutdown()
            self._close_pool()
            raise

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), run the lifespan
        shutdown, and close what is left.

        A request is in flight until its application returns, also after its response went
        out (work it does then, such as a Starlette ``BackgroundTask``, may need what the
        lifespan shutdown closes); past ``timeout`` its connection is reset and its task
        cancelled, as uvicorn's ``timeout_graceful_shutdown`` does."""
        state = self.state
        state.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(state.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # a request's own task may call this: neither it nor its connection is waited for
        me = asyncio.current_task()

        def others() -> list[asyncio.Task[None]]:
            return [task for task in state.tasks if task is not me]

        def other_connections() -> list[Any]:
            return [conn for conn in state.connections if conn._task is not me]

        while (other_connections() or others()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in other_connections():
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        tasks = others()
        if tasks:
            logger.error(
                "%d ASGI request task(s) still running after the graceful timeout of %g s: "
                "cancelled", len(tasks), timeout,
            )  # fmt: skip
            await _cancel_bounded(tasks)
        # wait_closed() waits for every connection to end on 3.12+: not for the caller's own
        if self._server is not None and not any(c._task is me for c in state.connections):
            await self._server.wait_closed()
        if self._lifespan is not None:
            await self._lifespan.shutdown()
        self._close_pool()

    async def _stop_now(self) -> None:
        """Stop at once, what a second SIGINT asks for during a graceful shutdown:
        reset every connection and cancel every request task and the lifespan task (their
        ``finally`` blocks run, bounded to a second each); no lifespan shutdown."""
        self.state.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        me = asyncio.current_task()
        await _cancel_bounded([task for task in self.state.tasks if task is not me])
        if self._lifespan is not None:
            await self._lifespan._end_task(completed=False)
        self._close_pool()

    def _close_pool(self) -> None:
        if self._own_pool:
            close = getattr(self.pool, "close", None)
            if close is not None:
                close()


async def _close_ignoring(tasks: list[asyncio.Task[None]], what: str) -> None:
    """Close the coroutines of ``tasks``, cancelled already, that are still running: they
    swallowed their cancellation, and ``asyncio.run()`` would wait for them forever at its
    teardown (it cancels every task left and gathers them). Closing a coroutine is what the
    interpreter does to one it collects (``GeneratorExit`` runs its ``finally`` blocks)."""
    stuck = [task for task in tasks if not task.done()]
    for task in stuck:
        logger.error("%s %r ignored its cancellation: closing its coroutine", what, task)
        with contextlib.suppress(RuntimeError):  # a coroutine that ignores GeneratorExit too
            task.get_coro().close()
        task.cancel()  # wakes the task: its closed coroutine ends it
    if not stuck:
        return
    await asyncio.wait(stuck, timeout=_END_GRACE)
    for task in stuck:
        if task.done():
            if not task.cancelled():
                task.exception()  # "cannot reuse already awaited coroutine": expected, seen
        else:  # not expected, but never a silent hang
            logger.error(
                "%s %r is still running: asyncio.run() will wait for it at its teardown",
                what,
                task,
            )


async def _cancel_bounded(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel request ``tasks`` and see them end in bounded time: their ``finally`` blocks get
    a second, then the coroutines of those that swallowed the cancellation are closed."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_END_GRACE)
        await _close_ignoring(tasks, "the ASGI request task")


def new_event_loop(loop: str = "auto") -> asyncio.AbstractEventLoop:
    """uvloop's loop for ``auto`` when uvloop is installed (or ``uvloop``), else asyncio's.

    Example:
        >>> loop = new_event_loop("asyncio"); loop.is_running()
        False
        >>> loop.close()

    :raises ValueError: an unknown loop name.
    :raises ImportError: ``uvloop`` asked for and not installed.
    """
    if loop in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: PLC0415 (optional)
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            new: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return new()
    elif loop != "asyncio":
        raise ValueError(f"loop must be auto, asyncio or uvloop, not {loop!r}")
    return asyncio.new_event_loop()


def split_app_spec(spec: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``module:attribute``; the one check of that form, made by
    :func:`import_app` and by ``poolalloc serve --app`` before anything runs.

    Example:
        >>> split_app_spec("main:app")
        ('main', 'app')

    :raises ValueError: no colon, or nothing on one side of it.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"the app must be given as 'module:attribute', not {spec!r}")
    return module_name, attr


def import_app(spec: str, app_dir: str | None = ".") -> App:
    """The app named by ``module:attribute`` (uvicorn's form), importing from ``app_dir``.

    ``app_dir`` (default: the current directory) goes first on ``sys.path``, as uvicorn does.

    Example:
        >>> import_app("nowhere")
        Traceback (most recent call last):
        ...
        ValueError: the app must be given as 'module:attribute', not 'nowhere'

    :raises ValueError: a malformed spec, or a module/attribute that does not exist.
    """
    module_name, attr = split_app_spec(spec)
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the app's own import failed: show that error, not ours
        raise ValueError(f"could not import module {module_name!r} (from {spec!r})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"attribute {attr!r} not found in module {module_name!r}") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable: not an ASGI application")
    app: App = obj
    return app


def serve(
    app: App | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    app_dir: str | None = ".",
    loop: str = "auto",
    graceful_timeout: float = GRACEFUL_TIMEOUT,
    ready: Callable[[tuple[str, int]], None] | None = None,
    **options: Any,
) -> int:
    """Serve ``app`` (or ``"module:attribute"``) until SIGINT/SIGTERM; returns an exit status.

    Other keywords go to :class:`AsgiServer`. ``ready(address)`` is called once listening.

    Example:
        >>> serve("app:app", workers=0)
        Traceback (most recent call last):
        ...
        ValueError: workers must be at least 1

    :raises ValueError: ``workers`` < 1, a timeout that is NaN or below 0, or a bad app spec.
    :raises OSError: the address cannot be bound (its message says what to change).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    graceful_timeout = seconds("graceful_timeout", graceful_timeout, zero=True)
    for name in ("lifespan_timeout", "keep_alive_timeout", "idle_timeout", "body_timeout"):
        if name in options:  # here, not only in each worker, which would fail in turn
            seconds(name, options[name])
    if "body_min_rate" in options:
        per_second("body_min_rate", options["body_min_rate"])
    if isinstance(app, str):
        app = import_app(app, app_dir)
    if workers == 1:
        return _run_worker(app, host, port, loop, graceful_timeout, ready, options)
    # Bind once here so a port of 0 gets one number that every worker then shares.
    probe = _reuse_port_socket(host, port)
    port = probe.getsockname()[1]

    def run() -> int:
        options["sock"] = _reuse_port_socket(host, port)
        return _run_worker(app, host, port, loop, graceful_timeout, None, options)

    def started() -> None:
        probe.close()
        if ready is not None:
            ready((host, port))

    return _supervise(run, workers, started)


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """Bound, not listening: the probe holds the port without taking connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        with explained_bind(host, port):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # "::" takes IPv4 clients too, as listen_socket's
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _run_worker(  # noqa: PLR0917 (private: one call site per mode)
    app: App,
    host: str,
    port: int,
    loop_name: str,
    graceful_timeout: float,
    ready: Callable[[tuple[str, int]], None] | None,
    options: dict[str, Any],
) -> int:
    loop = new_event_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            _serve_until_signal(app, host, port, graceful_timeout, ready, options)
        )
    finally:
        loop.close()


async def _serve_until_signal(  # noqa: PLR0917
    app: App,
    host: str,
    port: int,
    graceful_timeout: float,
    ready: Callable[[tuple[str, int]], None] | None,
    options: dict[str, Any],
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # A second Ctrl-C (SIGINT) stops the graceful wait at once; a repeated SIGTERM does not
    # (the rule of every serve worker: stop_signals).
    again = asyncio.Event()
    stop_signals(loop.add_signal_handler, stop.set, again.set)
    server = AsgiServer(app, host, port, **options)
    # A stop during the app's lifespan startup ends the startup: waiting for it would ignore
    # Ctrl-C for up to lifespan_timeout (60 s by default) when the startup hangs.
    starting = loop.create_task(server.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.wait({starting})
    if starting.cancelled():  # else it ended as the stop came: said and shut down below
        print(
            f"poolalloc serve: pid {os.getpid()} stopped during the application's startup",
            file=sys.stderr,
            flush=True,
        )
        return 0
    try:
        starting.result()
    except OSError:
        # the address (the app's own startup failures are LifespanError): said as the built-in
        # server says it, one line saying what to change (status 1 from the CLI), not as a
        # failed start of the app
        with explained_bind(host, port):
            raise
    except Exception as exc:
        print(f"poolalloc serve: could not start: {exc}", file=sys.stderr)
        return 3
    h, p = server.address
    print(
        f"poolalloc serve: pid {os.getpid()} serving ASGI app on http://{h}:{p}",
        file=sys.stderr,
        flush=True,
    )
    if ready is not None:
        ready((h, p))
    await stop.wait()
    print(f"poolalloc serve: pid {os.getpid()} shutting down", file=sys.stderr, flush=True)
    graceful = loop.create_task(server.shutdown(graceful_timeout))
    signalled = loop.create_task(again.wait())
    await asyncio.wait({graceful, signalled}, return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if not graceful.done():
        print(
            f"poolalloc serve: pid {os.getpid()} signal received again: stopping now "
            "(requests in flight cancelled, no lifespan shutdown)",
            file=sys.stderr,
            flush=True,
        )
        graceful.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await graceful
        await server._stop_now()
    else:
        graceful.result()
    return 0
