"""Socket adapters that read into pooled leases and write many buffers with one system call.

Reads return the lease together with the number of bytes the kernel filled, ``(lease, n)``:
a lease is a fixed-size block, so the fill level belongs to the read, not to the block
(no extra state on the lease type, and a lease can be refilled at an offset).

All functions work on blocking and non-blocking sockets. On a non-blocking socket a read that
would block raises :class:`BlockingIOError` (as ``socket.recv_into`` does) after returning the
lease to its pool; a write that would block returns what is left instead of raising, so an
event loop can queue it. TLS sockets (``ssl.SSLSocket``) have no ``sendmsg``/``recvmsg``;
they are served one buffer at a time through ``send``/``recv_into``.
"""

from __future__ import annotations

import _socket
import errno
import socket
import ssl
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from poolalloc.errors import PoolExhausted

__all__ = [
    "BufferLike",
    "LeaseLike",
    "LeaseSource",
    "SendTimeoutError",
    "recv_into",
    "recvmsg_into",
    "send_buffers",
    "sendall_buffers",
]

#: Anything exporting a byte buffer (PEP 688): bytes, bytearray, memoryview, a lease, an array.
if TYPE_CHECKING:
    from typing_extensions import Buffer as BufferLike
elif sys.version_info >= (3, 12):
    from collections.abc import Buffer as BufferLike
else:  # Python 3.11 has no runtime Buffer ABC; the name only documents the annotations there
    BufferLike = bytes | bytearray | memoryview

#: ``sendmsg`` accepts at most IOV_MAX (1024 on Linux) buffers per call.
IOV_MAX = 1024

# the C attribute itself: ``socket.socket.type`` wraps it in an enum on every call (~0.4 us)
_SOCK_TYPE = _socket.socket.type


def _is_stream(sock: socket.socket) -> bool:
    try:
        return bool(_SOCK_TYPE.__get__(sock) == socket.SOCK_STREAM)
    except TypeError:  # no socket object: a stand-in that has recv_into
        return bool(getattr(sock, "type", socket.SOCK_STREAM) == socket.SOCK_STREAM)


def _cut_short(room: int, size: int | None = None) -> OSError:
    what = "a datagram" if size is None else f"a datagram of {size} bytes"
    return OSError(
        errno.EMSGSIZE,
        f"{what} did not fit the {room} bytes of the lease(s): the kernel dropped its rest "
        "(use larger blocks, or more of them with recvmsg_into)",
    )


class LeaseLike(Protocol):
    """What the adapters need from a pooled lease (``poolalloc.Buffer`` fits).

    Example:
        >>> hasattr(LeaseLike, "release")
        True
    """

    @property
    def view(self) -> memoryview: ...

    def __buffer__(self, flags: int, /) -> memoryview: ...

    @property
    def nbytes(self) -> int: ...

    def release(self) -> None: ...


#: The lease type a pool hands out; the adapters give back the same type (a ``poolalloc.Buffer``
#: from a ``BufferPool``, with ``as_array``), not just :class:`LeaseLike`.
L = TypeVar("L", bound=LeaseLike)
if TYPE_CHECKING:  # a bare ``LeaseSource`` means ``LeaseSource[LeaseLike]`` (PEP 696 default)
    from typing_extensions import TypeVar as _DefaultedTypeVar

    L_co = _DefaultedTypeVar("L_co", bound=LeaseLike, covariant=True, default=LeaseLike)
else:  # typing.TypeVar takes ``default`` only from Python 3.13
    L_co = TypeVar("L_co", bound=LeaseLike, covariant=True)


class LeaseSource(Protocol[L_co]):
    """What the adapters need from a pool (``poolalloc.BufferPool`` is a ``LeaseSource[Buffer]``).

    Example:
        >>> hasattr(LeaseSource, "acquire")
        True
    """

    def acquire(self, timeout: float | None = None) -> L_co: ...


def __getattr__(name: str) -> object:
    if name == "LeasePool":  # the old name of LeaseSource
        warnings.warn(
            "poolalloc.net.sockets.LeasePool is now LeaseSource", DeprecationWarning, stacklevel=2
        )
        return LeaseSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recv_into(
    sock: socket.socket, pool: LeaseSource[L], timeout: float | None = None
) -> tuple[L, int] | None:
    """Read once from ``sock`` into a fresh lease; ``(lease, nbytes)`` or ``None`` at EOF.

    The caller owns the lease and must release it. On EOF or error the lease is already back
    in the pool. On a datagram socket each call reads one datagram; one larger than the lease
    raises ``OSError(EMSGSIZE)`` (the kernel drops the rest of it) instead of handing back its
    first bytes as if they were all, and an empty datagram reads as ``None``.

    Example:
        >>> import socket, poolalloc
        >>> a, b = socket.socketpair()
        >>> pool = poolalloc.BufferPool(4096, capacity=4)
        >>> _ = a.send(b"hello")
        >>> lease, n = recv_into(b, pool)
        >>> bytes(lease.view[:n]); lease.release()
        b'hello'
        >>> a.close(); recv_into(b, pool) is None
        True
        >>> b.close(); _ = pool.close()

    :raises BlockingIOError: a non-blocking socket has no data.
    :raises OSError: the socket failed (e.g. ``ConnectionResetError``), or ``EMSGSIZE``: a
        datagram larger than the lease.
    :raises poolalloc.PoolExhausted: no lease within ``timeout``.
    """
    lease = pool.acquire(timeout)
    try:
        if _is_stream(sock):
            n = sock.recv_into(lease.view)
        else:  # MSG_TRUNC: the datagram's whole size, to tell a cut one from one that fitted
            n = sock.recv_into(lease.view, 0, socket.MSG_TRUNC)
            if n > lease.nbytes:
                raise _cut_short(lease.nbytes, n)
    except BaseException:
        lease.release()
        raise
    if n == 0:
        lease.release()
        return None
    return lease, n


def recvmsg_into(
    sock: socket.socket, pool: LeaseSource[L], count: int, timeout: float | None = None
) -> list[tuple[L, int]] | None:
    """Scatter-read into up to ``count`` leases with one ``recvmsg_into``.

    Returns the leases that received bytes with their fill levels, in order; unused leases go
    straight back. ``None`` at EOF. TLS sockets read into one lease (ssl has no scatter read).
    A ``count`` above ``IOV_MAX`` (1024) reads into ``IOV_MAX`` leases, the most one call takes.

    ``timeout`` bounds the whole call's wait for leases: only the first lease is waited for
    (up to ``timeout``; None: the pool's default); the others are taken only if the pool has
    them at once, so the read uses fewer leases rather than wait. The call therefore never
    holds some leases while it waits for more: two readers sharing a pool cannot starve each
    other, and a read never fails for want of leases it would not have filled.

    Example:
        >>> import socket, poolalloc
        >>> a, b = socket.socketpair()
        >>> pool = poolalloc.BufferPool(4096, capacity=4)
        >>> _ = a.send(b"x" * 5000)
        >>> got = recvmsg_into(b, pool, 3)
        >>> [n for _, n in got]
        [4096, 904]
        >>> for lease, _ in got: lease.release()
        >>> a.close(); b.close(); _ = pool.close()

    :raises ValueError: ``count`` is not positive.
    :raises BlockingIOError: a non-blocking socket has no data.
    :raises OSError: the socket failed, or ``EMSGSIZE``: a datagram larger than the leases
        (the kernel drops its rest; the leases go back).
    :raises poolalloc.PoolExhausted: not even the first lease within ``timeout``.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    # more buffers than the kernel takes in one call failed with EMSGSIZE, after taking (and
    # mapping) a lease for each
    count = min(count, IOV_MAX)
    if isinstance(sock, ssl.SSLSocket):
        single = recv_into(sock, pool, timeout)
        return None if single is None else [single]
    leases: list[L] = [pool.acquire(timeout)]  # the only wait, holding nothing
    try:
        for _ in range(count - 1):
            leases.append(pool.acquire(0))
    except PoolExhausted:
        pass  # read into the ones there are
    except BaseException:
        _release_all(leases)  # the ones taken before the failure go back
        raise
    try:
        n, _, flags, _ = sock.recvmsg_into([lease.view for lease in leases])
        if flags & socket.MSG_TRUNC:
            raise _cut_short(n)
    except BaseException:
        _release_all(leases)
        raise
    filled: list[tuple[L, int]] = []
    for lease in leases:
        take = min(n, lease.nbytes)
        if take:
            filled.append((lease, take))
            n -= take
        else:
            lease.release()
    return filled or None


class SendTimeoutError(TimeoutError):
    """A send on a socket with a timeout ran out of time part way: ``sent`` of the buffers'
    ``total`` bytes went out, the rest did not (``socket.sendall`` cannot say how much did).

    Example:
        >>> err = SendTimeoutError(3, 10)
        >>> err.sent, err.total, str(err)
        (3, 10, 'timed out with 7 of 10 bytes unsent')
    """

    def __init__(self, sent: int, total: int) -> None:
        super().__init__(f"timed out with {total - sent} of {total} bytes unsent")
        self.sent, self.total = sent, total


def _timed_out(before: list[memoryview], left: list[memoryview]) -> SendTimeoutError:
    total = sum(len(v) for v in before)
    return SendTimeoutError(total - sum(len(v) for v in left), total)


def send_buffers(sock: socket.socket, buffers: Sequence[BufferLike]) -> list[memoryview]:
    """Gather-write ``buffers`` with ``sendmsg`` until done or the socket would block.

    Returns what is left: an empty list when everything went out, else memoryviews of the
    unsent tails (the first one possibly a partial slice). Never raises ``BlockingIOError``.
    A lease's ``view`` (or a slice of it) may be passed directly.

    Example:
        >>> import socket
        >>> a, b = socket.socketpair()
        >>> send_buffers(a, [b"GET ", memoryview(b"/ HTTP/1.1\\r\\n")])
        []
        >>> b.recv(100)
        b'GET / HTTP/1.1\\r\\n'
        >>> a.close(); b.close()

    :raises SendTimeoutError: the socket's timeout passed with bytes still unsent (how many
        went out is on the error).
    :raises OSError: the socket failed (``BrokenPipeError``, ``ConnectionResetError``...).
    """
    views = first = _views(buffers)
    if isinstance(sock, ssl.SSLSocket):
        return _send_one_by_one(sock, views)
    while views:
        try:
            sent = sock.sendmsg(views[:IOV_MAX])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            return views
        except TimeoutError:  # the count of what went out would be lost with a bare one
            raise _timed_out(first, views) from None
        views = _advance(views, sent)
    return views


def sendall_buffers(sock: socket.socket, buffers: Sequence[BufferLike]) -> int:
    """Send every byte of ``buffers`` on a blocking socket; returns the total sent.

    Example:
        >>> import socket
        >>> a, b = socket.socketpair()
        >>> sendall_buffers(a, [b"ab", b"cd"])
        4
        >>> a.close(); b.close()

    :raises ValueError: the socket is non-blocking (it would have to spin).
    :raises SendTimeoutError: the socket's timeout passed with bytes still unsent.
    :raises OSError: the socket failed.
    """
    if sock.gettimeout() == 0.0:
        raise ValueError("sendall_buffers needs a blocking socket")
    views = _views(buffers)
    left = send_buffers(sock, views)
    if left:  # only where a send would block, which a blocking socket's does not: never short
        raise _timed_out(views, left)
    return sum(len(v) for v in views)


def _views(buffers: Sequence[BufferLike]) -> list[memoryview]:
    try:
        views = [memoryview(b).cast("B") for b in buffers]
    except TypeError:
        if isinstance(buffers, bytes | bytearray | memoryview | str):
            raise TypeError(
                f"buffers must be a sequence of buffers, not one {type(buffers).__name__}: "
                "wrap it in a list"
            ) from None
        for i, b in enumerate(buffers):
            if not isinstance(b, bytes | bytearray | memoryview):
                try:
                    memoryview(b)
                except TypeError:
                    hint = ": encode it first" if isinstance(b, str) else ""
                    raise TypeError(
                        f"buffers[{i}] has type {type(b).__name__}, not a bytes-like type{hint}"
                    ) from None
        raise
    return [v for v in views if len(v)]


def _send_one_by_one(sock: socket.socket, views: list[memoryview]) -> list[memoryview]:
    first = views
    while views:
        try:
            sent = sock.send(views[0])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            return views
        except TimeoutError:
            raise _timed_out(first, views) from None
        views = _advance(views, sent)
    return views


def _advance(views: list[memoryview], sent: int) -> list[memoryview]:
    """Drop ``sent`` bytes from the front of ``views``."""
    i = 0
    while i < len(views) and sent >= len(views[i]):
        sent -= len(views[i])
        i += 1
    rest = views[i:]
    if sent and rest:
        rest[0] = rest[0][sent:]
    return rest


def _release_all(leases: Sequence[LeaseLike]) -> None:
    for lease in leases:
        lease.release()
