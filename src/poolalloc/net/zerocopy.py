"""Zero-copy sends: ``sendfile``, ``splice`` and mmap-backed writes, each with a fallback.

The shape follows asyncio's ``sock_sendfile``: try the kernel path; when the kernel or the file
type says no (``EINVAL``, ``ENOSYS``, ``EOPNOTSUPP``, a TLS socket, a file without ``fileno``),
fall back to reading into a pooled buffer and sending it. Every function returns the bytes it
moved and leaves the *file's own offset* just after the last byte sent, as if the caller had
read that far (``os.sendfile`` with an explicit offset does not move it, so we seek).

On a non-blocking socket the functions stop at ``EAGAIN`` and return the count so far; the
caller resumes from ``offset + sent`` when the socket is writable again.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import ssl
import traceback
from typing import Protocol

from poolalloc.net.sockets import LeaseSource, send_buffers

__all__ = [
    "FileLike",
    "mmap_send",
    "sendfile",
    "sendfile_fallback",
    "splice",
    "splice_file_to_socket",
]

#: errnos meaning "this kernel path cannot do it", not "the transfer failed".
_NOT_AVAILABLE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.EBADF}
_MAX_CHUNK = 1 << 30  # sendfile moves at most 0x7ffff000 bytes per call


class FileLike(Protocol):
    """A binary file with ``fileno``, ``seek`` and ``readinto`` (an ``open(..., 'rb')`` file).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f: callable(f.readinto)
        True
    """

    def fileno(self) -> int: ...

    def seek(self, offset: int, whence: int = 0) -> int: ...

    def readinto(self, buffer: memoryview) -> int | None: ...


def sendfile(
    sock: socket.socket,
    file: FileLike,
    offset: int = 0,
    count: int | None = None,
    *,
    pool: LeaseSource | None = None,
) -> int:
    """Send ``count`` bytes (default: to EOF) of ``file`` from ``offset``; returns bytes sent.

    Uses ``os.sendfile`` when possible, else reads into leases from ``pool`` (or a private
    64 KiB buffer when no pool is given) and sends them.

    Example:
        >>> import socket, tempfile
        >>> a, b = socket.socketpair()
        >>> f = tempfile.TemporaryFile(); _ = f.write(b"0123456789"); _ = f.seek(0)
        >>> sendfile(a, f, 2, 5), b.recv(10), f.tell()
        (5, b'23456', 7)
        >>> a.close(); b.close(); f.close()

    :raises ValueError: negative ``offset`` or ``count``.
    :raises OSError: the socket or the file failed.
    """
    if offset < 0 or (count is not None and count < 0):
        raise ValueError("offset and count must be non-negative")
    sent = 0
    if not isinstance(sock, ssl.SSLSocket):
        try:
            sent = _sendfile_native(sock, file.fileno(), offset, count)
        except _NotAvailable:
            sent = 0
        else:
            # The native loop stops only at EOF, at ``count``, or at EAGAIN: all final.
            file.seek(offset + sent)
            return sent
    rest = None if count is None else count - sent
    return sent + sendfile_fallback(sock, file, offset + sent, rest, pool=pool)


class _NotAvailable(Exception):
    pass


def _sendfile_native(sock: socket.socket, in_fd: int, offset: int, count: int | None) -> int:
    out_fd = sock.fileno()
    sent = 0
    while count is None or sent < count:
        chunk = _MAX_CHUNK if count is None else min(count - sent, _MAX_CHUNK)
        try:
            n = os.sendfile(out_fd, in_fd, offset + sent, chunk)
        except (BlockingIOError, InterruptedError):
            if sock.gettimeout() == 0.0:
                return sent
            continue
        except OSError as exc:
            if exc.errno in _NOT_AVAILABLE and sent == 0:
                raise _NotAvailable from exc
            raise
        if n == 0:
            break  # EOF of the file
        sent += n
    return sent


def sendfile_fallback(
    sock: socket.socket,
    file: FileLike,
    offset: int = 0,
    count: int | None = None,
    *,
    pool: LeaseSource | None = None,
) -> int:
    """The copy path: ``readinto`` a pooled buffer, then send it; returns bytes sent.

    Example:
        >>> import io, socket
        >>> a, b = socket.socketpair()
        >>> sendfile_fallback(a, io.BytesIO(b"abcdef"), 1, 3), b.recv(10)
        (3, b'bcd')
        >>> a.close(); b.close()

    :raises OSError: the socket or the file failed.
    """
    lease = pool.acquire() if pool is not None else None
    view = lease.view if lease is not None else memoryview(bytearray(65536))
    sent = 0
    try:
        file.seek(offset)
        while count is None or sent < count:
            want = len(view) if count is None else min(len(view), count - sent)
            n = file.readinto(view[:want]) or 0
            if n == 0:
                break
            left = send_buffers(sock, [view[:n]])
            done = n - sum(len(v) for v in left)
            for rest in left:
                rest.release()
            sent += done
            if left:  # non-blocking socket full: stop here, offset stays right
                break
        file.seek(offset + sent)
    except BaseException as exc:
        # the failed send's frames still hold a slice of the view: a strict pool would refuse
        # the lease's release below and hide this error behind LeaseBusyError
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        view.release()  # no view of the lease left: a strict pool takes it back
        if lease is not None:
            lease.release()
    return sent


def splice(src_fd: int, dst_fd: int, count: int, *, offset: int | None = None) -> int:
    """Move up to ``count`` bytes between fds with ``splice`` (one end must be a pipe).

    Between a file and a socket, splice goes through a pipe; this helper handles one hop.
    With ``offset`` the source (a regular file) is read at that offset and its own file
    position does not move (the kernel's rule). Returns bytes moved (0 at EOF).

    Example:
        >>> import os
        >>> r, w = os.pipe(); r2, w2 = os.pipe()
        >>> _ = os.write(w, b"spliced")
        >>> splice(r, w2, 100), os.read(r2, 100)
        (7, b'spliced')
        >>> for fd in (r, w, r2, w2): os.close(fd)

    :raises BlockingIOError: a non-blocking end is not ready.
    :raises OSError: the kernel refused (``EINVAL``: no pipe end, or the file type).
    """
    flags = os.SPLICE_F_MOVE
    return os.splice(src_fd, dst_fd, count, offset_src=offset, flags=flags)


def splice_file_to_socket(file: FileLike, sock: socket.socket, offset: int, count: int) -> int:
    """Send a file range to a blocking socket through a pipe with two splices; bytes sent.

    Falls back to :func:`sendfile_fallback` if the kernel refuses splice for this file.
    Leaves the file's offset after the last byte sent.

    Example:
        >>> import socket, tempfile
        >>> a, b = socket.socketpair()
        >>> f = tempfile.TemporaryFile(); _ = f.write(b"abcdef"); f.flush()
        >>> splice_file_to_socket(f, a, 1, 4), b.recv(10), f.tell()
        (4, b'bcde', 5)
        >>> a.close(); b.close(); f.close()

    :raises OSError: the socket or the file failed.
    """
    r, w = os.pipe()
    sent = 0
    try:
        while sent < count:
            try:
                n = splice(file.fileno(), w, min(count - sent, 1 << 16), offset=offset + sent)
            except OSError as exc:
                if exc.errno in _NOT_AVAILABLE and sent == 0:
                    return sendfile_fallback(sock, file, offset, count)
                raise
            if n == 0:
                break
            moved = 0
            while moved < n:
                moved += splice(r, sock.fileno(), n - moved)
            sent += n
    finally:
        os.close(r)
        os.close(w)
    file.seek(offset + sent)
    return sent


def mmap_send(
    sock: socket.socket, file: FileLike, offset: int = 0, count: int | None = None
) -> int:
    """Send a file range from an ``mmap`` of it (no read copy into user space); bytes sent.

    Example:
        >>> import socket, tempfile
        >>> a, b = socket.socketpair()
        >>> f = tempfile.TemporaryFile(); _ = f.write(b"mapped!"); f.flush()
        >>> mmap_send(a, f, 0), b.recv(10), f.tell()
        (7, b'mapped!', 7)
        >>> a.close(); b.close(); f.close()

    :raises ValueError: the range is outside the file, or the file is empty.
    :raises OSError: the socket failed.
    """
    size = os.fstat(file.fileno()).st_size
    end = size if count is None else offset + count
    if offset < 0 or end > size or offset > end:
        raise ValueError(f"range {offset}..{end} outside a file of {size} bytes")
    if end == offset:
        file.seek(offset)
        return 0
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(file.fileno(), end - start, offset=start, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            left = send_buffers(sock, [view[offset - start :]])
            sent = end - offset - sum(len(v) for v in left)
            for v in left:
                v.release()
        except BaseException as exc:
            # the failed send's frames still hold views of the map: closing it would raise
            # BufferError ("exported pointers exist") in place of this error
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            view.release()
    file.seek(offset + sent)
    return sent
