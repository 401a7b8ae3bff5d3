"""A tiny raw HTTP/1.1 client for the tests: pipelining and malformed requests need one."""

from __future__ import annotations

import socket
import time
from typing import BinaryIO


def free_two_then_serve_two(clients: list[socket.socket]) -> int:
    """The EMFILE tests' recovery step, run inside their scripts: two accepted peers leave
    (their server-side descriptors come free); returns how many of the next two queued
    clients got a response."""
    for c in clients[:2]:
        c.close()
    time.sleep(0.3)
    served = 0
    for c in clients[2:4]:
        c.settimeout(5)
        c.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
        served += b"Hello, World!" in c.recv(1000)
    return served


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


def read_to_close(sock: socket.socket) -> bytes:
    """Everything until the server closes (the socket's timeout bounds the wait)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


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
