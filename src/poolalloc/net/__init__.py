"""Networking on pooled memory: socket adapters, zero-copy sends, two engines, HTTP.

Floor 3 of the package, with the floors above it in subpackages (imports only go down):

* here: ``sockets`` (recv_into / recvmsg_into / gather writes), ``zerocopy`` (sendfile,
  splice, mmap), ``metrics`` (Prometheus text), ``aio`` (asyncio ``PooledProtocol``),
  ``streams`` (asyncio's ``open_connection``/``start_server`` on pooled reads), ``anyio``
  (``recv_lease`` for anyio byte streams; needs anyio), ``transport`` (the ``Transport``
  interface protocols use, and ``BaseConnection``, what both engines' connections share);
* floor 4, the engines: ``epoll`` (the Reactor, its connection and TCP server) and ``uring``
  (the io_uring Proactor, its connection and TCP server, buffer rings);
* floor 5: ``http`` (the parser, the protocol, the server and ``serve``).

The engines' and HTTP's main names are re-exported here (``poolalloc.net.Reactor``,
``poolalloc.net.HttpServer``) but loaded only on first use, so ``import poolalloc.net``
loads the floor-3 modules alone.

Example:
    >>> from poolalloc.net import Reactor, recv_into
    >>> callable(recv_into)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from poolalloc.net.aio import PooledProtocol
from poolalloc.net.metrics import prometheus_text
from poolalloc.net.sockets import recv_into, recvmsg_into, send_buffers, sendall_buffers
from poolalloc.net.zerocopy import mmap_send, sendfile, splice, splice_file_to_socket

if TYPE_CHECKING:
    from poolalloc.net.epoll.connection import Connection, ConnectionProtocol
    from poolalloc.net.epoll.reactor import Reactor
    from poolalloc.net.epoll.server import TcpServer, listen_socket
    from poolalloc.net.http.parser import HttpError, Request
    from poolalloc.net.http.server import HttpServer, Response

__all__ = [
    "Connection",
    "ConnectionProtocol",
    "HttpError",
    "HttpServer",
    "PooledProtocol",
    "Reactor",
    "Request",
    "Response",
    "TcpServer",
    "listen_socket",
    "mmap_send",
    "prometheus_text",
    "recv_into",
    "recvmsg_into",
    "send_buffers",
    "sendall_buffers",
    "sendfile",
    "splice",
    "splice_file_to_socket",
]

#: names of the floors above, and the module each is loaded from on first use
_UPPER = {
    "Connection": "poolalloc.net.epoll.connection",
    "ConnectionProtocol": "poolalloc.net.epoll.connection",
    "Reactor": "poolalloc.net.epoll.reactor",
    "TcpServer": "poolalloc.net.epoll.server",
    "listen_socket": "poolalloc.net.epoll.server",
    "HttpError": "poolalloc.net.http.parser",
    "Request": "poolalloc.net.http.parser",
    "HttpServer": "poolalloc.net.http.server",
    "Response": "poolalloc.net.http.server",
}


def __getattr__(name: str) -> object:
    module = _UPPER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
