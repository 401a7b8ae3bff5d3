"""asyncio integration: a ``BufferedProtocol`` whose read buffers are pooled leases.

The contract is asyncio's ``_SelectorSocketTransport._read_ready__get_buffer`` (and uvloop's
``__uv_stream_buffered_alloc``): the transport calls ``get_buffer(sizehint)``, reads into it,
then ``buffer_updated(nbytes)``. :class:`PooledProtocol` answers ``get_buffer`` with the view
of a lease from its pool and hands ``(lease, nbytes)`` on to :meth:`lease_received`, which
keeps the lease (returns True, and releases it later) or lets it go back at once.

A lease taken by ``get_buffer`` whose read then found nothing (``EAGAIN``) is kept for the
next read rather than returned and re-acquired; ``eof_received`` and ``connection_lost``
return it, so a closed connection holds nothing. If the pool is exhausted, ``get_buffer``
raises ``PoolExhausted``; asyncio and uvloop treat that as a fatal error of this connection
(it is closed and ``connection_lost`` receives the exception), never a crash of the loop.
uvloop does not pass the exception on: it closes the connection with a ``RuntimeError``
("unhandled error (or an empty buffer) in get_buffer()"). So the protocol remembers what
``get_buffer`` raised, and ``connection_lost`` (a subclass's override too) receives that
error, with uvloop's ``RuntimeError`` as its ``__context__``: the same exception on both loops.

It runs unchanged on the default loop and on uvloop.

Example:
    >>> import asyncio, poolalloc
    >>> class Echo(PooledProtocol[poolalloc.Buffer]):
    ...     def lease_received(self, lease: poolalloc.Buffer, nbytes: int) -> bool:
    ...         assert self.transport is not None
    ...         self.transport.write(lease.view[:nbytes])  # copied into the transport
    ...         return False
    >>> pool = poolalloc.BufferPool(4096, capacity=16)
    >>> # loop.create_server(lambda: Echo(pool), "127.0.0.1", 0)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, cast

from poolalloc.net.sockets import L, LeaseLike, LeaseSource

__all__ = ["LeaseLike", "LeaseSource", "PooledProtocol"]


class PooledProtocol(asyncio.BufferedProtocol, Generic[L]):
    """Reads land in pooled leases; subclasses override :meth:`lease_received`.

    Generic over the pool's lease type: ``PooledProtocol[poolalloc.Buffer]`` for a
    ``BufferPool``, so :meth:`lease_received` gets a ``Buffer`` (with ``as_array``).

    Example:
        >>> issubclass(PooledProtocol, asyncio.BufferedProtocol)
        True
    """

    _buffer_error: Exception | None = None  # also for a subclass whose __init__ skips ours

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The loop calls the most derived connection_lost: an override must get the error
        # that get_buffer raised, not uvloop's stand-in, before it calls super(). Looked up
        # along the MRO, so that an override in a mixin (before us in the bases) gets it too;
        # only a plain function is wrapped (a staticmethod's or a partialmethod's call differs).
        found = inspect.getattr_static(cls, "connection_lost")
        if (
            inspect.isfunction(found)
            and found is not PooledProtocol.__dict__["connection_lost"]
            and not getattr(found, "_gets_buffer_error", False)
        ):
            cls.connection_lost = _with_buffer_error(found)  # type: ignore[method-assign,assignment]

    def __init__(self, pool: LeaseSource[L]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._lease: L | None = None
        self._view: memoryview | None = None  # the view of _lease the transport reads into
        self._buffer_error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (as ``self.transport``)."""
        # A stream transport: asyncio types the argument as the base of every transport kind.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The view of a pooled lease for the next read (``sizehint`` is ignored: fixed size).

        :raises poolalloc.PoolExhausted: the pool has no free buffer.
        """
        view = self._view
        if view is None:  # else kept from a read that found nothing (EAGAIN)
            try:
                lease = self._lease = self.pool.acquire(0)
            except Exception as exc:
                self._buffer_error = exc  # uvloop closes with a RuntimeError instead: keep it
                raise
            view = self._view = lease.view
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """Hand the filled lease to :meth:`lease_received`; release it unless kept."""
        lease, self._lease = self._lease, None
        assert lease is not None
        view = self._view
        transport_done = self._drop_view()  # the read is in: its views are the receiver's
        if self.lease_received(lease, nbytes):
            return
        try:
            lease.release()
        except BufferError:
            if not transport_done and getattr(lease, "exports", None) == 1:
                # a strict pool, and the one view left is the transport's (uvloop exports it
                # until this call returns): kept for the next read, as after a read that found
                # nothing. Given back later, each read's lease would be out at once, a whole
                # burst of reads (uvloop reads on in one callback) taking the pool's capacity.
                self._lease, self._view = lease, view
            else:
                _give_back(lease)

    def lease_received(self, lease: L, nbytes: int) -> bool:
        """Override: ``lease.view[:nbytes]`` holds new data; return True to keep the lease.

        The default discards the data.
        """
        return False

    def eof_received(self) -> bool | None:
        """The peer half-closed; returns the read lease. Return True to keep writing."""
        self._drop_lease()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Return the lease held for reading, if any.

        ``exc`` is what ``get_buffer`` raised (``PoolExhausted``) when that ended the
        connection, on asyncio and on uvloop alike; an override receives it too.
        """
        self._drop_lease()
        self.transport = None
        self._buffer_error = None  # its traceback holds get_buffer's frame, so this protocol

    def _drop_lease(self) -> None:
        self._drop_view()
        lease, self._lease = self._lease, None
        if lease is not None:
            _give_back(lease)

    def _drop_view(self) -> bool:
        """Let go of the transport's view; False while the transport still exports it."""
        view, self._view = self._view, None
        if view is not None:
            try:
                view.release()
            except BufferError:  # uvloop exports it until its call returns
                return False
        return True

    def _loss_cause(self, exc: Exception | None) -> Exception | None:
        """The error to report for ``exc``: the one get_buffer raised, if that ended it."""
        error = self._buffer_error
        if exc is None or error is None or exc is error:
            return exc
        if error.__context__ is None:
            error.__context__ = exc  # uvloop's RuntimeError stays visible in the traceback
        return error


def _give_back(lease: LeaseLike) -> None:
    """Release ``lease``; a strict pool refuses while it is viewed, and uvloop views the read's
    buffer until the protocol's call returns (asyncio's read holds it as long): then once more
    on the loop's next turn. A view the receiver kept makes that one raise ``LeaseBusyError``
    to the loop's exception handler, as a strict pool is there to say."""
    try:
        lease.release()
    except BufferError:
        asyncio.get_running_loop().call_soon(lease.release)


_LossHandler = Callable[[Any, "Exception | None"], None]


def _with_buffer_error(method: _LossHandler) -> _LossHandler:
    @functools.wraps(method)
    def connection_lost(self: PooledProtocol[Any], exc: Exception | None) -> None:
        try:
            method(self, self._loss_cause(exc))
        finally:
            # its traceback holds get_buffer's frame, and so this protocol: no cycle left
            self._buffer_error = None

    connection_lost._gets_buffer_error = True  # type: ignore[attr-defined]
    return connection_lost
