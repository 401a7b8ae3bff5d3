"""A tiny raw HTTP/1.1 client for the tests: pipelining and malformed requests need one."""

from __future__ import annotations

import socket
from typing import BinaryIO


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(f: BinaryIO, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One response from a buffered reader: (status, headers lower-cased, body)."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return read_response(f, method)
    length = int(headers.get("content-length", "0"))
    body = b"" if method == "HEAD" else f.read(length)
    return status, headers, body


def exchange(port: int, raw: bytes, count: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``raw`` bytes, read ``count`` responses."""
    with connect(port) as sock:
        sock.sendall(raw)
        f = sock.makefile("rb")
        return [read_response(f) for _ in range(count)]


def is_closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the server closes (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True
