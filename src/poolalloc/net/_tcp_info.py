"""What a TCP socket's kernel state says about the peer: for timeouts that must tell a slow
reader from one that stopped reading, and for the io_uring engine's choice of zero-copy sends.

Example:
    >>> import socket
    >>> acked_bytes(socket.socket(socket.AF_UNIX)) is None  # not TCP: it cannot say
    True
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["acked_bytes", "send_window"]

#: ``struct tcp_info`` up to ``tcpi_bytes_acked`` (Linux 4.1), a u64 at offset 120
_TCP_INFO_ACKED = struct.Struct("120xQ")
#: ``struct tcp_info`` up to ``tcpi_snd_wnd`` (Linux 5.4), a u32 at offset 228
_TCP_INFO_SND_WND = struct.Struct("228xI")


def acked_bytes(sock: Any) -> int | None:
    """Bytes of ours the peer's TCP has acknowledged so far, from ``TCP_INFO``: it grows while
    the peer takes what is sent (in steps of about a segment: a receiver reopens a shut window
    by about one MSS) and stops once its receive buffer is full and it reads nothing. None
    where the socket cannot say (None, closed, not TCP).

    Example:
        >>> import socket
        >>> server = socket.create_server(("127.0.0.1", 0))
        >>> client = socket.create_connection(server.getsockname())
        >>> peer, _ = server.accept()
        >>> acked_bytes(peer)  # nothing sent yet
        0
        >>> for s in (client, peer, server):
        ...     s.close()
    """
    return _field(sock, _TCP_INFO_ACKED)


def send_window(sock: Any) -> int | None:
    """The receive window the peer last advertised, in bytes (``tcpi_snd_wnd``): about the free
    room of its receive buffer, so a peer that asked for a small ``SO_RCVBUF`` shows a small
    one from its first acknowledgement on. None where the socket cannot say (None, closed, not
    TCP, a kernel older than 5.4).

    Example:
        >>> import socket
        >>> server = socket.create_server(("127.0.0.1", 0))
        >>> client = socket.socket()
        >>> client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        >>> client.connect(server.getsockname())
        >>> peer, _ = server.accept()
        >>> 0 < send_window(peer) <= 8192  # the kernel doubles SO_RCVBUF, a window is less
        True
        >>> send_window(socket.socket(socket.AF_UNIX)) is None
        True
        >>> for s in (client, peer, server):
        ...     s.close()
    """
    return _field(sock, _TCP_INFO_SND_WND)


def _field(sock: Any, layout: struct.Struct) -> int | None:
    """The last field of ``layout`` in ``sock``'s ``TCP_INFO``; None where it cannot say."""
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, layout.size)
        return int(layout.unpack(info)[0])
    except (OSError, struct.error):
        return None
