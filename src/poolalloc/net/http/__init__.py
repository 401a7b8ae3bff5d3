"""HTTP/1.1 on pooled reads: the sans-IO parser, the protocol, the server and ``serve``.

Floor 5: may import the engines (``poolalloc.net.epoll``, ``poolalloc.net.uring``), the
floor-3 modules of ``poolalloc.net`` and the pools; never the CLI.

* ``parser.py``: request heads and chunked bodies, bytes in, :class:`Request` out (no IO).
* ``protocol.py``: one connection's HTTP state machine on an engine's connection.
* ``server.py``: routes, static files by ``sendfile``, uploads, the reply cache.
* ``serve.py``: the server with its pools on one process or ``SO_REUSEPORT`` workers.

Example:
    >>> from poolalloc.net.http import HttpServer, Response
    >>> Response(body=b"hi").status
    200
"""

from __future__ import annotations

from poolalloc.net.http.parser import HttpError, Request
from poolalloc.net.http.server import HttpServer, Response

__all__ = ["HttpError", "HttpServer", "Request", "Response"]
