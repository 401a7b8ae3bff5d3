"""Networking on pooled memory: socket adapters, zero-copy sends, an epoll Reactor, HTTP.

The submodules each hold one job: ``sockets`` (recv_into / recvmsg_into / gather writes),
``zerocopy`` (sendfile, splice, mmap), ``reactor`` (epoll loop), ``connection`` and ``server``
(pooled connections on the reactor), ``http`` (the HTTP/1.1 server), ``aio`` (asyncio
``PooledProtocol``) and ``serve`` (the multi-process entry used by ``poolalloc serve``).

Example:
    >>> from poolalloc.net import Reactor, recv_into
    >>> callable(recv_into)
    True
"""

from __future__ import annotations

from poolalloc.net.aio import PooledProtocol
from poolalloc.net.connection import Connection, ConnectionProtocol
from poolalloc.net.http import HttpServer, Response
from poolalloc.net.httpparse import HttpError, Request
from poolalloc.net.metrics import prometheus_text
from poolalloc.net.reactor import Reactor
from poolalloc.net.server import TcpServer, listen_socket
from poolalloc.net.sockets import recv_into, recvmsg_into, send_buffers, sendall_buffers
from poolalloc.net.zerocopy import mmap_send, sendfile, splice, splice_file_to_socket

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
