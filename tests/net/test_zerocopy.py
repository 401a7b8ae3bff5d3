"""sendfile, splice and mmap sends: byte counts, file offsets, and the fallbacks."""

from __future__ import annotations

import errno
import io
import os
import socket
import threading
from typing import Any

import pytest

from poolalloc.net import zerocopy
from poolalloc.net.zerocopy import (
    mmap_send,
    sendfile,
    sendfile_fallback,
    splice,
    splice_file_to_socket,
)

pytestmark = pytest.mark.timeout(30)

DATA = os.urandom(300_000)


@pytest.fixture
def datafile(tmp_path: Any) -> Any:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


def receive(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def threaded_recv(sock: socket.socket, n: int) -> tuple[threading.Thread, list[bytes]]:
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(receive(sock, n)))
    t.start()
    return t, box


@pytest.mark.parametrize(("offset", "count"), [(0, None), (1234, 100_000), (299_999, 1)])
def test_sendfile_counts_and_leaves_offset(datafile: Any, offset: int, count: Any) -> None:
    a, b = socket.socketpair()
    want = DATA[offset:] if count is None else DATA[offset : offset + count]
    t, box = threaded_recv(b, len(want))
    assert sendfile(a, datafile, offset, count) == len(want)
    t.join(10)
    assert box[0] == want
    assert datafile.tell() == offset + len(want)
    a.close()
    b.close()


def test_sendfile_past_eof_sends_nothing(datafile: Any) -> None:
    a, b = socket.socketpair()
    assert sendfile(a, datafile, len(DATA) + 10, 5) == 0
    a.close()
    b.close()
    with pytest.raises(ValueError, match="non-negative"):
        sendfile(a, datafile, -1)


def test_sendfile_falls_back_when_kernel_refuses(
    datafile: Any, monkeypatch: Any, buffer_pool: Any
) -> None:
    calls: list[int] = []

    def refuse(*args: Any) -> int:
        calls.append(1)
        raise OSError(errno.ENOSYS, "no sendfile here")

    monkeypatch.setattr(zerocopy.os, "sendfile", refuse)
    a, b = socket.socketpair()
    t, box = threaded_recv(b, 50_000)
    assert sendfile(a, datafile, 10, 50_000, pool=buffer_pool) == 50_000
    t.join(10)
    assert calls
    assert box[0] == DATA[10:50_010]
    assert datafile.tell() == 50_010
    assert buffer_pool.outstanding() == 0
    a.close()
    b.close()


def test_fallback_on_nonblocking_socket_stops_at_eagain_with_right_offset(
    datafile: Any, buffer_pool: Any
) -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    sent = sendfile_fallback(a, datafile, 0, None, pool=buffer_pool)
    assert 0 < sent < len(DATA)
    assert datafile.tell() == sent
    assert receive(b, sent) == DATA[:sent]
    assert buffer_pool.outstanding() == 0
    a.close()
    b.close()


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "eagain"])
def test_fallback_gives_a_strict_pools_lease_back(datafile: Any, blocking: bool) -> None:
    """A strict pool refuses a lease whose views are alive: the copy path released its lease
    while its own view (and, at EAGAIN, the unsent rest) still viewed it, so it raised
    ``LeaseBusyError`` after sending, and the lease stayed out for good."""
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=2, strict=True)
    a, b = socket.socketpair()
    if not blocking:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(receive(b, len(DATA))))
    if blocking:
        reader.start()
    sent = sendfile_fallback(a, datafile, 0, None, pool=pool)
    if blocking:
        reader.join(10)
        assert sent == len(DATA)
        assert bytes(got) == DATA
    else:
        assert 0 < sent < len(DATA)
        assert receive(b, sent) == DATA[:sent]
    assert pool.outstanding() == 0
    pool.close()
    a.close()
    b.close()


def test_fallback_over_a_strict_pool_raises_the_send_error(datafile: Any) -> None:
    """A send that fails (the peer gone): the failed call's frames still held a slice of the
    lease's view, so a strict pool's release raised ``LeaseBusyError`` and the ``OSError``
    survived only as its context. The send error is raised now and the lease goes back."""
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=2, strict=True)
    a, b = socket.socketpair()
    b.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        sendfile_fallback(a, datafile, 0, None, pool=pool)
    assert pool.outstanding() == 0
    pool.close()
    a.close()


def test_fallback_reads_file_objects_without_fd() -> None:
    a, b = socket.socketpair()
    src = io.BytesIO(b"0123456789")
    assert sendfile_fallback(a, src, 3, 4) == 4
    assert b.recv(10) == b"3456"
    assert src.tell() == 7
    a.close()
    b.close()


def test_nonblocking_native_sendfile_resumes(datafile: Any) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    sent = sendfile(a, datafile, 0)
    assert 0 < sent < len(DATA)  # the socket buffer filled up: EAGAIN ends the call
    assert datafile.tell() == sent
    t, box = threaded_recv(b, len(DATA))
    total = sent
    import select

    while total < len(DATA):
        select.select([], [a], [], 5)
        total += sendfile(a, datafile, total)
    t.join(10)
    assert box[0] == DATA
    a.close()
    b.close()


def test_splice_pipe_to_pipe_and_file_offset() -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    os.write(w, b"abcdef")
    assert splice(r, w2, 4) == 4
    assert os.read(r2, 10) == b"abcd"
    for fd in (r, w, r2, w2):
        os.close(fd)


def test_splice_file_to_socket(datafile: Any) -> None:
    a, b = socket.socketpair()
    t, box = threaded_recv(b, 200_000)
    assert splice_file_to_socket(datafile, a, 5000, 200_000) == 200_000
    t.join(10)
    assert box[0] == DATA[5000:205_000]
    assert datafile.tell() == 205_000
    a.close()
    b.close()


def test_splice_refused_between_two_sockets() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    a.send(b"x")
    with pytest.raises(OSError, match="Invalid argument"):
        splice(b.fileno(), c.fileno(), 1)  # neither end is a pipe
    for s in (a, b, c, d):
        s.close()


def test_mmap_send_range(datafile: Any) -> None:
    a, b = socket.socketpair()
    t, box = threaded_recv(b, 100_000)
    assert mmap_send(a, datafile, 7000, 100_000) == 100_000
    t.join(10)
    assert box[0] == DATA[7000:107_000]
    assert datafile.tell() == 107_000
    with pytest.raises(ValueError, match="outside"):
        mmap_send(a, datafile, 0, len(DATA) + 1)
    assert mmap_send(a, datafile, 10, 0) == 0
    a.close()
    b.close()


def test_mmap_send_raises_the_send_error() -> None:
    """A send that fails (the peer gone, a socket never connected, a send timeout): the failed
    call's frames still held views of the map, so closing the map raised ``BufferError`` and
    the real error survived only as its context."""
    import tempfile

    with tempfile.TemporaryFile() as f:
        f.write(DATA * 16)  # more than the socket buffers hold
        f.flush()
        a, b = socket.socketpair()
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            mmap_send(a, f)
        a.close()
        with socket.socket() as never_connected, pytest.raises(BrokenPipeError):
            mmap_send(never_connected, f)  # Linux answers a send on it with EPIPE
        a, b = socket.socketpair()
        a.settimeout(0.2)  # b never reads: the send times out once the buffers are full
        with pytest.raises(TimeoutError):
            mmap_send(a, f)
        a.close()
        b.close()


@pytest.fixture
def bigfile(tmp_path: Any) -> Any:
    """More than a socket pair's buffers hold: a peer that never reads stops the transfer."""
    path = tmp_path / "big.bin"
    path.write_bytes(DATA * 30)
    with open(path, "rb") as f:
        yield f


def taken_by_socket(sock: socket.socket) -> bytes:
    """Everything the peer's socket buffers hold now, without waiting for more."""
    sock.setblocking(False)
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


SEND_WITH_TIMEOUT = {
    "sendfile": lambda sock, f: sendfile(sock, f, 0),
    "fallback": lambda sock, f: sendfile_fallback(sock, f, 0),
    "splice": lambda sock, f: splice_file_to_socket(f, sock, 0, len(DATA) * 30),
    "mmap": lambda sock, f: mmap_send(sock, f, 0),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("send", SEND_WITH_TIMEOUT.values(), ids=SEND_WITH_TIMEOUT.keys())
def test_a_socket_timeout_is_honoured_and_the_offset_says_how_far(bigfile: Any, send: Any) -> None:
    """A socket with a timeout has a non-blocking descriptor underneath: ``sendfile`` retried
    ``EAGAIN`` at once, spinning a core for as long as the peer did not read (for ever here),
    and ``splice_file_to_socket`` raised ``BlockingIOError`` with the file's offset untouched and
    the count lost. They now wait up to the timeout, raise ``TimeoutError`` and leave the offset
    just after the bytes the socket took."""
    import time

    a, b = socket.socketpair()
    a.settimeout(0.3)
    started = time.monotonic()
    cpu = time.process_time()
    with pytest.raises(TimeoutError):
        send(a, bigfile)
    assert time.monotonic() - started < 5
    assert time.process_time() - cpu < 1.5  # it waited, it did not spin
    got = taken_by_socket(b)
    assert len(got) > 0
    assert bigfile.tell() == len(got)
    assert got == (DATA * 30)[: len(got)]
    a.close()
    b.close()


def test_splice_to_a_nonblocking_socket_stops_at_eagain_with_the_count(bigfile: Any) -> None:
    """As ``sendfile`` does: the count so far, the offset after it (it raised
    ``BlockingIOError`` and lost both)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    sent = splice_file_to_socket(bigfile, a, 100, len(DATA) * 30 - 100)
    assert 0 < sent < len(DATA) * 30 - 100
    assert bigfile.tell() == 100 + sent
    got = taken_by_socket(b)
    assert got == (DATA * 30)[100 : 100 + sent]
    a.close()
    b.close()


def test_splice_and_fallback_refuse_negative_ranges_as_sendfile(datafile: Any) -> None:
    a, b = socket.socketpair()
    with pytest.raises(ValueError, match="non-negative"):
        splice_file_to_socket(datafile, a, -1, 10)  # was the kernel's bare EINVAL
    with pytest.raises(ValueError, match="non-negative"):
        splice_file_to_socket(datafile, a, 0, -5)  # was 0, as if sent
    with pytest.raises(ValueError, match="non-negative"):
        sendfile_fallback(a, datafile, 0, -5)  # was 0, as if sent
    with pytest.raises(ValueError, match="non-negative"):
        sendfile_fallback(a, datafile, -1)  # was the file's own seek error
    a.close()
    b.close()


def test_splice_to_a_tls_socket_sends_through_tls(datafile: Any, tmp_path: Any) -> None:
    """A splice writes to the descriptor under the TLS layer: the file went out as plaintext,
    which broke the TLS stream (and showed the file to anyone on the path)."""
    from test_sockets import tls_pair

    ca, sb = tls_pair(tmp_path)
    sb.settimeout(5)
    reader, got = threaded_recv(sb, 50_000)
    assert splice_file_to_socket(datafile, ca, 10, 50_000) == 50_000
    reader.join(10)
    assert got == [DATA[10:50_010]]
    assert datafile.tell() == 50_010
    ca.close()
    sb.close()


def test_mmap_send_of_a_file_that_shrinks_ends_at_its_new_end(bigfile: Any) -> None:
    """The kernel met a page past the new end: ``OSError: [Errno 14] Bad address``, with the
    count lost. It ends like ``sendfile`` at a shrunk end of file now: the count so far."""
    a, b = socket.socketpair()
    got = bytearray()

    def shrink_then_read() -> None:
        import time

        time.sleep(0.2)  # mmap_send waits on the full socket by now
        os.truncate(bigfile.name, 1 << 20)
        got.extend(receive(b, len(DATA) * 30))

    t = threading.Thread(target=shrink_then_read)
    t.start()
    sent = mmap_send(a, bigfile)
    a.close()
    t.join(10)
    assert 0 < sent <= 1 << 20  # the socket pair's buffers hold less than 1 MiB
    assert len(got) == sent
    assert bigfile.tell() == sent
    assert bytes(got) == (DATA * 30)[:sent]
    b.close()


MMAP_OVER_TLS = """
import os, socket, ssl, sys, tempfile, threading, time
from poolalloc.net.zerocopy import mmap_send
cert, key = sys.argv[1:3]
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cctx.check_hostname = False
cctx.verify_mode = ssl.CERT_NONE
lsock = socket.create_server(("127.0.0.1", 0))
plain = socket.create_connection(lsock.getsockname())
peer, _ = lsock.accept()
box = []
t = threading.Thread(target=lambda: box.append(sctx.wrap_socket(peer, server_side=True)))
t.start()
client = cctx.wrap_socket(plain)
t.join()
server = box[0]
data = os.urandom(16 << 20)
f = tempfile.TemporaryFile()
f.write(data)
f.flush()
got = bytearray()
target = []
server.settimeout(0.2)
def shrink_then_read():
    time.sleep(0.3)  # the send waits on full socket buffers by now
    os.ftruncate(f.fileno(), 1 << 20)
    while not target or len(got) < target[0]:
        try:
            got.extend(server.recv(1 << 16))
        except TimeoutError:
            pass
reader = threading.Thread(target=shrink_then_read)
reader.start()
sent = mmap_send(client, f)
target.append(sent)
reader.join(10)
assert got == data[:sent] and 0 < sent < len(data) and f.tell() == sent, (sent, len(got))
print("ok")
"""


def test_mmap_send_over_tls_survives_a_file_that_shrinks(tmp_path: Any) -> None:
    """TLS encrypts in user space: it read the map, and the first page past the new end of the
    file raised SIGBUS, which killed the process. A TLS socket takes the copy path now."""
    import subprocess
    import sys

    pytest.importorskip("ssl")
    from child_env import child_env
    from test_sockets import _self_signed

    cert, key = _self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", MMAP_OVER_TLS, cert, key],
        capture_output=True, text=True, timeout=60, env=child_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"
