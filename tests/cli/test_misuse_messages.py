"""Every mistake a user can make on the command line or with the public API gets one line that
says what to change. A table of misuse cases, each with the exact message expected.

(``poolalloc serve`` flag validation and lease/pool misuse have tables of their own.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import poolalloc
from poolalloc import _ffi, leaks, slab
from poolalloc.cli.commands import main
from poolalloc.net import sockets
from poolalloc.net.metrics import prometheus_text

# (arguments, exit status, the one line on stderr)
CLI_CASES: list[tuple[list[str], int, str]] = [
    (["nosuch"], 2, "poolalloc: error: argument COMMAND: invalid choice: 'nosuch' (choose from "
     "'info', 'serve', 'demo', 'bench', 'selfcheck') (see poolalloc --help)"),
    (["info", "--bogus"], 2,
     "poolalloc: error: unrecognized arguments: --bogus (see poolalloc info --help)"),
    (["info", "extra"], 2,
     "poolalloc: error: unrecognized arguments: extra (see poolalloc info --help)"),
    (["selfcheck", "--rounds", "0"], 2, "poolalloc: error: argument --rounds: must be at least "
     "1, got 0 (see poolalloc selfcheck --help)"),
    (["selfcheck", "--threads", "x"], 2, "poolalloc: error: argument --threads: not an integer: "
     "'x' (see poolalloc selfcheck --help)"),
    (["demo", "--connections", "0"], 2, "poolalloc: error: argument --connections: must be at "
     "least 1, got 0 (see poolalloc demo --help)"),
    (["demo", "--timeout", "-1"], 2, "poolalloc: error: argument --timeout: must be a number of "
     "seconds above 0, got -1 (see poolalloc demo --help)"),
    (["demo", "--timeout", "soon"], 2, "poolalloc: error: argument --timeout: not a number: "
     "'soon' (see poolalloc demo --help)"),
    (["demo", "--json", "{tmp}"], 2, "poolalloc: error: argument --json: {tmp} is a directory: "
     "name a file (see poolalloc demo --help)"),
    (["demo", "--json", "{file}/out.json"], 2, "poolalloc: error: argument --json: cannot create "
     "{file}/out.json: {file} is not a directory (see poolalloc demo --help)"),
    (["demo", "--engine", "kqueue"], 2, "poolalloc: error: argument --engine: invalid choice: "
     "'kqueue' (choose from 'epoll', 'uring', 'auto') (see poolalloc demo --help)"),
    (["bench"], 1, "poolalloc: error: no bench/ directory: run from a poolalloc clone or pass "
     "--bench-dir (`poolalloc bench workloads` needs neither)"),
    (["bench", "--bench-dir", "{tmp}"], 1, "poolalloc: error: no {tmp}/suites.py: run from a "
     "poolalloc clone or pass --bench-dir"),
    (["bench", "nosuch"], 2, "poolalloc: error: argument suite: invalid choice: 'nosuch' (choose "
     "from 'workloads', 'alloc', 'objects', 'net', 'zerocopy', 'all') (see poolalloc bench "
     "--help)"),
    (["bench", "--plot", "{file}"], 2, "poolalloc: error: argument --plot: {file} is a file: "
     "name a directory (see poolalloc bench --help)"),
    (["bench", "--json", "{tmp}"], 2, "poolalloc: error: argument --json: {tmp} is a directory: "
     "name a file (see poolalloc bench --help)"),
    (["serve", "--app", "app:app", "--app-dir", "{file}"], 2, "poolalloc: error: argument "
     "--app-dir: {file} is not a directory: give a directory (see poolalloc serve --help)"),
    (["serve", "--app", "app:app", "--app-dir", "{tmp}/none"], 2, "poolalloc: error: argument "
     "--app-dir: {tmp}/none: no such directory: give an existing one (see poolalloc serve "
     "--help)"),
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_misuse_is_one_line(
    case: tuple[list[str], int, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, status, line = case
    monkeypatch.chdir(tmp_path)  # no bench/ here
    (tmp_path / "a-file").write_text("x")
    names = {"tmp": str(tmp_path), "file": str(tmp_path / "a-file")}
    argv = [a.format(**names) for a in argv]
    try:
        got = main(argv)
    except SystemExit as exc:
        got = exc.code
    err = capsys.readouterr().err
    assert err == line.format(**names) + "\n"
    assert got == status


#: the built-in server, and an ASGI application (``app.py`` written by the tests)
SERVERS = [["--engine", "epoll"], ["--app", "app:app"]]
_APP = "async def app(scope, receive, send):\n    pass\n"


@pytest.mark.parametrize("server", SERVERS, ids=["built-in", "asgi"])
def test_busy_port_names_the_address(tmp_path: Path, server: list[str]) -> None:
    """The ASGI server's busy port said 'could not start: [Errno 98] ...', status 3 (a failed
    start of the application), where the built-in server's says what to change."""
    (tmp_path / "app.py").write_text(_APP)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "poolalloc", "serve", "--port", str(port), *server],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
            env={**os.environ, "POOLALLOC_TRACEBACK": ""},
        )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr == (
        f"poolalloc: error: 127.0.0.1:{port} is already in use: stop the program listening "
        "there, or pick another port (0: any free port)\n"
    )


@pytest.mark.parametrize("server", SERVERS, ids=["built-in", "asgi"])
def test_busy_port_with_workers_is_one_line_from_the_parent(
    tmp_path: Path, server: list[str]
) -> None:
    """The parent binds the address once before it forks, so a busy port is one error (not one
    per worker, and no worker starts)."""
    (tmp_path / "app.py").write_text(_APP)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "poolalloc", "serve", "--port", str(port), "--workers", "2",
             *server],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr == (
        f"poolalloc: error: 127.0.0.1:{port} is already in use: stop the program listening "
        "there, or pick another port (0: any free port)\n"
    )


def _socketpair_call(f: Callable[[socket.socket], object]) -> Callable[[], object]:
    def call() -> object:
        a, b = socket.socketpair()
        with a, b:
            return f(a)

    return call


# (what, the call, exception type, the whole message)
API_CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("SlabPool.alloc(0)", lambda: slab.SlabPool().alloc(0), poolalloc.PoolValueError,
     "size must be at least 1 byte, not 0"),
    ("SlabPool.alloc(-1)", lambda: slab.SlabPool().alloc(-1), poolalloc.PoolValueError,
     "size must not be negative: -1"),
    ("SlabPool.alloc('x')", lambda: slab.SlabPool().alloc("x"), poolalloc.PoolValueError,  # type: ignore[arg-type]
     "size must be an int, not str"),
    # above the bound of the huge-request check, but no int: the core's call names the type
    ("SlabPool.alloc(2.0**40)", lambda: slab.SlabPool().alloc(2.0**40), poolalloc.PoolValueError,  # type: ignore[arg-type]
     "size must be an int, not float"),
    ("SlabPool.alloc(None)", lambda: slab.SlabPool().alloc(None), poolalloc.PoolValueError,  # type: ignore[arg-type]
     "size must be an int, not NoneType"),
    # an array's comparison has no one truth: named as no int, not numpy's ValueError
    ("SlabPool.alloc(array)", lambda: slab.SlabPool().alloc(np.array([1, 2])),  # type: ignore[arg-type]
     poolalloc.PoolValueError, "size must be an int, not ndarray"),
    ("alignment 3", lambda: slab.SlabPool().alloc(64, 3), poolalloc.PoolValueError,
     "alignment must be a power of two (64, 128, ..., 4096, ...), not 3"),
    ("alignment 2**30", lambda: slab.SlabPool().alloc(64, 1 << 30), poolalloc.PoolValueError,
     f"alignment must be at most {_ffi.MAX_ALIGN}, not {1 << 30}"),
    ("size_class_of(0)", lambda: slab.size_class_of(0), poolalloc.PoolValueError,
     "size must be at least 1 byte, not 0"),
    ("size_class_of(64, 48)", lambda: slab.size_class_of(64, 48), poolalloc.PoolValueError,
     "alignment must be a power of two (64, 128, ..., 4096, ...), not 48"),
    ("leaks.set_level", lambda: leaks.set_level("verbose"), ValueError,
     "leak tracking level must be one of off, sampled, all, not 'verbose'"),
    ("recvmsg_into count 0", _socketpair_call(
        lambda a: sockets.recvmsg_into(a, poolalloc.BufferPool(64, capacity=1), 0)),
     ValueError, "count must be at least 1"),
    ("sendall_buffers non-blocking", _socketpair_call(
        lambda a: (a.setblocking(False), sockets.sendall_buffers(a, [b"x"]))),
     ValueError, "sendall_buffers needs a blocking socket"),
    ("send_buffers str item", _socketpair_call(lambda a: sockets.send_buffers(a, [b"a", "text"])),  # type: ignore[list-item]
     TypeError, "buffers[1] has type str, not a bytes-like type: encode it first"),
    ("send_buffers one bytes", _socketpair_call(lambda a: sockets.send_buffers(a, b"abc")),
     TypeError, "buffers must be a sequence of buffers, not one bytes: wrap it in a list"),
    ("sendall_buffers int item", _socketpair_call(lambda a: sockets.sendall_buffers(a, [3])),  # type: ignore[list-item]
     TypeError, "buffers[0] has type int, not a bytes-like type"),
    ("metrics name clash", lambda: prometheus_text({"accept_paused": 0, "accept_paused_total": 1}),
     ValueError, "metrics 'accept_paused' and 'accept_paused_total' would share the name "
     "'poolalloc_accept_paused'"),
    ("metrics bad name", lambda: prometheus_text({"a b": 1}), ValueError,
     "'a b' is not a valid Prometheus metric name"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "call", "kind", "message"), API_CASES, ids=[c[0] for c in API_CASES]
)
def test_api_misuse_is_one_line(
    what: str, call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        call()
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_a_bad_traceback_setting_still_says_the_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "poolalloc", "serve", "--app", "nothere:app", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env={**os.environ, "POOLALLOC_TRACEBACK": "yes"},
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr == (
        "poolalloc: warning: POOLALLOC_TRACEBACK must be 0 or 1, not 'yes'\n"
        "poolalloc: error: could not import module 'nothere' (from 'nothere:app')\n"
    )
