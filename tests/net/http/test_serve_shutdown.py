"""``poolalloc serve`` stopped by a signal: a graceful stop, on both engines, one or N workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from poolalloc.net.http.serve import SIGNALS_TOGETHER, serve, stop_signals

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

SIZE = 32 << 20  # far more than the kernel's socket buffers hold: most of it is unsent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    tmp_path: Path, engine: str, workers: int = 1, *options: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    data = bytes(range(256)) * (SIZE // 256)
    (tmp_path / "big.bin").write_bytes(data)
    port = _free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port)]
    cmd += ["--root", str(tmp_path), "--engine", engine, "--workers", str(workers), *options]
    with log.open("wb") as out:  # from outside the source tree: the installed package
        proc = subprocess.Popen(cmd, stderr=out, cwd=tmp_path)
    _wait_for(log, "listening on", workers)
    return proc, port, log


def _wait_for(log: Path, text: str, count: int = 1) -> None:
    end = time.monotonic() + 20
    while log.read_text().count(text) < count:
        assert time.monotonic() < end, log.read_text()
        time.sleep(0.02)


def _fetch_started(port: int) -> tuple[socket.socket, bytes]:
    """A download of big.bin under way: its head read and 1 MiB of its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data) < 1 << 20:
        chunk = sock.recv(65536)
        assert chunk, data[:200]
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, body


def _read_to_eof(sock: socket.socket, got: bytes) -> bytes:
    parts = [got]
    while chunk := sock.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in _children(proc.pid):
        os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_stop_signal_lets_a_download_in_flight_end_whole(
    tmp_path: Path, engine: str, signum: int, workers: int
) -> None:
    """The download under way when the signal comes gets its whole body and a clean EOF, and
    the server exits 0; a new client is refused meanwhile. It was reset (curl: ``Recv
    failure: Connection reset by peer``, a few MB of 32 MiB received)."""
    proc, port, log = _start(tmp_path, engine, workers)
    try:
        sock, body = _fetch_started(port)
        with sock:
            proc.send_signal(signum)
            _wait_for(log, "shutting down", workers)
            time.sleep(0.2)  # the stop has begun in every worker: its listener is closed
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            body = _read_to_eof(sock, body)
        assert len(body) == SIZE
        assert body == (tmp_path / "big.bin").read_bytes()
        assert proc.wait(20) == 0, log.read_text()
    finally:
        _stop(proc)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_second_sigint_stops_at_once(tmp_path: Path, engine: str, workers: int) -> None:
    """A client that stops reading holds the graceful stop (up to ``--graceful-timeout``, 30 s
    by default); a repeated SIGTERM does not end it (one Ctrl-C reaches a worker from the
    terminal and again as the supervisor's SIGTERM), a second SIGINT does, at once."""
    proc, port, log = _start(tmp_path, engine, workers)
    try:
        sock, _ = _fetch_started(port)
        with sock:
            proc.send_signal(signal.SIGTERM)
            _wait_for(log, "shutting down", workers)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()  # still graceful
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0, log.read_text()
            assert time.monotonic() - began < 5
        assert "signal received again: stopping now" in log.read_text()
    finally:
        _stop(proc)


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_one_ctrl_c_with_workers_is_one_stop_signal(tmp_path: Path, engine: str) -> None:
    """With ``--workers``, one Ctrl-C reaches a worker twice: SIGINT from the terminal and
    SIGTERM from the supervisor, often both pending when the worker next runs. Linux then runs
    the handler of the later signal number first (SIGTERM, then SIGINT), which read as a stop
    and then a second Ctrl-C: the downloads under way were reset. Signals that come together
    are one stop; sent back to back here (as the terminal and the supervisor do), three times,
    since the order is up to the scheduler."""
    for _ in range(3):
        proc, port, log = _start(tmp_path, engine)
        try:
            sock, body = _fetch_started(port)
            with sock:
                os.kill(proc.pid, signal.SIGINT)
                os.kill(proc.pid, signal.SIGTERM)
                body = _read_to_eof(sock, body)
            assert proc.wait(20) == 0, log.read_text()
            assert "again" not in log.read_text(), log.read_text()
            assert len(body) == SIZE
        finally:
            _stop(proc)


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_the_graceful_timeout_bounds_the_stop(tmp_path: Path, engine: str) -> None:
    """``--graceful-timeout 1``: a client that stops reading is reset after a second, and the
    server exits 0: a stop never waits forever."""
    proc, port, log = _start(tmp_path, engine, 1, "--graceful-timeout", "1")
    try:
        sock, _ = _fetch_started(port)
        with sock:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0, log.read_text()
            took = time.monotonic() - began
            assert 0.9 < took < 5, took
        assert "up to 1 s" in log.read_text()
    finally:
        _stop(proc)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "30", True])
def test_serve_refuses_a_bad_graceful_timeout_before_it_listens(bad: object) -> None:
    """Refused by ``serve()`` itself, before a worker is forked or a port bound (each worker
    would fail in turn, and a NaN timer breaks the order of the loop's timers)."""
    with pytest.raises((TypeError, ValueError), match="graceful_timeout"):
        serve("127.0.0.1", 0, workers=2, graceful_timeout=bad)


@pytest.mark.parametrize(
    ("options", "error"),
    [({"body_timeout": 0}, ValueError), ({"body_min_rate": float("nan")}, ValueError),
     ({"body_timeout": "20"}, TypeError), ({"body_min_rate": True}, TypeError)],
)  # fmt: skip
def test_serve_refuses_bad_body_limits_before_it_forks(
    options: dict[str, object], error: type[Exception]
) -> None:
    """As ``graceful_timeout``, and as the ASGI server's ``serve``: five workers each failed in
    turn, and the supervisor gave up with status 1."""
    with pytest.raises(error, match=next(iter(options))):
        serve("127.0.0.1", 0, workers=2, **options)  # type: ignore[arg-type]


def test_stop_signals_take_signals_together_as_one_and_survive_a_failed_stop() -> None:
    """The rule itself, on a loop that records the handlers: a SIGINT right after the first
    signal is part of it; one :data:`SIGNALS_TOGETHER` later stops at once, also when the
    graceful stop raised (it was never taken then: Ctrl-C could not stop the server)."""
    handlers: dict[int, Any] = {}
    calls: list[str] = []

    def add_signal_handler(signum: int, callback: Any, *args: Any) -> None:
        handlers[signum] = lambda: callback(*args)

    def graceful() -> None:
        calls.append("graceful")
        raise RuntimeError("the stop failed")

    stop_signals(add_signal_handler, graceful, lambda: calls.append("now"))
    with pytest.raises(RuntimeError):
        handlers[signal.SIGTERM]()
    handlers[signal.SIGINT]()  # came with the SIGTERM
    assert calls == ["graceful"]
    time.sleep(SIGNALS_TOGETHER + 0.05)
    handlers[signal.SIGTERM]()  # a repeated SIGTERM: nothing
    handlers[signal.SIGINT]()
    assert calls == ["graceful", "now"]
