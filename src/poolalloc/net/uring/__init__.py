"""The io_uring engine: the :class:`Proactor`, its connection and TCP server, buffer rings.

Floor 4: may import ``poolalloc._ffi`` (its bindings go through the one door to the compiled
module), the floor-3 modules of ``poolalloc.net`` and the epoll engine (the Proactor *is* a
Reactor whose wait is ``io_uring_enter``); never ``poolalloc.net.http`` or the CLI.

* ``ring.py``: the ring bindings (submission, completion, probe) over ``poolalloc._ffi``.
* ``_buffers.py``: provided-buffer rings fed with ``BufferPool`` leases.
* ``proactor.py``: the loop: completions dispatched to their owners, flushes, fallbacks.
* ``_fastpath`` (C, ``native/uring/``): the walk of a batch of completions (the common
  receive handed to its protocol without Python frames of the engine's own) and the call
  that hands small writes to the ring's copied sends.
* ``connection.py``: multishot receive, one send in flight, splice for files.
* ``server.py``: multishot accept into pooled connections.

Example:
    >>> from poolalloc.net.uring import available
    >>> ok, reason = available()
    >>> isinstance(ok, bool) and isinstance(reason, str)
    True
"""

from __future__ import annotations

from poolalloc.net.uring.connection import UringConnection
from poolalloc.net.uring.proactor import Proactor, available, probe_result
from poolalloc.net.uring.server import UringTcpServer

__all__ = ["Proactor", "UringConnection", "UringTcpServer", "available", "probe_result"]
