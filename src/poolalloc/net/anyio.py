"""anyio byte streams read into pooled leases: :func:`recv_lease`.

``recv_lease(stream, pool)`` is :func:`poolalloc.net.sockets.recv_into` for an anyio
``ByteReceiveStream``: it returns ``(lease, nbytes)``, or ``None`` at end of stream, and the
caller releases the lease. It works on any byte stream, in one of two ways
(:func:`reads_in_place` says which):

* **in place** -- a plain socket stream (``anyio.connect_tcp``, a listener's streams,
  ``connect_unix``) under the **trio** backend: the kernel writes straight into the lease
  (``sock.recv_into`` on the stream's raw socket, waiting with ``anyio.wait_readable``). trio's
  socket streams keep no buffer of their own, so reading the raw socket loses nothing.
* **one copy** -- everything else: ``stream.receive()`` and a copy into the lease. That covers
  the **asyncio** backend (there the socket belongs to an asyncio transport that reads into its
  own queue, and asyncio refuses a second reader on the descriptor), TLS streams (the raw socket
  carries ciphertext) and wrappers such as ``BufferedByteReceiveStream`` (they hold bytes the
  socket no longer has).

Do not call ``stream.receive()`` from another task while ``recv_lease`` waits (the in-place
path bypasses anyio's concurrent-reader guard). Needs ``anyio`` (``pip install
poolalloc[anyio]``).

Example:
    >>> import anyio, poolalloc
    >>> async def main() -> bytes:
    ...     pool = poolalloc.BufferPool(4096, capacity=4)
    ...     listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    ...     port = listener.extra(anyio.abc.SocketAttribute.local_port)
    ...     async def serve(stream):
    ...         async with stream:
    ...             await stream.send(b"pooled")
    ...     async with anyio.create_task_group() as tg:
    ...         tg.start_soon(listener.serve, serve)
    ...         async with await anyio.connect_tcp("127.0.0.1", port) as stream:
    ...             lease, n = await recv_lease(stream, pool)
    ...             data = bytes(lease.view[:n]); lease.release()
    ...         tg.cancel_scope.cancel()
    ...     await listener.aclose(); pool.close()
    ...     return data
    >>> anyio.run(main)
    b'pooled'
"""

from __future__ import annotations

import operator
import socket

import anyio
import anyio.abc
import anyio.lowlevel

from poolalloc._async_backends import running_library
from poolalloc.net.sockets import LeaseLike, LeaseSource

__all__ = ["reads_in_place", "recv_lease"]


def _raw_socket(stream: anyio.abc.ByteReceiveStream) -> socket.socket | None:
    if running_library() != "trio":
        return None  # asyncio: the transport owns the socket's reads
    if not isinstance(stream, anyio.abc.SocketStream):
        return None  # TLS or a buffering wrapper: the socket alone does not have the bytes
    sock: socket.socket | None = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    return sock


def reads_in_place(stream: anyio.abc.ByteReceiveStream) -> bool:
    """True when :func:`recv_lease` on ``stream`` reads into the lease with no copy.

    Call it from inside the running event loop (the answer depends on the backend).

    Example:
        >>> import anyio
        >>> async def main():
        ...     send, receive = anyio.create_memory_object_stream(1)
        ...     return reads_in_place(receive)  # not a socket stream
        >>> anyio.run(main)
        False
    """
    return _raw_socket(stream) is not None


async def _acquire(pool: LeaseSource) -> LeaseLike:
    acquire_async = getattr(pool, "acquire_async", None)
    if acquire_async is not None:
        lease: LeaseLike = await acquire_async()
        return lease
    return pool.acquire(0)


async def recv_lease(
    stream: anyio.abc.ByteReceiveStream, pool: LeaseSource, *, max_bytes: int | None = None
) -> tuple[LeaseLike, int] | None:
    """Receive once from ``stream`` into a lease of ``pool``: ``(lease, nbytes)``, or None at EOF.

    ``max_bytes`` caps the read (default: the lease's size). Waits for a free lease when the
    pool is at capacity (``acquire_async``). On EOF, cancellation or error the lease is already
    back in the pool.

    :raises anyio.BrokenResourceError: the connection failed (e.g. reset by the peer).
    :raises anyio.ClosedResourceError: the stream was closed by this side.
    :raises ValueError: ``max_bytes`` < 1.
    :raises TypeError: ``max_bytes`` is not an integer (checked before a lease is taken).

    Example:
        >>> import anyio, poolalloc
        >>> from anyio.streams.buffered import BufferedByteReceiveStream
        >>> async def main():
        ...     send, receive = anyio.create_memory_object_stream[bytes](1)
        ...     await send.send(b"abc"); await send.aclose()
        ...     stream = BufferedByteReceiveStream(receive)  # any byte stream
        ...     with poolalloc.BufferPool(64) as pool:
        ...         lease, n = await recv_lease(stream, pool)
        ...         data = bytes(lease.view[:n]); lease.release()
        ...         return data, await recv_lease(stream, pool)
        >>> anyio.run(main)
        (b'abc', None)
    """
    if max_bytes is not None:
        # before the lease is taken: a float failed at the slice below, outside the try, and
        # the lease stayed out until the traceback holding it was collected
        max_bytes = operator.index(max_bytes)
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
    sock = _raw_socket(stream)
    lease = await _acquire(pool)
    whole = lease.view
    view = whole if max_bytes is None else whole[:max_bytes]
    try:
        if sock is not None:
            n = await _recv_into(sock, view)
        else:
            try:
                chunk = await stream.receive(len(view))
            except anyio.EndOfStream:
                n = 0
            else:
                n = len(chunk)
                view[:n] = chunk
    except BaseException:
        view.release()
        whole.release()
        lease.release()
        raise
    view.release()
    whole.release()
    if n == 0:
        lease.release()
        return None
    return lease, n


async def _recv_into(sock: socket.socket, view: memoryview) -> int:
    await anyio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        try:
            n = sock.recv_into(view)
        except BlockingIOError:
            await anyio.wait_readable(sock)
            waited = True
        except OSError as exc:
            if sock.fileno() < 0:
                raise anyio.ClosedResourceError from exc
            raise anyio.BrokenResourceError from exc
        else:
            break
    if not waited:  # every anyio call is a checkpoint: let other tasks run
        await anyio.lowlevel.cancel_shielded_checkpoint()
    return n
