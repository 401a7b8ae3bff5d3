"""A small HTTP/1.1 server on the Reactor: routes, static files by sendfile, uploads.

* Dynamic responses: ``server.route("/path", handler)`` where ``handler(request)`` returns a
  :class:`Response`; the request body (bounded by ``max_body``) is in ``request.body``.
* Static files under ``root`` (``GET``/``HEAD``): the head is sent with ``MSG_MORE`` and the
  body with ``os.sendfile`` from the file's descriptor, so file bytes never enter Python.
  ``ETag``/``Last-Modified``, conditional requests (304/412) and one byte range (206/416) are
  decided by ``_files.plan`` (several ranges get the whole file); ``/dir`` redirects to
  ``/dir/`` (301), which serves ``dir/index.html``.
* File-transfer mode (``uploads=True``): ``PUT``/``POST`` to a path under ``root`` streams the
  body from the pooled read buffers into an unnamed file (``O_TMPFILE``) that is linked under
  its name when complete (a half-sent upload never appears under any name; where the
  filesystem has no unnamed files, a hidden, unguessable ``.<name>.part-*`` is renamed into
  place). The answer is ``201 Created``
  when the name was new, ``204 No Content`` when an existing file was replaced; a request with
  neither ``Content-Length`` nor ``Transfer-Encoding`` gets ``411 Length Required`` and changes
  nothing (``Content-Length: 0`` stores an empty file); ``If-Match``, ``If-None-Match``
  and ``If-Unmodified-Since`` are evaluated first (412 when one fails). Disk writes
  are synchronous in the loop: fine for local disks, not for network filesystems.
* Static responses: ``server.route("/path", Response(...))`` answers every request for the path
  with the same response; keep-alive ``GET`` requests for it take the protocol's fast path
  (the encoded answer is looked up by the request's exact head bytes and written at once).
* One reply cache (``server.replies``, a :class:`~poolalloc.net.http._cache.ReplyCache`): heads
  seen before with their parse and static answer, and the last dynamic response encoded. It
  is cleared whenever a route changes or the ``Date`` second does, and when full.
* ``GET /test`` answers ``Hello, World!`` (the benchmark's request), as a static route.

Example:
    >>> import poolalloc
    >>> from poolalloc.net.epoll.reactor import Reactor
    >>> r = Reactor(); pool = poolalloc.BufferPool(16384, capacity=64)
    >>> srv = HttpServer(r, buffer_pool=pool)  # doctest: +SKIP
    >>> srv.route("/hi", lambda req: Response(body=b"hi"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http
import math
import os
import re
import secrets
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.epoll.server import TcpServer
from poolalloc.net.http import _files
from poolalloc.net.http._cache import ReplyCache
from poolalloc.net.http.parser import HttpError, Request, valid_field
from poolalloc.net.http.protocol import BodySink, HttpProtocol
from poolalloc.net.transport import Handled

__all__ = ["HttpServer", "Response"]

_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
#: Uploads go to unnamed files, named through /proc when complete (off where either is missing)
_UNNAMED = os.path.isdir("/proc/self/fd")
#: What a link of an unnamed file may meet where unnamed files cannot be named
_LINK_REFUSED = frozenset({errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP})
_NAME_MAX = 255  # bytes in one path component, on every Linux filesystem served here
_TEXT = "text/plain; charset=utf-8"
#: Headers the server writes from the body it sends and the connection's state: a route's own
#: would frame the body otherwise (a client then reading the rest as the next response), or
#: say "close" on a connection the server keeps open (RFC 9112 9.6). A route's
#: ``Connection: close`` is taken as its ``close=True``: the server then writes it, and closes.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
#: what _CHECKED_FIELDS holds for fields that go out as given, for fields whose Connection:
#: close is taken out (from each Response's own fields: equal keys may hold unequal values, as
#: 1 == 1.0 == True), and what it lacks
_AS_GIVEN = None
_STRIP = object()
_UNCHECKED = object()
#: Statuses whose response ends at its head (RFC 9112 6.3), whatever it says
_NO_CONTENT = (204, 304)
#: (content_type, headers) of Responses whose fields passed the check, at most _CHECKED_FIELDS_MAX
_CHECKED_FIELDS: dict[object, object] = {}
_CHECKED_FIELDS_MAX = 256
#: How often a graceful shutdown looks whether its connections are gone (seconds)
_DRAIN_POLL = 0.02
#: A request body's seconds, and the bytes per second that earn it one more (Apache
#: mod_reqtimeout's body=20,MinRate=500): the defaults of both servers
BODY_TIMEOUT = 20.0
BODY_MIN_RATE = 500.0


def seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as seconds above 0 (or from 0 with ``zero``; inf: no limit), else an error
    naming ``name``: a NaN timer breaks the order of every timer of the loop (none is below
    or above NaN), and a timeout below 0 ends what it bounds at once."""
    above = "0 or above" if zero else "above 0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds {above}, not {value!r}")
    if not (value >= 0 if zero else value > 0):
        raise ValueError(f"{name} must be a number of seconds {above}, not {value!r}")
    return float(value)


def per_second(name: str, value: object) -> float:
    """``value`` as bytes per second, 0 or above and finite, else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of bytes per second, not {value!r}")
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a number of bytes per second, 0 or above, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Response:
    """A dynamic response; ``headers`` are extra ``(name, value)`` pairs.

    Immutable, so a handler may return the same object for every request: the server then
    reuses its encoded bytes (refreshed when the ``Date`` second changes).

    ``close=True`` (or a ``("Connection", "close")`` header, taken as that) closes the
    connection once the response is sent; it says ``Connection: close``, and requests the
    client pipelined behind it are not read.

    A field that would break the head (a name that is not a token, a value with a control
    byte, a CR or LF that would add headers of a client's choosing when a handler reflects
    the request, or text that is not Latin-1), a ``Content-Length`` or ``Transfer-Encoding``
    (the server frames the body), a ``Connection`` other than ``close``, a status that is not
    a final one, or a body for a 204 or 304 raises ``ValueError`` here: in a handler, its
    client gets the handler's 500.

    Example:
        >>> Response(body=b"ok").status
        200
        >>> r = Response(headers=(("Connection", "close"),))
        >>> r.close, r.headers
        (True, ())
        >>> Response(headers=(("X-A", "1\\r\\nSet-Cookie: a=1"),))
        Traceback (most recent call last):
        ...
        ValueError: Response: invalid header 'X-A': '1\\r\\nSet-Cookie: a=1'
    """

    status: int = 200
    body: bytes = b""
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:  # a 1xx is interim: the client waits for another
            raise ValueError(f"Response: invalid final status {self.status!r}")
        if self.body and self.status in _NO_CONTENT:  # its client reads it as the next answer
            raise ValueError(f"Response: a {self.status} has no content (RFC 9110 15.3.5, 15.4.5)")
        fields = self.headers
        if type(fields) is not tuple:  # a generator would be used up by the check below
            fields = tuple(fields)
            object.__setattr__(self, "headers", fields)  # frozen: set once, here
        if self.content_type is _TEXT and not fields:
            return
        # A route that makes its Response for each request repeats a few header sets: checked
        # once each, the check costs a lookup there instead of a microsecond or two a request.
        key: object = (self.content_type, fields)
        try:
            kept = _CHECKED_FIELDS.get(key, _UNCHECKED)
        except TypeError:  # a list of headers: no key, checked each time
            key, kept = None, _UNCHECKED
        if kept is _UNCHECKED:
            kept = _checked(self.content_type, fields)
            if key is not None:
                if len(_CHECKED_FIELDS) >= _CHECKED_FIELDS_MAX:  # headers made from each request
                    _CHECKED_FIELDS.clear()
                _CHECKED_FIELDS[key] = kept
        if kept is _STRIP:  # a Connection: close, taken out of the fields
            others = tuple((n, v) for n, v in fields if f"{n}".lower() != "connection")
            object.__setattr__(self, "headers", others)
            object.__setattr__(self, "close", True)


def _tokens(value: str) -> set[str]:
    """The elements of a comma-separated field value, lower case (an empty one is "", which
    RFC 9110 5.6.1 says to ignore)."""
    return {t.strip(" \t").lower() for t in value.split(",")}


def _checked(content_type: str, fields: tuple[tuple[str, str], ...]) -> object:
    """``_AS_GIVEN`` when ``fields`` go out as given, ``_STRIP`` when their ``Connection:
    close`` is to be taken out (the response then closes its connection).

    :raises ValueError: a field would break the head, or is the server's to write.
    """
    close = False
    every = fields if content_type is _TEXT else (("Content-Type", content_type), *fields)
    for name, value in every:
        try:  # as the head will write them (a number as a value is sent as its digits)
            ok = valid_field(f"{name}".encode("latin-1"), f"{value}".encode("latin-1"))
        except UnicodeEncodeError:
            ok = False
        if not ok:
            raise ValueError(f"Response: invalid header {name!r}: {value!r}")
        lower = f"{name}".lower()
        if lower == "connection" and _tokens(f"{value}") - {""} == {"close"}:
            close = True
        elif lower in _FRAMING:
            raise ValueError(f"Response: {name!r} is the server's to write")
    return _STRIP if close else _AS_GIVEN


#: a "%" not followed by two hex digits: unquote would keep it as it is, a name no client meant
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _status_of(exc: OSError) -> int:
    """The status for a file that could not be opened: a name longer than the file system
    takes is the client's too-long target (414, as nginx answers), anything else not found."""
    return 414 if exc.errno == errno.ENAMETOOLONG else 404


_HELLO = Response(body=b"Hello, World!")
_CREATED = Response(201, b"created\n")
_REPLACED = Response(204)


Handler = Callable[[Request], Response]


class _MemorySink:
    __slots__ = ("data", "req")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.data = bytearray()

    def write(self, data: memoryview) -> None:
        self.data += data

    def close(self) -> None:
        self.req.body = bytes(self.data)

    def abort(self) -> None:
        self.data = bytearray()


class _FileSink:
    """An upload being written straight from pooled read buffers; renamed when complete.

    ``created`` says afterwards whether the name was new (201) or an existing file was
    replaced (204, RFC 9110 9.3.4); ``done`` is called with the sink once it is in place.
    ``stray(part, error)`` is called when the part name cannot be removed afterwards (the
    answer does not change: the upload is stored, or refused for its name, either way).
    """

    __slots__ = ("create_only", "created", "done", "fd", "final", "part", "req", "stray", "written")

    def __init__(
        self,
        final: str,
        req: Request,
        done: Callable[[_FileSink], None] | None = None,
        stray: Callable[[str, OSError], None] | None = None,
    ) -> None:
        self.final, self.req, self.done, self.stray = final, req, done, stray
        #: ``If-None-Match: *``: a file that took the name while the body came is not replaced
        self.create_only = _files.create_only(req)
        head, tail = os.path.split(final)
        if len(os.fsencode(tail)) > _NAME_MAX:  # refused before the body, as a named open is
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), final)
        fd = _open_unnamed(head or ".")
        # None: the body has no name until it is complete (nothing another request could read
        # or replace half-written, nothing left behind by a crash)
        self.part: str | None = None
        if fd is None:
            self.part = _part_name(final)
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.fd = fd
        self.written = 0
        self.created = False

    def write(self, data: memoryview) -> None:
        try:
            while data:
                n = os.write(self.fd, data)
                self.written += n
                data = data[n:]
        except OSError as exc:  # disk full, quota...: the client gets a status, not a hang
            raise HttpError(507 if exc.errno == errno.ENOSPC else 500, "cannot store") from exc

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        try:
            if self.part is None:
                self.created = self._name_unnamed(fd)
            else:
                os.close(fd)
                fd = -1
                self.created = _put_in_place(self.part, self.final, replace=not self.create_only)
        except OSError as exc:  # e.g. the name is a directory: nothing was stored
            self._remove_part()
            if self.create_only and isinstance(exc, FileExistsError):
                raise HttpError(412, "precondition failed: the file exists") from exc
            raise HttpError(409, "cannot store under that name") from exc
        finally:
            if fd >= 0:
                os.close(fd)
        # Stored: whatever happens to the part name now, the client's file is in place.
        self._remove_part()
        if self.done is not None:
            self.done(self)

    def _name_unnamed(self, fd: int) -> bool:
        """Link the complete unnamed file to ``final``; True when the name was new. Where the
        name exists, or links of unnamed files are refused, the body gets a part name (which
        exists only between two calls of this thread, holding the whole body) and is put in
        place by :func:`_put_in_place`, the one rule for an existing name."""
        try:
            _link_fd(fd, self.final)  # claims a new name atomically, as _put_in_place does
        except FileExistsError:  # (the kernel says so before it checks whether it may link)
            if self.create_only:
                raise
            self.part = _part_name(self.final)
            self._link_or_copy(fd, self.part)
        except OSError as exc:
            if exc.errno not in _LINK_REFUSED:
                raise
            self._refused()
            self.part = _part_name(self.final)
            _copy_to(fd, self.part)
        else:
            return True
        return _put_in_place(self.part, self.final, replace=not self.create_only)

    def _link_or_copy(self, fd: int, part: str) -> None:
        """Link the unnamed file to ``part``, else copy it there."""
        try:
            _link_fd(fd, part)
        except OSError as exc:
            if exc.errno not in _LINK_REFUSED:
                raise
            self._refused()
            _copy_to(fd, part)

    @staticmethod
    def _refused() -> None:
        # made but not nameable here (a security module, a sandbox's /proc): this body is
        # copied to a part name, and later uploads take part names from the start
        global _UNNAMED  # noqa: PLW0603 - one switch per process
        _UNNAMED = False

    def _remove_part(self) -> None:
        if self.part is None:
            return
        error = _unlink_part(self.part)
        if error is not None and self.stray is not None:
            self.stray(self.part, error)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.part is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part)


def _regular_file(path: str) -> os.stat_result | None:
    """The status of the regular file ``path``; None when there is none (a directory is
    refused with 409 whatever an upload's preconditions say, a bad name with its own status)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _open_unnamed(directory: str) -> int | None:
    """An unnamed file in ``directory`` (``O_TMPFILE``), or None where the filesystem cannot
    make one or ``/proc`` (through which it is given its name) is missing."""
    if not _UNNAMED:
        return None
    try:  # readable too: copied to a part name if the link is refused
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        # EISDIR: a kernel without O_TMPFILE (it includes O_DIRECTORY); EOPNOTSUPP: a
        # filesystem without it
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _link_fd(fd: int, path: str) -> None:
    """Give the open file ``fd`` the name ``path``: ``linkat`` through ``/proc`` with
    ``AT_SYMLINK_FOLLOW`` (``os.link`` makes a plain ``link()`` call, which does not follow the
    magic link, unless a directory descriptor is given)."""
    head, tail = os.path.split(path)
    dirfd = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", tail, dst_dir_fd=dirfd, follow_symlinks=True)
    finally:
        os.close(dirfd)


def _copy_to(fd: int, path: str) -> None:
    """Copy the whole file ``fd`` into a new file ``path``, in the kernel."""
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size:
            try:
                n = os.copy_file_range(fd, out, size - done, done, done)
            except OSError as exc:  # sandboxes refuse it too: read and write then
                if exc.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                data = os.pread(fd, min(size - done, 1 << 20), done)
                n = os.pwrite(out, data, done) if data else 0
            if n == 0:
                raise OSError(errno.EIO, "the upload shrank while it was copied", path)
            done += n
    finally:
        os.close(out)


def _part_name(final: str) -> str:
    """A hidden, unguessable sibling name for ``final``: a request cannot name it to read or
    replace the upload while it is written under it."""
    head, tail = os.path.split(final)
    name = f".{tail}.part-{secrets.token_hex(8)}"
    if len(os.fsencode(name)) > _NAME_MAX:
        name = f".part-{secrets.token_hex(8)}"
    return os.path.join(head, name)


def _put_in_place(part: str, final: str, *, replace: bool = True) -> bool:
    """Give the complete file ``part`` the name ``final``; True when ``final`` did not exist
    before. ``part`` may remain as a second name of the same file: the caller removes it
    (:func:`_unlink_part`), and the upload is stored whether or not that succeeds.

    Decided at the moment the name is taken, not when the upload began (another writer may
    create or remove the name meanwhile): a hard link claims a new name atomically, so of two
    uploads racing for one new name exactly one is told it created it. Where links are refused
    (some filesystems), a look just before the rename decides. Without ``replace``, an
    existing ``final`` raises FileExistsError and stays as it is.
    """
    try:
        os.link(part, final)
    except FileExistsError:
        if not replace:
            raise
        os.replace(part, final)
        return False
    except OSError:
        created = not os.path.lexists(final)
        if not (created or replace):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), final) from None
        os.replace(part, final)
        return created
    return True


def _unlink_part(part: str) -> OSError | None:
    """Remove an upload's part name; the error if it is still there (None: gone)."""
    try:
        os.unlink(part)
    except FileNotFoundError:
        pass  # renamed into place already
    except OSError as exc:
        # Kept and reported as a fresh error (same errno, so the same subclass): the raised
        # one's traceback and context hold frames, and they the connection's read buffer,
        # for as long as a log handler keeps the record.
        return OSError(exc.errno, exc.strerror, exc.filename)
    return None


class HttpServer:
    """HTTP/1.1 with keep-alive, pipelining, chunked bodies, static files and uploads.

    Example:
        >>> import poolalloc
        >>> from poolalloc.net import Reactor, listen_socket
        >>> r = Reactor(); pool = poolalloc.BufferPool(16384, capacity=8)
        >>> srv = HttpServer(r, buffer_pool=pool, sock=listen_socket("127.0.0.1", 0))
        >>> srv.route("/hi", lambda req: Response(body=b"hi"))
        >>> srv.address[0]
        '127.0.0.1'
        >>> srv.close(); r.close(); _ = pool.close()
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        buffer_pool: Any,
        root: str | os.PathLike[str] | None = None,
        uploads: bool = False,
        max_body: int = 1 << 20,
        max_upload: int = 1 << 40,
        max_head: int = 16384,
        max_target: int = 8190,
        header_timeout: float = 10.0,
        body_timeout: float = BODY_TIMEOUT,
        body_min_rate: float = BODY_MIN_RATE,
        **server_options: Any,
    ) -> None:
        body_timeout = seconds("body_timeout", body_timeout)
        body_min_rate = per_second("body_min_rate", body_min_rate)
        self.reactor = reactor
        self.root = os.path.realpath(root) if root is not None else None
        if self.root is not None and not os.path.isdir(self.root):
            # Taken, a missing root answered every GET 404 and every upload "404 No such file
            # or directory" while the server looked fine: refused here, as `serve --root` is.
            code = errno.ENOTDIR if os.path.exists(self.root) else errno.ENOENT
            raise OSError(code, "HttpServer root must be an existing directory", self.root)
        self.uploads = uploads
        self.max_body, self.max_upload = max_body, max_upload
        self.max_head, self.max_target = max_head, max_target
        self.header_timeout = header_timeout
        #: A request body must be whole within ``body_timeout`` seconds, plus one second per
        #: ``body_min_rate`` bytes received (0: no extension), else ``408`` (a slow sender).
        self.body_timeout, self.body_min_rate = body_timeout, body_min_rate
        self.routes: dict[str, Handler] = {}
        self.static: dict[str, Response] = {}
        #: The one reply cache (see the module docstring), cleared by ``route`` and ``_tick``.
        self.replies = ReplyCache()
        # The loop names its server class (the io_uring Proactor has its own); epoll by default.
        server_class = getattr(reactor, "server_class", TcpServer)
        self.tcp = server_class(
            reactor, lambda: HttpProtocol(self), buffer_pool=buffer_pool, **server_options
        )
        self._date = b""
        self._date_timer: Any = None
        #: The upload just put in place (its sink), for the finish() that answers it.
        self._stored: _FileSink | None = None
        #: Part names of uploads that could not be removed after the upload was stored (or
        #: refused): retried every second (``_tick``) and once more at ``close``.
        self._leftovers: set[str] = set()
        self._leftovers_total = 0
        #: True from :meth:`shutdown` on: every answer closes its connection.
        self.draining = False
        self._drain_timer: Any = None
        self.route("/test", _HELLO)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self.tcp.address

    def route(self, path: str, handler: Handler | Response) -> None:
        """Answer requests for exactly ``path`` (any method) with ``handler(request)``, or
        always with the same :class:`Response` (a static route, served by the fast path).

        Example:
            >>> srv.route("/ping", Response(body=b"pong"))  # doctest: +SKIP
        """
        self.replies.clear()  # answers remembered for the old route are stale (the one rule)
        if isinstance(handler, Response):
            resp = handler
            self.static[path] = resp
            self.routes[path] = lambda req: resp
        else:
            self.static.pop(path, None)
            self.routes[path] = handler

    def static_reply(self, req: Request) -> bytes | None:
        """The encoded answer to ``req`` if it is a keep-alive ``GET`` of a static route
        with no body (so the same head bytes always get these bytes back), else None."""
        resp = self.static.get(req.path)
        if (
            resp is None
            or self.draining
            or req.method != "GET"
            or not req.keep_alive
            or req.chunked
            or req.content_length
            or resp.status >= 400
            or resp.close
        ):
            return None
        head = self._head(
            resp.status,
            len(resp.body),
            resp.content_type,
            resp.headers,
            keep_alive=True,
            http10=req.version[1] == 0,
        )
        return head + resp.body

    def start(self) -> None:
        """Start listening (the reactor must run to serve).

        :raises RuntimeError: the server is closed, or was started already.
        """
        self.tcp.start()  # first: a start it refuses must not leave a Date timer behind
        self._tick()

    def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._date_timer is not None:
            self._date_timer.cancel()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self.tcp.close()
        self._remove_leftovers()

    def shutdown(self, timeout: float = 30.0, done: Callable[[], None] | None = None) -> None:
        """Stop gracefully (as nginx's graceful quit): stop accepting, close the keep-alive
        connections that wait between requests once their answers are out (a download under
        way ends whole, then a FIN), answer the requests being read with ``Connection:
        close``; past ``timeout`` seconds (inf: no bound) :meth:`close` resets what is left.
        ``done()`` is called from the loop once no connection is left, either way. A second
        call changes nothing.

        Example:
            >>> srv.shutdown(30.0, done=reactor.stop)  # doctest: +SKIP

        :raises ValueError: ``timeout`` is NaN or below 0.
        :raises TypeError: ``timeout`` is no number.
        """
        timeout = seconds("timeout", timeout, zero=True)
        if self.draining:
            return
        self.draining = True
        self.replies.clear()  # keep-alive answers (the one rule); static_reply adds none now
        self.tcp.stop_accepting()
        for conn in list(self.tcp.connections):
            protocol = conn.protocol
            if isinstance(protocol, HttpProtocol):
                protocol.drain()
        end = self.reactor.now + timeout
        self._drain_timer = self.reactor.call_soon(self._drained, end, done)

    def _drained(self, end: float, done: Callable[[], None] | None) -> None:
        """Looked at every 20 ms while :meth:`shutdown` waits: call ``done`` once the
        connections are gone, after resetting them at ``end``."""
        self._drain_timer = None
        if self.tcp.connections and self.reactor.now < end:
            self._drain_timer = self.reactor.call_later(_DRAIN_POLL, self._drained, end, done)
            return
        self.close()
        if done is not None:
            done()

    def metrics(self) -> dict[str, float]:
        """Connections, requests, bytes, errors and pool stats (see ``TcpServer.metrics``),
        and ``upload_leftovers_total``/``upload_leftovers_pending``: part names of uploads
        that could not be removed when the upload ended (a stored file is stored all the same),
        and how many of them are still there (removal is retried every second)."""
        out = self.tcp.metrics()
        out["upload_leftovers_total"] = self._leftovers_total
        out["upload_leftovers_pending"] = len(self._leftovers)
        return out

    def _tick(self) -> None:
        self._date = email.utils.formatdate(usegmt=True).encode()
        self.replies.clear()  # they carry the old Date (the one rule)
        if self._leftovers:
            self._remove_leftovers()
        self._date_timer = self.reactor.call_later(1.0, self._tick)

    # ---- HttpApp interface (called by HttpProtocol) ----
    def body_limit(self, req: Request) -> int:
        """The largest body accepted for ``req``."""
        return self.max_upload if self._is_upload(req) else self.max_body

    def begin(self, proto: HttpProtocol, req: Request) -> BodySink | None:
        """Choose where the body goes; uploads open their file here.

        :raises HttpError: the upload cannot be stored (the protocol answers and closes).
        """
        if req.path in self.routes:
            return _MemorySink(req)
        if self._is_upload(req):
            return self._open_upload(req)
        return None

    def _open_upload(self, req: Request) -> _FileSink:
        if req.method == "PUT" and req.header("content-range") is not None:
            # RFC 9110 14.5: a server without partial PUT must refuse it, or the fragment would
            # silently replace the whole file
            raise HttpError(400, "partial PUT (Content-Range) is not supported", req.method)
        try:
            final = self._resolve(req.path, for_write=True)
            # RFC 9110 13.1.1-13.1.4: evaluated before the body is asked for (no 100 Continue)
            if not _files.upload_allowed(req, _regular_file(final)):
                raise HttpError(412, "precondition failed", req.method)
            return _FileSink(final, req, self._upload_stored, self._stray_part)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                # RFC 4918 9.7.1: a PUT into a collection that does not exist is a conflict
                # the client can resolve (make the directory first), not a missing resource
                why = "parent directory does not exist" if exc.errno == errno.ENOENT else (
                    "parent is not a directory")  # fmt: skip
                raise HttpError(409, why, req.method) from exc
            status = 409 if isinstance(exc, IsADirectoryError) else _status_of(exc)
            raise HttpError(status, exc.strerror or "", req.method) from exc

    def _upload_stored(self, sink: _FileSink) -> None:
        # The protocol calls finish() for this request right after the sink's close().
        self._stored = sink

    def _stray_part(self, part: str, error: OSError) -> None:
        # The client's answer does not depend on it: the upload is in place (or was refused
        # for its name). The stray name is reported, counted and retried.
        self._leftovers.add(part)
        self._leftovers_total += 1
        self.reactor.report(error, Handled("an upload's part name is left: removal is retried "
                                           "every second", part))  # fmt: skip

    def _remove_leftovers(self) -> None:
        for part in list(self._leftovers):
            if _unlink_part(part) is None:
                self._leftovers.discard(part)

    def finish(self, proto: HttpProtocol, req: Request) -> None:
        """The request is complete: answer it."""
        if self.draining:  # answered, then closed: the server is stopping
            req.keep_alive = False
        handler = self.routes.get(req.path)
        try:
            if handler is not None:
                try:
                    resp = handler(req)
                except HttpError:
                    raise
                except Exception as exc:
                    # A bug in the route: the client gets a 500 and a graceful close (what
                    # the handler left behind is unknown), the loop's handler the exception.
                    proto.fail(500, "internal server error", req.method)
                    self.reactor.report(exc, handler)
                    return
                last = self.replies.last
                if (
                    last is not None
                    and resp is last[0]
                    and req.keep_alive
                    and req.method != "HEAD"
                    and req.version[1]  # HTTP/1.0 keep-alive answers say so: other bytes
                ):
                    proto.send(last[1])  # the same bytes again (a status under 400)
                    return
                self._send(proto, req, resp)
            elif self._is_upload(req):
                sink, self._stored = self._stored, None
                if sink is None or sink.req is not req:
                    if req.content_length is None:
                        # RFC 9110 15.5.12: neither Content-Length nor Transfer-Encoding. An
                        # empty body is then what the message says (RFC 9112 6.3), but
                        # storing it would empty the file for a client that meant to send one.
                        raise HttpError(411, "length required", req.method)
                    # Content-Length: 0: an empty file, stored now
                    sink = self._open_upload(req)
                    sink.close()
                    self._stored = None
                # RFC 9110 9.3.4: 201 only for a new resource; a replaced one has no content
                self._send(proto, req, _CREATED if sink.created else _REPLACED)
            elif self.root is not None and req.method in ("GET", "HEAD"):
                self._send_file(proto, req)
            elif self.root is not None:
                allow = "GET, HEAD, PUT, POST" if self.uploads else "GET, HEAD"
                resp = Response(405, b"method not allowed\n", headers=(("Allow", allow),))
                self._send(proto, req, resp)
            else:
                self._send(proto, req, Response(404, b"not found\n"))
        except HttpError as exc:  # the request was read whole: the connection stays usable
            self._send(proto, req, Response(exc.status, f"{exc.status} {exc}\n".encode()))

    def error_reply(self, status: int, message: str, *, with_body: bool = True) -> bytes:
        """An error response with ``Connection: close`` (no body for a ``HEAD``)."""
        body = f"{status} {message}\n".encode()
        head = self._head(status, len(body), "text/plain; charset=utf-8", (), keep_alive=False)
        return head + body if with_body else head

    # ---- responses ----
    def _head(
        self,
        status: int,
        length: int | None,
        content_type: str | None,
        headers: Any,
        *,
        keep_alive: bool,
        http10: bool = False,
    ) -> bytes:
        parts = [
            _STATUS.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(),
            b"Server: poolalloc\r\nDate: ",
            self._date,
            b"\r\n",
        ]
        if status in _NO_CONTENT:
            # RFC 9110 8.6: no Content-Length in a 204 (a MUST NOT), none in a 304 but the
            # 200's (not its own 0); no content metadata for either
            length = content_type = None
        if content_type is not None:  # a 304 carries no content metadata
            parts += (b"Content-Type: ", content_type.encode("latin-1"), b"\r\n")
        if length is not None:
            parts += (b"Content-Length: ", str(length).encode(), b"\r\n")
        for name, value in headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif http10:  # HTTP/1.0 keep-alive is opt-in: say it was granted, as nginx does
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _send(self, proto: HttpProtocol, req: Request, resp: Response) -> None:
        keep = req.keep_alive and not resp.close
        head = self._head(
            resp.status,
            len(resp.body),
            resp.content_type,
            resp.headers,
            keep_alive=keep,
            http10=req.version[1] == 0,
        )
        if req.method == "HEAD" or resp.status == 204:  # a 204 never has content
            proto.send(head, status=resp.status, close=not keep)
            return
        wire = head + resp.body
        if keep and resp.status < 400 and req.version[1]:
            self.replies.last = (resp, wire)
        proto.send(wire, status=resp.status, close=not keep)

    def _send_file(self, proto: HttpProtocol, req: Request) -> None:
        path = self._resolve(req.path, for_write=False)
        if path is None:  # a directory named without its slash: send the client to it
            # One leading slash, and no backslash a browser would read as one: a Location of
            # "//dir/" (from "GET //dir") is a network-path reference, a redirect to host "dir"
            location = "/" + req.path.lstrip("/").replace("\\", "%5C") + "/"
            location += f"?{req.query}" if req.query else ""
            resp = Response(301, b"moved permanently\n", headers=(("Location", location),))
            self._send(proto, req, resp)
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            status = _status_of(exc)
            raise HttpError(status, "not found" if status == 404 else "name too long") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HttpError(404, "not found")
            answer = _files.plan(req, st)
        except BaseException:
            os.close(fd)
            raise
        http10 = req.version[1] == 0
        headers = [
            ("Last-Modified", answer.last_modified),
            ("ETag", answer.etag),
            ("Accept-Ranges", "bytes"),
        ]
        if answer.status in (304, 412, 416):  # no file content to send
            os.close(fd)
            if answer.status == 304:  # RFC 9110 15.4.5: the validators, no content metadata
                head = self._head(
                    304, None, None, headers, keep_alive=req.keep_alive, http10=http10
                )
                body = b""
            else:
                if answer.status == 416:
                    headers.append(("Content-Range", f"bytes */{st.st_size}"))
                phrase = http.HTTPStatus(answer.status).phrase.lower()
                body = f"{answer.status} {phrase}\n".encode()
                head = self._head(
                    answer.status, len(body), _TEXT, headers,
                    keep_alive=req.keep_alive, http10=http10,
                )  # fmt: skip
            data = head if req.method == "HEAD" else head + body
            proto.send(data, status=answer.status, close=not req.keep_alive)
            return
        if answer.status == 206:
            last = answer.offset + answer.length - 1
            headers.append(("Content-Range", f"bytes {answer.offset}-{last}/{st.st_size}"))
        head = self._head(
            answer.status, answer.length, _files.content_type(path), headers,
            keep_alive=req.keep_alive, http10=http10,
        )  # fmt: skip
        if req.method == "HEAD" or answer.length == 0:
            os.close(fd)
            proto.send(head, status=answer.status, close=not req.keep_alive)
        else:
            close = not req.keep_alive
            proto.send_file(head, fd, answer.offset, answer.length, close=close)

    def _is_upload(self, req: Request) -> bool:
        # A route answers its path whatever the method: its body is read into memory, so it
        # gets max_body, never the upload limit meant for bodies streamed to a file.
        return (
            self.uploads
            and self.root is not None
            and req.method in ("PUT", "POST")
            and req.path not in self.routes
        )

    @overload
    def _resolve(self, target_path: str, *, for_write: Literal[True]) -> str: ...
    @overload
    def _resolve(self, target_path: str, *, for_write: Literal[False]) -> str | None: ...

    def _resolve(self, target_path: str, *, for_write: bool) -> str | None:
        """Map a URL path to a file under ``root``; anything escaping it is a 404. For reads,
        a directory named without its final slash gives None (the caller redirects), and a
        name with a final slash must be a directory (``/file.txt/`` is a 404)."""
        if self.root is None:
            raise HttpError(404, "not found")
        if "#" in target_path:  # RFC 9112 3.2: a request target never carries a fragment
            raise HttpError(400, "fragment in request target")
        if _BAD_ESCAPE.search(target_path):
            raise HttpError(400, "invalid percent-encoding in path")
        rel = urllib.parse.unquote(target_path).lstrip("/")
        if "\0" in rel:
            raise HttpError(400, "NUL in path")
        full = self._under_root(os.path.join(self.root, rel))
        if for_write:
            if full == self.root or rel.endswith("/"):
                raise HttpError(409, "cannot upload onto a directory")
            return full
        # "a/", "a/." and "a/.." name a directory: never a file, whatever realpath makes of them
        names_dir = rel == "" or rel.endswith("/") or os.path.basename(rel) in (".", "..")
        if os.path.isdir(full):
            # the index is a name of its own, which may be a symlink out of the root too
            return self._under_root(os.path.join(full, "index.html")) if names_dir else None
        if names_dir:
            raise HttpError(404, "not found")
        return full

    def _under_root(self, path: str) -> str:
        """``path`` with its symlinks resolved, or a 404 when that is not under ``root``."""
        assert self.root is not None
        full = os.path.realpath(path)
        if full != self.root and not full.startswith(self.root + os.sep):
            raise HttpError(404, "not found")
        return full
