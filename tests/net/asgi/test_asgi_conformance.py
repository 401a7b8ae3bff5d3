"""Every ASGI message type the server claims, driven by a raw app, on poolalloc and on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from asgi_test_apps import Recorder

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


@pytest.fixture(params=["poolalloc", "uvicorn"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_http_request_more_body(kind: str, make_server: Any) -> None:
    app = Recorder()
    server = make_server(kind, app)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        for piece in (b"a" * 1000, b"b" * 2000, b"c" * 3):
            time.sleep(0.05)  # separate reads: separate http.request messages
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.05)
        sock.sendall(b"0\r\n\r\n")
        reply = read_response(sock)
    assert reply.endswith(b"a" * 1000 + b"b" * 2000 + b"c" * 3)
    messages = app.received
    assert all(m["type"] == "http.request" for m in messages)
    assert len(messages) >= 2
    assert [m["more_body"] for m in messages] == [True] * (len(messages) - 1) + [False]
    assert sum(m["size"] for m in messages) == 3003


def test_http_response_body_more_body(kind: str, make_server: Any) -> None:
    server = make_server(kind, Recorder())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/chunks")
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.text == "one,two,three"


def test_http_disconnect(kind: str, make_server: Any) -> None:
    app = Recorder()
    server = make_server(kind, app)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"start" not in got:
            got += sock.recv(4096)
    wait_for(app.disconnected.is_set)
    assert app.received[-1] == {"type": "http.disconnect"}


def test_lifespan_startup_state_and_shutdown(kind: str, make_server: Any) -> None:
    app = Recorder()
    server = make_server(kind, app)
    assert app.lifespan == ["lifespan.startup"]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/state").text == "True"
    server.stop()
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def test_no_response_is_a_500(kind: str, make_server: Any) -> None:
    server = make_server(kind, Recorder())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/no-response").status_code == 500


def test_graceful_shutdown_finishes_in_flight_requests(kind: str, make_server: Any) -> None:
    app = Recorder()
    server = make_server(kind, app)
    answers: list[httpx.Response] = []

    def slow() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            answers.append(client.get("/slow?0.5"))

    thread = threading.Thread(target=slow)
    thread.start()
    assert app.in_slow.wait(10)  # the request is in the app now
    server.stop()
    thread.join(10)
    assert answers[0].status_code == 200
    assert answers[0].text == "slow done"


class _AfterResponse:
    """An app whose work goes on after its response (a Starlette ``BackgroundTask``), and whose
    lifespan shutdown closes what that work needs."""

    def __init__(self, work: float) -> None:
        self.work = work
        self.events: list[str] = []
        self.answered = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            self.events.append("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"queued"})
        self.answered.set()
        try:
            await asyncio.sleep(self.work)
            self.events.append("work done")
        except asyncio.CancelledError:
            self.events.append("work cancelled")
            raise


def test_shutdown_waits_for_work_after_the_response(kind: str, make_server: Any) -> None:
    """Work an app does after its response ends before the lifespan shutdown (which closes
    what it uses), as uvicorn waits for it: it was dropped with the loop, never finished."""
    app = _AfterResponse(0.5)
    server = make_server(kind, app)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/").text == "queued"
    assert app.answered.wait(10)
    server.stop()
    assert app.events == ["work done", "lifespan shutdown"]


def test_shutdown_cancels_work_past_the_graceful_timeout() -> None:
    """Work still running at the end of the graceful timeout is cancelled (its ``finally``
    blocks run) before the lifespan shutdown, and the server says so."""
    from poolalloc.net.asgi import AsgiServer

    app = _AfterResponse(30)

    async def main() -> float:
        server = AsgiServer(app, port=0)
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"queued")
        began = time.monotonic()
        await server.shutdown(timeout=0.3)
        writer.close()
        return time.monotonic() - began

    took = asyncio.run(asyncio.wait_for(main(), 20))
    assert 0.3 <= took < 5
    assert app.events == ["work cancelled", "lifespan shutdown"]


def test_app_exception_logs_a_traceback(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    from asgi_test_apps import starlette_app

    server = make_server("poolalloc", starlette_app)
    with caplog.at_level(logging.ERROR, logger="poolalloc.asgi"):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            r = client.get("/boom")
        wait_for(lambda: any("on purpose" in rec.getMessage() for rec in caplog.records))
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    message = next(rec.getMessage() for rec in caplog.records if "on purpose" in rec.getMessage())
    assert "Traceback" in message
    assert "RuntimeError: the app failed on purpose" in message


def test_expect_100_continue(kind: str, make_server: Any) -> None:
    server = make_server(kind, Recorder())
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"hello")
        reply = interim + read_response(sock)
    assert reply.endswith(b"hello")


def test_response_head_names_each_header_once(kind: str, make_server: Any) -> None:
    from asgi_test_apps import hello_world

    server = make_server(kind, hello_world)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_response(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
    assert names.count(b"content-length") == 1
    assert names.count(b"content-type") == 1
    assert body == b"Hello, World!"


def _after_one_request(then: bytes) -> tuple[bytes, bytes, float]:
    """One request to a server with a 0.3 s keep-alive timeout, then ``then`` on the same
    connection: (the first answer, everything until EOF after it, seconds until that EOF)."""
    import asyncio

    from asgi_test_apps import hello_world

    from poolalloc.net.asgi import AsgiServer

    async def main() -> tuple[bytes, bytes, float]:
        server = AsgiServer(hello_world, "127.0.0.1", 0, keep_alive_timeout=0.3, lifespan="off")
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"Hello, World!")
        started = time.monotonic()
        writer.write(then)
        rest = await asyncio.wait_for(reader.read(), 5)  # a reset raises here
        waited = time.monotonic() - started
        writer.close()
        await server.shutdown(1)
        return first, rest, waited

    return asyncio.run(main())


def test_idle_keep_alive_connections_close(make_server: Any) -> None:
    """An idle keep-alive connection is closed with a FIN (a clean EOF, not a reset)."""
    first, rest, waited = _after_one_request(b"")
    assert first.endswith(b"Hello, World!")
    assert rest == b""
    assert 0.1 < waited < 3


def test_a_head_not_finished_in_time_gets_a_408() -> None:
    """RFC 9110 15.5.9: a head still unfinished at the keep-alive timeout is answered 408 with
    ``Connection: close``, then the connection is closed (a FIN)."""
    first, rest, waited = _after_one_request(b"GET / HTT")  # a head that never completes
    assert first.endswith(b"Hello, World!")
    head = rest.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 408 ")
    assert b"\r\nconnection: close" in head
    assert 0.1 < waited < 3


def test_a_head_begun_while_a_long_request_runs_gets_the_whole_timeout() -> None:
    """A pipelined head that starts arriving near the end of a request longer than the
    keep-alive timeout has that timeout from the end of the request, not from before it."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.7)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> tuple[bytes, float]:
        server = AsgiServer(app, "127.0.0.1", 0, keep_alive_timeout=0.4, lifespan="off")
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.6)
        writer.write(b"GET /fast HTTP/1.1\r\nHo")  # the next head begins, pipelined
        await reader.readuntil(b"ok")
        answered = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)
        waited = time.monotonic() - answered
        writer.close()
        await server.shutdown(1)
        return rest, waited

    rest, waited = asyncio.run(main())
    assert rest.lower().startswith(b"http/1.1 408 ")
    assert waited > 0.3  # the old stamp gave it what was left of the timeout before /slow


def test_body_over_the_limit_is_a_413() -> None:
    import asyncio

    from asgi_test_apps import hello_world

    from poolalloc.net.asgi import AsgiServer

    async def main() -> tuple[bytes, bytes]:
        server = AsgiServer(hello_world, "127.0.0.1", 0, max_body=1000, lifespan="off")
        await server.start()
        replies = []
        for head in (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e9\r\n" + b"z" * 1001 + b"\r\n0\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(head)
            replies.append(await asyncio.wait_for(reader.read(), 5))
            writer.close()
        await server.shutdown(1)
        return replies[0], replies[1]

    by_length, chunked = asyncio.run(main())
    assert by_length.startswith(b"HTTP/1.1 413 ")
    assert chunked.startswith(b"HTTP/1.1 413 ")


def test_lifespan_failed_and_unsupported() -> None:
    import asyncio

    from poolalloc.net.asgi import AsgiServer, LifespanError

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("only http here")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async def main() -> bytes:
        with pytest.raises(LifespanError, match="no database"):
            await AsgiServer(failing, "127.0.0.1", 0).start()
        with pytest.raises(LifespanError):
            await AsgiServer(http_only, "127.0.0.1", 0, lifespan="on").start()
        server = AsgiServer(http_only, "127.0.0.1", 0)  # auto: served without lifespan
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await server.shutdown(1)
        return reply

    reply = asyncio.run(main())
    assert reply.startswith(b"HTTP/1.1 204 ")
    assert b"content-length" not in reply.lower()  # 204 has no body and no length


def test_a_lifespan_that_never_completes_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """An app stuck in its lifespan startup or shutdown neither hangs the server's start nor
    its exit: past ``lifespan_timeout`` the startup fails, a shutdown is given up and logged,
    and the app's lifespan task is cancelled either way."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer, LifespanError

    cancelled: list[str] = []

    def stuck_in(phase: str) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            try:
                while True:
                    message = await receive()
                    if message["type"] == phase:
                        await asyncio.sleep(3600)
                    await send({"type": message["type"] + ".complete"})
            except asyncio.CancelledError:
                cancelled.append(phase)
                raise

        return app

    async def main() -> tuple[float, float]:
        t0 = time.monotonic()
        with pytest.raises(LifespanError, match=r"did not complete in 0\.2 s"):
            await AsgiServer(stuck_in("lifespan.startup"), port=0, lifespan_timeout=0.2).start()
        startup = time.monotonic() - t0
        server = AsgiServer(stuck_in("lifespan.shutdown"), port=0, lifespan_timeout=0.2)
        await server.start()
        t0 = time.monotonic()
        await server.shutdown(1)
        return startup, time.monotonic() - t0

    with caplog.at_level(logging.ERROR, logger="poolalloc.asgi"):
        startup, shutdown = asyncio.run(asyncio.wait_for(main(), 30))
    assert 0.2 <= startup < 5
    assert 0.2 <= shutdown < 5
    assert cancelled == ["lifespan.startup", "lifespan.shutdown"]
    assert any("shutdown did not complete in 0.2 s" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="lifespan_timeout"):
        AsgiServer(stuck_in("x"), port=0, lifespan_timeout=0)


SWALLOWS_CANCELLATION = """
import asyncio, logging, sys

from poolalloc.net.asgi import AsgiServer, LifespanError

phase, loop_name, stubborn = sys.argv[1], sys.argv[2], sys.argv[3] == "stubborn"
logging.basicConfig(level=logging.ERROR, format="%(message)s")


async def app(scope, receive, send):
    await receive()
    if phase == "shutdown":
        await send({"type": "lifespan.startup.complete"})
        await receive()
    while True:  # never completes, and goes on after each cancellation
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("swallowed", flush=True)
        except GeneratorExit:
            if not stubborn:
                raise
            print("ignored GeneratorExit", flush=True)


async def main():
    server = AsgiServer(app, port=0, lifespan_timeout=0.2)
    try:
        await server.start()
    except LifespanError as exc:
        print("start:", exc, flush=True)
        return
    await server.shutdown(1)
    print("shutdown returned", flush=True)


if loop_name == "asyncio":
    asyncio.run(main())
else:
    __import__("uvloop").run(main())
print("asyncio.run returned", flush=True)
"""


def _swallower(tmp_path: Any, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "swallower.py"
    script.write_text(SWALLOWS_CANCELLATION)
    started = time.monotonic()
    try:
        run = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")
    return run, time.monotonic() - started


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("phase", ["startup", "shutdown"])
def test_a_lifespan_task_that_swallows_its_cancellation_does_not_hang_asyncio_run(
    tmp_path: Any, phase: str, loop: str
) -> None:
    """An app whose lifespan task catches the cancellation and waits again (stuck in its
    startup, or in its shutdown) left a task that ``asyncio.run()`` waited for forever at its
    teardown: the server now closes its coroutine a second after the cancellation, says so
    naming the task, and ``asyncio.run()`` returns."""
    pytest.importorskip(loop)
    run, took = _swallower(tmp_path, phase, loop, "-")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "swallowed"
    expected = "start: lifespan startup did not complete" if phase == "startup" else "shutdown "
    assert lines[1].startswith(expected)
    assert lines[-1] == "asyncio.run returned"
    assert "task 'lifespan of the ASGI application app'" not in run.stderr  # named by its repr
    assert "name='lifespan of the ASGI application app'" in run.stderr
    assert "ignored its cancellation: closing its coroutine" in run.stderr
    assert "Task exception was never retrieved" not in run.stderr
    assert took < 15


def test_a_lifespan_app_that_ignores_generator_exit_does_not_hang_asyncio_run(
    tmp_path: Any,
) -> None:
    """An app coroutine that ignores its cancellation and ``GeneratorExit`` too: closing the
    server's own coroutine around it still ends the lifespan task (the app's coroutine is
    left suspended, no task's), ``shutdown()`` returns and so does ``asyncio.run()``."""
    run, took = _swallower(tmp_path, "shutdown", "asyncio", "stubborn")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["swallowed", "ignored GeneratorExit"]
    assert lines[-2:] == ["shutdown returned", "asyncio.run returned"]
    assert "ignored its cancellation: closing its coroutine" in run.stderr
    assert "RuntimeError: coroutine ignored GeneratorExit" in run.stderr  # the app's, logged
    assert took < 15


def _stalled_body(app: Any) -> tuple[bytes, float, dict[str, float]]:
    """A POST that says 1000 bytes of body, sends 10 and stalls, to a server whose
    ``idle_timeout`` is 0.3 s: (everything until EOF, seconds until that EOF, the metrics)."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    async def main() -> tuple[bytes, float, dict[str, float]]:
        server = AsgiServer(app, "127.0.0.1", 0, idle_timeout=0.3, lifespan="off")
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"z" * 10)
        started = time.monotonic()
        reply = await asyncio.wait_for(reader.read(), 5)  # the server must end it
        waited = time.monotonic() - started
        for _ in range(100):  # the app's task ends on the loop after the connection
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        metrics = server.metrics()
        writer.close()
        await server.shutdown(1)
        return reply, waited, metrics

    return asyncio.run(main())


def test_a_stalled_body_gets_a_408_and_the_app_a_disconnect() -> None:
    """RFC 9110 15.5.9: a body that stops arriving while the app waits for it is answered
    408 with ``Connection: close`` at ``idle_timeout``; the app's ``receive()`` returns
    ``http.disconnect``, and the timeout is counted."""
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append((message["type"], len(message.get("body", b""))))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    reply, waited, metrics = _stalled_body(app)
    head = reply.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 408 "), reply
    assert b"\r\nconnection: close" in head
    assert b"late" not in reply  # the app's answer after the timeout is dropped
    assert received == [("http.request", 10), ("http.disconnect", 0)]
    assert 0.1 < waited < 3
    assert metrics["timeouts_total"] == 1
    assert metrics["connections_active"] == 0


def test_a_stalled_body_after_the_response_began_closes_the_connection() -> None:
    """A response already under way cannot become a 408: the connection just closes, and the
    app waiting for the rest of the body gets ``http.disconnect``."""
    received: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"echo:", "more_body": True})
        while True:
            message = await receive()
            received.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
            await send({"type": "http.response.body", "body": message["body"],
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    reply, waited, metrics = _stalled_body(app)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b" 408 " not in reply
    assert b"\r\n\r\n5\r\necho:\r\na\r\nzzzzzzzzzz\r\n" in reply
    assert received == ["http.request", "http.disconnect"]
    assert 0.1 < waited < 3
    assert metrics["timeouts_total"] == 1


def test_a_stalled_body_beside_a_response_the_client_never_reads_is_counted_once() -> None:
    """An app streaming its response while it waits for the rest of the request body (as
    Starlette's ``StreamingResponse(request.stream())`` does), to a client that stops sending
    and reads nothing: the body's timeout ends the connection, and ``timeouts_total`` rises by
    exactly one (the stalled send's watch and the closing connection's counted it again)."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            with contextlib.suppress(OSError):
                for _ in range(2000):  # far more than the socket buffers hold
                    await send({"type": "http.response.body", "body": b"x" * 65536,
                                "more_body": True})  # fmt: skip

        streaming = asyncio.ensure_future(stream())
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await streaming

    async def main() -> tuple[dict[str, float], dict[str, float]]:
        server = AsgiServer(app, "127.0.0.1", 0, idle_timeout=0.5, lifespan="off")
        await server.start()
        before = server.metrics()
        with socket.create_connection(server.address) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                           + b"z" * 10)  # fmt: skip
            for _ in range(300):  # the connection ends one timeout in
                await asyncio.sleep(0.01)
                if not server.connections:
                    break
            await asyncio.sleep(1.5)  # past any watch that was still to fire (two timeouts)
            after = server.metrics()
        await server.shutdown(1)
        return before, after

    before, after = asyncio.run(main())
    assert after["connections_active"] == 0
    assert after["timeouts_total"] - before["timeouts_total"] == 1


def test_a_lifespan_app_waiting_in_receive_after_its_shutdown_is_cancelled_at_once() -> None:
    """An app that reports ``lifespan.shutdown.complete`` and then waits in ``receive()``
    again (a ``while True`` loop that does not return) waits for a message that never comes:
    its task is cancelled at once, not after the second a returning task is given."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    cancelled: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> float:
        server = AsgiServer(app, port=0)
        await server.start()
        started = time.monotonic()
        await server.shutdown(1)
        return time.monotonic() - started

    took = asyncio.run(asyncio.wait_for(main(), 30))
    assert cancelled == [True]
    assert took < 0.5, took


def test_a_request_that_shuts_the_server_down_ends_it() -> None:
    """An application's own request may call ``shutdown()`` (an admin route): the server does
    not wait for that request to end (it cannot while it waits) nor cancel it, and the
    lifespan shutdown runs."""
    from poolalloc.net.asgi import AsgiServer

    events: list[str] = []
    servers: list[AsgiServer] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            events.append("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"bye"})
        await servers[0].shutdown(timeout=5)
        events.append("shutdown returned")

    async def main() -> float:
        server = AsgiServer(app, port=0)
        servers.append(server)
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        began = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.read()
        while "shutdown returned" not in events and time.monotonic() - began < 10:
            await asyncio.sleep(0.01)
        writer.close()
        return time.monotonic() - began

    took = asyncio.run(asyncio.wait_for(main(), 20))
    assert events == ["lifespan shutdown", "shutdown returned"]
    assert took < 3


def test_a_request_that_shuts_the_server_down_before_it_answers_is_answered() -> None:
    """An admin route that calls ``shutdown()`` and then answers: its own connection was
    waited for (it could not end while the route waited), so the call took the whole
    timeout and the connection was then reset, its answer lost."""
    from poolalloc.net.asgi import AsgiServer

    servers: list[AsgiServer] = []
    took: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        began = time.monotonic()
        await servers[0].shutdown(timeout=5)
        took.append(time.monotonic() - began)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"stopped"})

    async def main() -> bytes:
        server = AsgiServer(app, port=0, lifespan="off")
        servers.append(server)
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer

    answer = asyncio.run(asyncio.wait_for(main(), 20))
    assert answer.endswith(b"stopped"), answer
    assert took[0] < 2


def test_a_request_task_that_swallows_its_cancellation_does_not_hang_asyncio_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the graceful timeout the request tasks left are cancelled; one that swallowed the
    cancellation kept ``asyncio.run()`` waiting forever at its teardown. Its coroutine is now
    closed, as the lifespan task's is."""
    from poolalloc.net.asgi import AsgiServer

    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        started.set()
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # swallowed, every time
                await asyncio.sleep(3600)

    async def main() -> None:
        server = AsgiServer(app, port=0, lifespan="off")
        await server.start()
        _, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await started.wait()
        await server.shutdown(timeout=0.2)
        writer.close()

    def run() -> None:
        asyncio.run(main())

    worker = threading.Thread(target=run, daemon=True)
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="poolalloc.asgi"):
        worker.start()
        worker.join(20)
    assert not worker.is_alive(), "asyncio.run() still waits for the request task"
    assert time.monotonic() - began < 10
    assert "ignored its cancellation: closing its coroutine" in caplog.text


def test_serve_with_workers_refuses_a_bad_timeout_before_it_forks() -> None:
    """With workers, each forked worker refused ``keep_alive_timeout=nan`` in turn until the
    supervisor gave up (five failed starts); ``serve()`` refuses it itself now."""
    from poolalloc.net.asgi import serve

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never served")  # pragma: no cover

    began = time.monotonic()
    with pytest.raises(ValueError, match="keep_alive_timeout must be a number of seconds"):
        serve(app, port=0, workers=2, keep_alive_timeout=float("nan"))
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("name", ["keep_alive_timeout", "idle_timeout", "lifespan_timeout"])
@pytest.mark.parametrize("value", [float("nan"), 0, -1.0, "5", None, True])
def test_timeouts_that_are_not_seconds_are_refused(name: str, value: Any) -> None:
    """A timeout is a number of seconds above 0 (inf: none). A NaN keep-alive timeout was
    taken, and its timer broke the scheduling of every timer of the loop (the application's
    ``asyncio.sleep`` never woke); a negative one closed each connection at once; a string
    failed at the first connection."""
    from poolalloc.net.asgi import AsgiServer

    expected = TypeError if isinstance(value, str | None | bool) else ValueError
    with pytest.raises(expected, match=f"{name} must be a number of seconds above 0"):
        AsgiServer(Recorder(), port=0, **{name: value})
    AsgiServer(Recorder(), port=0, **{name: float("inf")})  # inf: no limit, taken


@pytest.mark.timeout(20)  # were the value taken, serve() would serve until killed
@pytest.mark.parametrize("value", [float("nan"), -1.0, "5"])
def test_a_graceful_timeout_that_is_not_seconds_is_refused(value: Any) -> None:
    """``serve(graceful_timeout=nan)`` waited for nothing (no time is below NaN)."""
    from poolalloc.net.asgi import serve

    with pytest.raises((TypeError, ValueError), match="graceful_timeout must be a number"):
        serve(Recorder(), port=0, graceful_timeout=value)


async def _read_body(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, then answers its length (or nothing after a disconnect)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})


def _trickle(
    gap: float, count: int, *, expect_100: bool = False, body_timeout: float = 0.6
) -> tuple[bytes, float, float]:
    """A POST of ``count`` body bytes sent one every ``gap`` seconds to a server whose body
    must be whole within ``body_timeout`` plus a second per 5 bytes (``idle_timeout`` far
    above every gap): (everything until EOF, seconds from the first body byte to that EOF,
    timeouts).
    The client stops sending once the server has said something."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    def client(address: tuple[str, int]) -> tuple[bytes, float]:
        with socket.create_connection(address, timeout=10) as sock:
            head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n"
            sock.sendall(
                head % count + (b"Expect: 100-continue\r\n\r\n" if expect_100 else b"\r\n")
            )
            if expect_100:  # the clock starts with the 100 Continue, a second in, not before
                assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
            started = time.monotonic()
            for _ in range(count):
                if select.select([sock], [], [], gap)[0]:
                    break  # answered early
                sock.sendall(b"z")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            return reply, time.monotonic() - started

    async def late_reader(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(1.0)  # the 100 Continue goes out with its first receive()
        await _read_body(scope, receive, send)

    async def main() -> tuple[bytes, float, float]:
        server = AsgiServer(
            late_reader if expect_100 else _read_body, "127.0.0.1", 0, idle_timeout=30,
            body_timeout=body_timeout, body_min_rate=5, lifespan="off",
        )  # fmt: skip
        await server.start()
        reply, waited = await asyncio.to_thread(client, server.address)
        timeouts = server.metrics()["timeouts_total"]
        await server.shutdown(1)
        return reply, waited, timeouts

    return asyncio.run(main())


def test_a_body_trickled_below_the_minimum_rate_gets_a_408() -> None:
    """A body sent a byte at a time, each gap far below ``idle_timeout``, held its request
    (and connection) for as long as the client liked: it must now be whole within
    ``body_timeout`` plus a second per ``body_min_rate`` bytes received (the HTTP server's
    rule), else 408 and a close. Here 3.3 bytes a second against a minimum of 5: past the
    deadline after about 6 bytes, 1.8 s in, of the 40 the whole body would take 12 s for."""
    reply, waited, timeouts = _trickle(0.3, 40)
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert 1.0 < waited < 5, waited
    assert timeouts == 1


@pytest.mark.parametrize("expect_100", [False, True], ids=["plain", "expect-100"])
def test_a_body_at_the_minimum_rate_is_read_whole(expect_100: bool) -> None:
    """A slow body that keeps up with ``body_min_rate`` (10 bytes a second against 5) is
    read to its end, 2 s for a ``body_timeout`` of 1.5 s (the first byte 1.4 s before its
    deadline: a client stalled on a loaded machine is not taken for a slow one); with
    ``Expect: 100-continue`` the clock starts when the 100 goes out (a second after the head:
    the app's first ``receive()``), not with the head."""
    reply, waited, timeouts = _trickle(0.1, 20, expect_100=expect_100, body_timeout=1.5)
    assert waited > 1.5  # the body took longer than body_timeout, at the rate
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert reply.endswith(b"\r\n\r\n20"), reply
    assert timeouts == 0


def test_a_fast_upload_to_a_slow_app_is_not_timed_out() -> None:
    """The body's clock stops while reading is paused for the app. A client sends 256 KiB of
    its body at once and the last KiB 1.8 s later; the app reads the first part, then works
    for 1.5 s, while the server, holding 64 KiB the app has not taken, reads nothing more. The
    client made the server wait about 0.3 s of its ``body_timeout`` of 1 s (no rate): it got a
    408 at 1.5 s, its clock having run on through the pause."""
    import asyncio

    from poolalloc.net.asgi import AsgiServer

    size = 257 * 1024

    async def slow_reader(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        await asyncio.sleep(1.5)  # reading stays paused: more than a pipeline_limit waits
        total = len(first["body"])
        more = first.get("more_body", False)
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":  # timed out: the 408 went out
                return
            total += len(message["body"])
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})

    def client(address: tuple[str, int]) -> bytes:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % size + b"z" * (size - 1024)
            )
            if not select.select([sock], [], [], 1.8)[0]:  # not answered early
                sock.sendall(b"z" * 1024)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            return reply

    async def main() -> tuple[bytes, float]:
        server = AsgiServer(
            slow_reader, "127.0.0.1", 0, idle_timeout=30, body_timeout=1, body_min_rate=0,
            lifespan="off",
        )  # fmt: skip
        await server.start()
        reply = await asyncio.to_thread(client, server.address)
        timeouts = server.metrics()["timeouts_total"]
        await server.shutdown(1)
        return reply, timeouts

    reply, timeouts = asyncio.run(main())
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert reply.endswith(b"\r\n\r\n%d" % size), reply[-200:]
    assert timeouts == 0


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"body_timeout": 0}, ValueError, "body_timeout must be a number of seconds above 0"),
        ({"body_timeout": "20"}, TypeError, "body_timeout must be a number of seconds"),
        ({"body_min_rate": -1}, ValueError, "body_min_rate must be a number of bytes per second"),
        ({"body_min_rate": math.inf}, ValueError, "body_min_rate must be a number of bytes"),
        ({"body_min_rate": True}, TypeError, "body_min_rate must be a number of bytes"),
    ],
)
def test_body_limits_are_checked(
    options: dict[str, Any], error: type[Exception], says: str
) -> None:
    from poolalloc.net.asgi import AsgiServer, serve

    with pytest.raises(error, match=says):
        AsgiServer(_read_body, port=0, **options)
    with pytest.raises(error, match=says):  # before any worker is forked
        serve(_read_body, port=0, workers=2, **options)


def test_a_server_starts_once() -> None:
    """A second start() ran the lifespan startup again and opened a second listener (the
    first one was never closed); after shutdown() it served from a closed pool."""
    from asgi_test_apps import hello_world

    from poolalloc.net.asgi import AsgiServer

    async def main() -> None:
        server = AsgiServer(hello_world, "127.0.0.1", 0, lifespan="off")
        await server.start()
        with pytest.raises(RuntimeError, match="AsgiServer was started already"):
            await server.start()
        await server.shutdown(1)
        with pytest.raises(RuntimeError, match="AsgiServer was started already"):
            await server.start()

    asyncio.run(main())
