"""Socket adapters: pooled reads, scatter reads, gather writes with partial writes."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from poolalloc.net import sockets
from poolalloc.net.sockets import recv_into, recvmsg_into, send_buffers, sendall_buffers

pytestmark = pytest.mark.timeout(20)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    lsock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname())
    server, _ = lsock.accept()
    lsock.close()
    return client, server


def unix_pair(tmp_path: Any) -> tuple[socket.socket, socket.socket]:
    path = str(tmp_path / "s.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    server, _ = lsock.accept()
    lsock.close()
    return client, server


@pytest.fixture(params=["socketpair", "tcp", "unix"])
def pair(request: Any, tmp_path: Any) -> Any:
    if request.param == "socketpair":
        a, b = socket.socketpair()
    elif request.param == "tcp":
        a, b = tcp_pair()
    else:
        a, b = unix_pair(tmp_path)
    yield a, b
    a.close()
    b.close()


def test_recv_into_returns_lease_and_count_then_none_at_eof(pair: Any, buffer_pool: Any) -> None:
    a, b = pair
    a.sendall(b"hello pool")
    lease, n = recv_into(b, buffer_pool)
    assert bytes(lease.view[:n]) == b"hello pool"
    assert buffer_pool.outstanding() == 1
    lease.release()
    a.shutdown(socket.SHUT_WR)
    assert recv_into(b, buffer_pool) is None
    assert buffer_pool.outstanding() == 0


def test_recv_into_nonblocking_returns_lease_on_eagain(pair: Any, buffer_pool: Any) -> None:
    _, b = pair
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        recv_into(b, buffer_pool)
    assert buffer_pool.outstanding() == 0


def test_recv_into_reset_returns_lease(buffer_pool: Any) -> None:
    a, b = tcp_pair()
    b.send(b"unread")  # unread data makes close() send an RST
    a.close()
    b.settimeout(2)
    with pytest.raises(ConnectionResetError):
        recv_into(b, buffer_pool)
    b.close()
    assert buffer_pool.outstanding() == 0


def test_recvmsg_into_scatters_across_leases(pair: Any, buffer_pool: Any) -> None:
    a, b = pair
    probe = buffer_pool.acquire()
    size = probe.nbytes
    probe.release()
    payload = os.urandom(size + 100)
    a.sendall(payload)
    got: list[Any] = []
    total = 0
    while total < len(payload):
        part = recvmsg_into(b, buffer_pool, 3)
        assert part is not None
        got.extend(part)
        total += sum(n for _, n in part)
    assert b"".join(bytes(lease.view[:n]) for lease, n in got) == payload
    assert all(n <= lease.nbytes for lease, n in got)
    for lease, _ in got:
        lease.release()
    with pytest.raises(ValueError, match="count"):
        recvmsg_into(b, buffer_pool, 0)
    a.close()
    assert recvmsg_into(b, buffer_pool, 2) is None
    assert buffer_pool.outstanding() == 0


def test_recvmsg_into_waits_only_for_its_first_lease() -> None:
    # one lease (capacity 1) fits the 5 bytes waiting; count=2 used to wait the whole timeout
    # for a second lease while holding the first, then fail with the bytes unread
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=1)
    a, b = socket.socketpair()
    other = threading.Event()
    alive = threading.Thread(target=other.wait)  # so the wait is not a single-thread deadlock
    alive.start()
    try:
        a.sendall(b"hello")
        started = time.monotonic()
        got = recvmsg_into(b, pool, 2, timeout=1)
        elapsed = time.monotonic() - started
        assert got is not None
        assert [(bytes(lease.view[:n]), n) for lease, n in got] == [(b"hello", 5)]
        assert elapsed < 0.5, elapsed
        got[0][0].release()
        # no lease at all: it waits the timeout once for the first, holding nothing meanwhile
        held = pool.acquire()
        a.sendall(b"more")
        started = time.monotonic()
        with pytest.raises(poolalloc.PoolExhausted):
            recvmsg_into(b, pool, 3, timeout=0.5)
        assert 0.45 < time.monotonic() - started < 1.2  # once, not once per lease (1.5 s)
        held.release()
        got = recvmsg_into(b, pool, 3, timeout=0)
        assert got is not None
        assert [n for _, n in got] == [4]
        got[0][0].release()
        assert pool.outstanding() == 0
    finally:
        other.set()
        alive.join()
        a.close()
        b.close()
        pool.close()


def test_send_buffers_handles_partial_writes_with_small_sndbuf(buffer_pool: Any) -> None:
    a, b = tcp_pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setblocking(False)
    leases = [buffer_pool.acquire() for _ in range(8)]
    for i, lease in enumerate(leases):
        lease.view[:] = bytes([i]) * lease.nbytes
    expected = b"".join(bytes(lease.view) for lease in leases) + b"tail"
    left = send_buffers(a, [lease.view for lease in leases] + [b"tail"])
    assert left, "a 4 KiB send buffer cannot take 128 KiB at once"
    assert sum(len(v) for v in left) < len(expected)
    received = bytearray()
    reader = threading.Thread(target=lambda: _read_all(b, received, len(expected)))
    reader.start()
    while left:
        import select

        select.select([], [a], [], 5)
        left = send_buffers(a, left)
    reader.join(10)
    assert bytes(received) == expected
    for lease in leases:
        lease.release()
    a.close()
    b.close()


def _read_all(sock: socket.socket, out: bytearray, n: int) -> None:
    while len(out) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return
        out += chunk


def test_send_buffers_blocking_and_sendall(pair: Any) -> None:
    a, b = pair
    assert send_buffers(a, [b"ab", bytearray(b"cd"), memoryview(b"ef"), b""]) == []
    assert sendall_buffers(a, [b"gh"]) == 2
    assert b.recv(100) == b"abcdefgh"
    a.setblocking(False)
    with pytest.raises(ValueError, match="blocking"):
        sendall_buffers(a, [b"x"])


@pytest.mark.parametrize("call", [send_buffers, sendall_buffers])
def test_a_send_that_times_out_says_how_much_went(pair: Any, call: Any) -> None:
    """On a socket with a timeout and a peer that reads nothing, the send ends with a
    TimeoutError that carries the count of bytes that went out (a bare ``timed out`` lost
    it: the caller could not tell what to send again). The peer then receives exactly
    that many, the payload's first bytes."""
    from poolalloc.net.sockets import SendTimeoutError

    a, b = pair
    a.settimeout(0.3)
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB: far more than the socket buffers
    pieces = [memoryview(payload)[i : i + 1_000_000] for i in range(0, len(payload), 1_000_000)]
    with pytest.raises(SendTimeoutError) as caught:
        call(a, pieces)
    err = caught.value
    assert isinstance(err, TimeoutError)
    assert err.total == len(payload)
    assert 0 < err.sent < len(payload)
    assert str(err) == f"timed out with {len(payload) - err.sent} of {len(payload)} bytes unsent"
    b.settimeout(2)
    got = bytearray()
    while len(got) < err.sent:
        got += b.recv(1 << 20)
    b.settimeout(0.2)
    with pytest.raises(TimeoutError):
        b.recv(1)  # nothing beyond what it said went out
    assert got == payload[: err.sent]


def test_send_buffers_to_closed_peer_raises(pair: Any) -> None:
    a, b = pair
    b.close()

    def keep_sending() -> None:
        # A TCP peer's close is seen only when its RST answers our first segment.
        for _ in range(100):
            send_buffers(a, [b"x" * 65536])
            time.sleep(0.01)

    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        keep_sending()


def tls_pair(tmp_path: Any) -> tuple[Any, Any]:
    """A connected TLS client and server socket over loopback (a self-signed certificate)."""
    ssl = pytest.importorskip("ssl")
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    a, b = tcp_pair()
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(server_ctx.wrap_socket(b, server_side=True)))
    t.start()
    ca = client_ctx.wrap_socket(a)
    t.join(5)
    return ca, box[0]


def test_send_buffers_over_tls_falls_back_to_send(tmp_path: Any) -> None:
    ca, sb = tls_pair(tmp_path)
    assert send_buffers(ca, [b"over ", b"tls"]) == []
    got = bytearray()
    _read_all(sb, got, 8)
    assert bytes(got) == b"over tls"
    ca.close()
    sb.close()


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    pem, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "1", "-keyout", key, "-out", pem],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return pem, key


def test_recvmsg_into_takes_at_most_iov_max_leases(pair: Any) -> None:
    """``count`` above IOV_MAX took a lease for each (5000 blocks mapped here) and then failed
    with ``OSError: Message too long``: the kernel takes at most IOV_MAX buffers a call."""
    import poolalloc

    a, b = pair
    pool = poolalloc.BufferPool(4096)  # no capacity: nothing stopped the taking before
    a.sendall(b"z" * 10_000)
    got = recvmsg_into(b, pool, 5000)
    assert got is not None
    data = b"".join(bytes(lease.view[:n]) for lease, n in got)
    assert data  # TCP may hand over part of it: what came is in order
    assert data == b"z" * len(data)
    for lease, _ in got:
        lease.release()
    assert pool.stats().peak <= sockets.IOV_MAX
    pool.close()


@pytest.fixture
def udp_pair() -> Any:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    a.connect(b.getsockname())
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_a_datagram_larger_than_the_leases_is_an_error_not_a_cut(udp_pair: Any) -> None:
    """A datagram larger than the lease(s) came back as its first 4096 (or 8192) bytes, as if
    that were all of it: the kernel drops the rest, and nothing told the caller."""
    import errno

    import poolalloc

    a, b = udp_pair
    pool = poolalloc.BufferPool(4096, capacity=4)
    a.send(b"x" * 10_000)
    with pytest.raises(OSError, match="did not fit") as info:
        recv_into(b, pool)
    assert info.value.errno == errno.EMSGSIZE
    a.send(b"y" * 10_000)
    with pytest.raises(OSError, match="did not fit"):
        recvmsg_into(b, pool, 2)
    assert pool.outstanding() == 0
    a.send(b"z" * 4096)  # one that fits exactly is whole
    got = recv_into(b, pool)
    assert got is not None
    assert got[1] == 4096
    got[0].release()
    a.send(b"w" * 5000)
    parts = recvmsg_into(b, pool, 2)
    assert parts is not None
    assert [n for _, n in parts] == [4096, 904]
    for lease, _ in parts:
        lease.release()
    pool.close()
