"""What a TCP socket's kernel state says about the peer, for timeouts that must tell a slow
reader from one that stopped reading.

Example:
    >>> import socket
    >>> acked_bytes(socket.socket(socket.AF_UNIX)) is None  # not TCP: it cannot say
    True
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["acked_bytes"]

#: ``struct tcp_info`` up to ``tcpi_bytes_acked`` (Linux 4.1), a u64 at offset 120
_TCP_INFO_ACKED = struct.Struct("120xQ")


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
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_ACKED.size)
        return int(_TCP_INFO_ACKED.unpack(info)[0])
    except (OSError, struct.error):
        return None
