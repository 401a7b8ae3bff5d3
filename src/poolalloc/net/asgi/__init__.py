"""ASGI 3 applications on pooled reads: ``serve(app, host, port)`` and ``poolalloc serve --app``.

Floor 5, beside :mod:`poolalloc.net.http`: the HTTP/1.1 protocol here is an asyncio
``BufferedProtocol`` reading into pooled leases, with the sans-IO parser of
:mod:`poolalloc.net.http.parser`, so an ASGI app (Starlette, FastAPI, Django's ASGI handler...)
runs on an asyncio loop (uvloop when installed). Supported: ``http`` (request bodies streamed
to ``receive()`` with ``more_body``, streaming responses with backpressure, keep-alive,
pipelining, ``Expect: 100-continue``) and ``lifespan``. WebSocket is not supported: an upgrade
request is served as plain HTTP (the app sees an ``http`` scope).

Example:
    >>> from poolalloc.net.asgi import AsgiServer, serve
    >>> callable(serve)
    True
"""

from __future__ import annotations

from poolalloc.net.asgi.server import (
    AsgiServer,
    ClientDisconnected,
    LifespanError,
    import_app,
    serve,
)

__all__ = ["AsgiServer", "ClientDisconnected", "LifespanError", "import_app", "serve"]
