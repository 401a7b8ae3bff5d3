"""``poolalloc serve --app module:app``: import as uvicorn does, workers, graceful SIGTERM."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from poolalloc.net.asgi import import_app

pytestmark = [pytest.mark.net, pytest.mark.timeout(90)]

LISTENING = r"serving ASGI app on http://[^:]+:(\d+)"

#: the head of every test app: lifespan messages answered, the shutdown's said on stdout
APP_HEAD = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                print("lifespan shutdown ran", flush=True)
                return
"""

APP = (
    APP_HEAD
    + """    if scope["path"] == "/slow":
        print("slow request started", flush=True)
        await asyncio.sleep(1.0)
    body = b"pid %d" % os.getpid()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "myservice.py").write_text(APP)
    return tmp_path


def start(app_dir: Path, *extra: str, cwd: Path | None = None) -> tuple[Any, list[int], Path]:
    log = app_dir / "server.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "myservice:app", "--port", "0",
         *extra],
        stdout=out, stderr=subprocess.STDOUT, cwd=cwd or os.getcwd(),
    )  # fmt: skip
    deadline = time.monotonic() + 30
    ports: list[int] = []
    want = 2 if "--workers" in extra else 1
    while len(ports) < want:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        ports = [int(p) for p in re.findall(LISTENING, log.read_text())]
        time.sleep(0.05)
    return proc, ports, log


def await_line(log: Path, line: str, proc: Any = None, seconds: float = 10) -> None:
    """Wait until the server's log says ``line`` (failing with the log if it never does, or
    if ``proc`` exits first)."""
    deadline = time.monotonic() + seconds
    while line not in log.read_text():
        assert proc is None or proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


def timed_stop(proc: Any, signum: int, seconds: float = 10) -> tuple[int, float]:
    """Send ``signum``; the exit status and the seconds it took to exit."""
    began = time.monotonic()
    proc.send_signal(signum)
    status = proc.wait(seconds)
    return status, time.monotonic() - began


def test_app_dir_import_serve_and_graceful_sigterm(app_dir: Path) -> None:
    proc, (port,), log = start(app_dir, "--app-dir", str(app_dir))
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(url + "/", timeout=10).text == f"pid {proc.pid}"
        answers: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: answers.append(httpx.get(url + "/slow", timeout=10))
        )
        thread.start()
        await_line(log, "slow request started")  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        thread.join(10)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answers[0].status_code == 200  # finished, not cut off
    assert "lifespan shutdown ran" in log.read_text()


def test_current_directory_is_on_the_path(app_dir: Path) -> None:
    proc, (port,), _ = start(app_dir, cwd=app_dir)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_workers_share_the_port(app_dir: Path) -> None:
    proc, ports, _ = start(app_dir, "--app-dir", str(app_dir), "--workers", "2")
    try:
        assert len(set(ports)) == 1
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(timeout=10) as client:  # new connections spread over the workers
                pids.add(client.get(f"http://127.0.0.1:{ports[0]}/").text)
        assert len(pids) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_bad_app_specs_are_clear_errors(app_dir: Path) -> None:
    with pytest.raises(ValueError, match="module:attribute"):
        import_app("myservice", str(app_dir))
    with pytest.raises(ValueError, match="could not import module 'nothere'"):
        import_app("nothere:app", str(app_dir))
    with pytest.raises(ValueError, match="attribute 'nope' not found"):
        import_app("myservice:nope", str(app_dir))
    assert callable(import_app("myservice:app", str(app_dir)))
    run = subprocess.run(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "nothere:app", "--port", "0"],
        check=False, capture_output=True, text=True, timeout=30, cwd=app_dir,
    )  # fmt: skip
    assert run.returncode != 0
    assert "could not import module 'nothere'" in run.stderr
    # a spec without the colon is a bad command line: status 2, as every bad value is
    run = subprocess.run(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "myservice", "--port", "0"],
        check=False, capture_output=True, text=True, timeout=30, cwd=app_dir,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "'module:attribute', not 'myservice'" in run.stderr
    assert "see poolalloc serve --help" in run.stderr


def test_idle_timeout_and_buffer_capacity_reach_the_application_server(app_dir: Path) -> None:
    """``--idle-timeout`` closes an idle keep-alive connection after that many seconds (not the
    5 s default), and ``--buffer-capacity`` bounds the read buffers: with one, a connection is
    served while a second one, which would need another buffer, is answered 503 and closed."""
    proc, (port,), _ = start(
        app_dir, "--app-dir", str(app_dir), "--idle-timeout", "0.5", "--buffer-capacity", "1"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert first.recv(1000).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
                second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := second.recv(1000):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 503 ")  # no buffer left for it
                assert b"\r\nconnection: close\r\n" in answer
            started = time.monotonic()
            assert first.recv(1000) == b""  # the idle connection is closed by the server
            assert time.monotonic() - started < 3.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


SLOW_STARTUP = """
import asyncio

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await asyncio.sleep(30)  # a startup that takes far longer than the timeout allows
    await send({"type": "lifespan.startup.complete"})
"""


def test_lifespan_timeout_bounds_a_slow_startup(tmp_path: Path) -> None:
    """``--lifespan-timeout 0.3``: an application whose startup sleeps 30 s makes the server
    exit with status 3 and a message naming the timeout, in about that time (not 60 s)."""
    (tmp_path / "slowstart.py").write_text(SLOW_STARTUP)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "slowstart:app", "--port", "0",
         "--lifespan-timeout", "0.3"],
        check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    took = time.monotonic() - started
    assert run.returncode == 3, run.stderr
    assert "could not start: lifespan startup did not complete in 0.3 s" in run.stderr
    assert took < 10, took  # the interpreter's start and the imports, plus 0.3 s


FAILING_STARTUP = """
async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})
"""


def test_workers_whose_startup_fails_end_the_server(tmp_path: Path) -> None:
    """Workers whose application cannot start are not forked again and again: the parent
    stops after a few, with one line and the application server's status 3 (as one worker)."""
    (tmp_path / "broken.py").write_text(FAILING_STARTUP)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "broken:app", "--port", "0",
         "--workers", "2", "--app-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert time.monotonic() - began < 30
    assert done.returncode == 3, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("poolalloc serve: 5 workers in a row ended within 5 s"), done.stderr
    assert "exited with status 3): stopping" in last
    assert done.stderr.count("workers in a row") == 1


STUCK_APP = (
    APP_HEAD
    + """    print("stuck request started", flush=True)
    try:
        await asyncio.sleep(3600)
    finally:
        print("stuck request ended", flush=True)
"""
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_sigint_stops_a_graceful_shutdown_at_once(tmp_path: Path, signum: int) -> None:
    """The graceful shutdown (begun by ``signum``) waits up to 30 s for a request in flight;
    a second SIGINT (the second Ctrl-C) stops the server at once, as uvicorn's does: the
    requests left are cancelled (their ``finally`` blocks run). It was ignored: the server
    waited on. A repeated SIGTERM does not stop it (with --workers one Ctrl-C reaches a worker
    from the terminal and again as the supervisor's SIGTERM; it must stay graceful)."""
    (tmp_path / "myservice.py").write_text(STUCK_APP)
    proc, (port,), log = start(tmp_path, "--app-dir", str(tmp_path))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await_line(log, "stuck request started")
            proc.send_signal(signum)
            await_line(log, "shutting down")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()  # a repeated SIGTERM: still graceful
            status, took = timed_stop(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert status == 0, text
    assert took < 5, text
    assert "stuck request ended" in text
    assert "signal received again: stopping now" in text


def test_a_sigint_and_a_sigterm_that_come_together_are_one_stop(tmp_path: Path) -> None:
    """One Ctrl-C with --workers reaches a worker as SIGINT (the terminal) and SIGTERM (the
    supervisor), often both pending when it next runs: Linux runs the SIGTERM handler first,
    and the SIGINT after it was taken for a second Ctrl-C, which cancelled the requests in
    flight. Sent back to back here, three times (the order is up to the scheduler): the
    shutdown stays graceful; a later SIGINT still stops it at once."""
    (tmp_path / "myservice.py").write_text(STUCK_APP)
    for _ in range(3):
        proc, (port,), log = start(tmp_path, "--app-dir", str(tmp_path))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await_line(log, "stuck request started")
                os.kill(proc.pid, signal.SIGINT)
                os.kill(proc.pid, signal.SIGTERM)
                await_line(log, "shutting down")
                time.sleep(0.5)
                assert proc.poll() is None, log.read_text()  # still graceful
                assert "again" not in log.read_text()
                status, took = timed_stop(proc, signal.SIGINT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert status == 0, log.read_text()
        assert took < 5, log.read_text()  # the later SIGINT still stops it at once
        assert "signal received again: stopping now" in log.read_text()


HANGING_STARTUP = """
import asyncio

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    print("startup began", flush=True)
    try:
        await asyncio.sleep(3600)
    finally:
        print("startup ended", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_during_a_hanging_startup_ends_the_server_at_once(
    tmp_path: Path, signum: int
) -> None:
    """Ctrl-C (or SIGTERM) while the app's lifespan startup hangs stops the server at once,
    the app's startup cancelled (its ``finally`` blocks run). It was ignored until the
    startup's timeout (60 s by default)."""
    (tmp_path / "hangs.py").write_text(HANGING_STARTUP)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "poolalloc", "serve", "--app", "hangs:app", "--port", "0",
             "--app-dir", str(tmp_path)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        await_line(log, "startup began", proc, seconds=30)
        status, took = timed_stop(proc, signum, seconds=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert status == 0, text
    assert took < 5, text
    assert "startup ended" in text
    assert "stopped during the application's startup" in text
    assert "serving ASGI app" not in text


BODY_READER = (
    APP_HEAD
    + """    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})
"""
)


def test_body_timeout_and_rate_reach_the_application_server(tmp_path: Path) -> None:
    """``--body-timeout`` and ``--body-min-rate`` bound a request body with ``--app`` as they
    do for the built-in server: a body trickled in at 2 bytes a second against a minimum of
    5 is answered 408 about a second in, far from its 20 s end."""
    (tmp_path / "myservice.py").write_text(BODY_READER)
    proc, (port,), log = start(
        tmp_path, "--app-dir", str(tmp_path), "--body-timeout", "0.5", "--body-min-rate", "5"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n")
            began = time.monotonic()
            for _ in range(40):
                if select.select([client], [], [], 0.5)[0]:
                    break  # answered
                client.sendall(b"z")
            reply = client.recv(65536)
            took = time.monotonic() - began
    finally:
        timed_stop(proc, signal.SIGTERM)
    assert reply.startswith(b"HTTP/1.1 408 "), (reply, log.read_text())
    assert took < 5
