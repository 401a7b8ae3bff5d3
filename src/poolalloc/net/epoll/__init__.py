"""The epoll engine: the :class:`Reactor`, its pooled :class:`Connection` and :class:`TcpServer`.

Floor 4: may import ``poolalloc.net`` floor-3 modules (``sockets``, ``zerocopy``,
``metrics``, ``transport``) and the pools; never ``poolalloc.net.http``, the io_uring engine
or the CLI.

* ``reactor.py``: the edge-triggered epoll loop, timers, signals, thread-safe wakeup.
* ``connection.py``: one connection's reads into pooled leases and its gather-write queue.
* ``server.py``: accepting, the ObjectPool of connections, idle sweeps, metrics.

Example:
    >>> from poolalloc.net.epoll import Reactor
    >>> r = Reactor(); _ = r.call_soon(r.stop); r.run(); r.close()
"""

from __future__ import annotations

from poolalloc.net.epoll.connection import Connection, ConnectionProtocol, FileRange
from poolalloc.net.epoll.reactor import Handle, Reactor, TimerHandle
from poolalloc.net.epoll.server import TcpServer, listen_socket

__all__ = [
    "Connection",
    "ConnectionProtocol",
    "FileRange",
    "Handle",
    "Reactor",
    "TcpServer",
    "TimerHandle",
    "listen_socket",
]
