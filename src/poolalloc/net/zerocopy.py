"""Zero-copy sends: ``sendfile``, ``splice`` and mmap-backed writes, each with a fallback.

The shape follows asyncio's ``sock_sendfile``: try the kernel path; when the kernel or the file
type says no (``EINVAL``, ``ENOSYS``, ``EOPNOTSUPP``, a TLS socket, a file without ``fileno``),
fall back to reading into a pooled buffer and sending it. Every function returns the bytes it
moved and leaves the *file's own offset* just after the last byte sent, as if the caller had
read that far (``os.sendfile`` with an explicit offset does not move it, so we seek).

On a non-blocking socket the functions stop at ``EAGAIN`` and return the count so far; the
caller resumes from ``offset + sent`` when the socket is writable again. A socket with a
timeout (``settimeout(5)``) waits for room up to that timeout at a time, as its own ``send``
does, and raises ``TimeoutError`` past it. A transfer that fails part way (a timeout, the peer
gone) also leaves the file's offset just after the last byte the socket took.
"""

from __future__ import annotations

import contextlib
import errno
import math
import mmap
import os
import select
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
            sent = _sendfile_native(sock, file, offset, count)
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


def _wait_writable(sock: socket.socket) -> bool:
    """After ``EAGAIN``: False on a non-blocking socket (the caller stops there), else True
    once the socket takes bytes again.

    A socket with a timeout has a non-blocking descriptor underneath: the kernel answers
    ``EAGAIN`` at once, and retrying without a wait spun a core until the peer read, forever
    for a peer that never does.

    :raises TimeoutError: nothing fitted within the socket's timeout.
    """
    timeout = sock.gettimeout()
    if timeout == 0.0:
        return False
    if timeout is not None:  # None: SO_SNDTIMEO on a blocking socket already waited
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        if not poller.poll(math.ceil(timeout * 1000)):
            raise TimeoutError("timed out")
    return True


def _sendfile_native(sock: socket.socket, file: FileLike, offset: int, count: int | None) -> int:
    in_fd = file.fileno()
    out_fd = sock.fileno()
    sent = 0
    try:
        while count is None or sent < count:
            chunk = _MAX_CHUNK if count is None else min(count - sent, _MAX_CHUNK)
            try:
                n = os.sendfile(out_fd, in_fd, offset + sent, chunk)
            except (BlockingIOError, InterruptedError):
                if not _wait_writable(sock):
                    return sent
                continue
            except OSError as exc:
                if exc.errno in _NOT_AVAILABLE and sent == 0:
                    raise _NotAvailable from exc
                raise
            if n == 0:
                break  # EOF of the file
            sent += n
    except OSError:
        _seek_quietly(file, offset + sent)
        raise
    return sent


def _seek_quietly(file: FileLike, at: int) -> None:
    """Leave the file after the bytes sent on the way out of a failure (the failure wins)."""
    with contextlib.suppress(OSError, ValueError):
        file.seek(at)


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

    :raises ValueError: negative ``offset`` or ``count``.
    :raises OSError: the socket or the file failed.
    """
    if offset < 0 or (count is not None and count < 0):
        raise ValueError("offset and count must be non-negative")
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
        _seek_quietly(file, offset + sent)  # readinto moved it past what was sent
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
    """Send a file range to a socket through a pipe with two splices; bytes sent.

    Falls back to :func:`sendfile_fallback` if the kernel refuses splice for this file, and for
    a TLS socket (a splice would put the file's plaintext on the wire under the TLS stream).
    Leaves the file's offset after the last byte sent. A non-blocking socket stops at
    ``EAGAIN`` with the count so far, as :func:`sendfile` does.

    Example:
        >>> import socket, tempfile
        >>> a, b = socket.socketpair()
        >>> f = tempfile.TemporaryFile(); _ = f.write(b"abcdef"); f.flush()
        >>> splice_file_to_socket(f, a, 1, 4), b.recv(10), f.tell()
        (4, b'bcde', 5)
        >>> a.close(); b.close(); f.close()

    :raises ValueError: negative ``offset`` or ``count``.
    :raises TimeoutError: the socket's timeout ran out (the file's offset says how far it got).
    :raises OSError: the socket or the file failed.
    """
    if offset < 0 or count < 0:
        raise ValueError("offset and count must be non-negative")
    if isinstance(sock, ssl.SSLSocket):
        return sendfile_fallback(sock, file, offset, count)
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
            left = n
            while left:
                try:
                    moved = splice(r, sock.fileno(), left)
                except (BlockingIOError, InterruptedError):
                    # what is left in the pipe is a copy of the file, dropped with the pipe:
                    # the count and the offset say where to resume
                    if not _wait_writable(sock):
                        file.seek(offset + sent)
                        return sent
                    continue
                sent += moved
                left -= moved
    except OSError:
        _seek_quietly(file, offset + sent)
        raise
    finally:
        os.close(r)
        os.close(w)
    file.seek(offset + sent)
    return sent


def mmap_send(
    sock: socket.socket, file: FileLike, offset: int = 0, count: int | None = None
) -> int:
    """Send a file range from an ``mmap`` of it (no read copy into user space); bytes sent.

    A file that shrinks during the send ends it at its new end, with the count so far, as
    :func:`sendfile` does. A TLS socket takes the copy path (:func:`sendfile_fallback`): TLS
    encrypts in user space, which would read the map here, and reading a mapped page past the
    end of a file that shrank meanwhile raises ``SIGBUS``, which kills the process.

    Example:
        >>> import socket, tempfile
        >>> a, b = socket.socketpair()
        >>> f = tempfile.TemporaryFile(); _ = f.write(b"mapped!"); f.flush()
        >>> mmap_send(a, f, 0), b.recv(10), f.tell()
        (7, b'mapped!', 7)
        >>> a.close(); b.close(); f.close()

    :raises ValueError: the range is outside the file (an empty range sends nothing).
    :raises TimeoutError: the socket's timeout ran out (the file's offset says how far it got).
    :raises OSError: the socket failed.
    """
    size = os.fstat(file.fileno()).st_size
    end = size if count is None else offset + count
    if offset < 0 or end > size or offset > end:
        raise ValueError(f"range {offset}..{end} outside a file of {size} bytes")
    if end == offset:
        file.seek(offset)
        return 0
    if isinstance(sock, ssl.SSLSocket):
        return sendfile_fallback(sock, file, offset, end - offset)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    sent = 0
    with mmap.mmap(file.fileno(), end - start, offset=start, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            while offset + sent < end:
                try:
                    sent += sock.send(view[offset - start + sent :])
                except (BlockingIOError, InterruptedError):
                    break  # a non-blocking socket is full: the count says where to resume
                except OSError as exc:
                    if exc.errno != errno.EFAULT:
                        raise
                    # the kernel met a page past the end of a file that shrank under the map:
                    # the end of the file came early, as for sendfile
                    break
        except BaseException as exc:
            # the failed send's frames still hold views of the map: closing it would raise
            # BufferError ("exported pointers exist") in place of this error
            traceback.clear_frames(exc.__traceback__)
            _seek_quietly(file, offset + sent)
            raise
        finally:
            view.release()
    file.seek(offset + sent)
    return sent
