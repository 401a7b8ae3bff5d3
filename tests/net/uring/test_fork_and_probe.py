"""Fork and refusal: a child builds its own Proactor; under a seccomp filter the probe says no."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import traceback
from collections.abc import Callable

import pytest

from poolalloc.net import uring
from poolalloc.net.http.serve import make_loop
from poolalloc.net.uring.proactor import Proactor, available

# fork() is the subject here: the children use only their own objects and leave by os._exit,
# so 3.12's warning about forking a multi-threaded process (pytest's own threads) is expected.
pytestmark = [
    pytest.mark.uring,
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

_NR_IO_URING_SETUP = 425  # the same number on every Linux architecture (unified table)


@pytest.fixture(autouse=True)
def _need_uring() -> None:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")


def in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; its return value is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        except BaseException:
            traceback.print_exc()  # shown by pytest's capture of the child's stderr
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_cannot_run_the_parents_proactor_but_can_build_its_own() -> None:
    parent = Proactor()
    out: list[int] = []
    parent.call_soon(out.append, 1)

    def child() -> int:
        try:
            parent.run()
        except RuntimeError as exc:
            if "fork" not in str(exc):
                return 2
        else:
            return 3
        mine = Proactor()
        got: list[str] = []
        mine.call_soon(got.append, "child")
        mine.call_later(0.01, mine.stop)
        mine.run()
        mine.close()
        parent.close()  # closes the inherited descriptor only: the parent's ring stays intact
        return 0 if got == ["child"] else 4

    assert in_child(child) == 0
    parent.call_later(0.01, parent.stop)
    parent.run()  # the parent's ring still works after the child closed its copy
    assert out == [1]
    parent.close()


def _deny_io_uring_setup() -> None:
    """Install a seccomp filter returning EPERM for io_uring_setup (this process only)."""
    ld_nr, jeq, ret = 0x20, 0x15, 0x06
    prog = [
        (ld_nr, 0, 0, 0),
        (jeq, 0, 1, _NR_IO_URING_SETUP),
        (ret, 0, 0, 0x00050000 | errno.EPERM),
        (ret, 0, 0, 0x7FFF0000),
    ]
    raw = b"".join(struct.pack("HBBI", *insn) for insn in prog)
    filt = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(filt))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # 64-bit pointer argument
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    fbuf = ctypes.create_string_buffer(fprog)
    assert libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def test_seccomp_refusal_is_reported_and_serve_falls_back(
    capfd: pytest.CaptureFixture[str],
) -> None:
    def child() -> int:
        _deny_io_uring_setup()
        uring.probe_result.cache_clear()
        ok, reason = available()
        if ok or "seccomp" not in reason:
            return 2
        loop = make_loop("uring")  # asked for, refused: epoll, and the reason on stderr
        fallback = type(loop).__name__ == "Reactor"
        loop.close()
        return 0 if fallback else 3

    assert in_child(child) == 0
    assert "seccomp" in capfd.readouterr().err


def test_proactor_serves_in_a_forked_child() -> None:
    from poolalloc.buffers import BufferPool
    from poolalloc.net.uring.server import UringTcpServer

    class Echo:
        def connection_made(self, conn: object) -> None:
            self.conn = conn

        def buffer_received(self, lease: object, n: int) -> bool:
            self.conn.write(lease.view[:n], owner=lease)  # type: ignore[attr-defined]
            return True

        def eof_received(self) -> bool:
            return False

        def connection_lost(self, exc: object) -> None:
            pass

    def child() -> int:
        p = Proactor()
        pool = BufferPool(4096, capacity=16)
        srv = UringTcpServer(p, Echo, buffer_pool=pool)
        srv.start()
        a = socket.create_connection(srv.address)
        a.sendall(b"ping")
        got = bytearray()
        p.call_later(5, p.stop)
        while len(got) < 4 and not p._stopping:
            p.run_once()
            a.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                got += a.recv(10)
        a.close()
        srv.close()
        p.close()
        leaked = pool.outstanding()
        pool.close()
        return 0 if bytes(got) == b"ping" and leaked == 0 else 5

    assert in_child(child) == 0
