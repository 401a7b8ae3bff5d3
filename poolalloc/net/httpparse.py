"""Sans-IO HTTP/1.1 request parsing: the request head, and chunked bodies read in place.

Goals, in the order they were traded off:

1. Strict enough to be safe: anything ambiguous (two ``Content-Length`` values that differ,
   ``Content-Length`` together with ``Transfer-Encoding``, whitespace before a colon, a bare
   LF, a chunk size with junk) is a :class:`HttpError` carrying the status to answer with,
   as h11's ``error_status_hint`` does. The server answers and closes; it never guesses.
2. No copy of body bytes: :class:`ChunkedReader` walks a pooled buffer and returns
   ``(start, end)`` spans of payload inside it, so bodies go from the lease to their sink.
3. Cheap for the common request: the head is parsed from one ``bytes`` slice with ``split``;
   header names are lower-cased once.

Nothing here does IO or knows about sockets, so it is tested with plain bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["ChunkedReader", "HttpError", "Request", "parse_head"]

#: RFC 9110 token characters, for methods and header names.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?")
_FORBIDDEN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HttpError(Exception):
    """A request the server must refuse; ``status`` is the response code to send.

    Example:
        >>> HttpError(431, "headers too large").status
        431
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    """One parsed request head. ``headers`` keeps order and repeats, names lower-case.

    Example:
        >>> r = parse_head(b"GET /a?b=1 HTTP/1.1\\r\\nHost: x")
        >>> r.method, r.path, r.query, r.keep_alive
        ('GET', '/a', 'b=1', True)
    """

    method: str
    target: str
    version: tuple[int, int]
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool = True
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    body: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string ('' when absent)."""
        return self.target.partition("?")[2]

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as Latin-1."""
        key = name.lower().encode("ascii")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return default


def parse_head(head: bytes, *, max_target: int = 8190) -> Request:
    """Parse a request head: the bytes before the blank line, without the final CRLF CRLF.

    Example:
        >>> parse_head(b"POST /u HTTP/1.1\\r\\nContent-Length: 5").content_length
        5

    :raises HttpError: 400 malformed, 414 target too long, 505 not HTTP/1.x.
    """
    lines = head.split(b"\r\n")
    request_line = lines[0]
    if not request_line and len(lines) > 1:
        lines.pop(0)  # RFC 9112 2.2: ignore one empty line before the request line
        request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        if len(parts) == 2 and len(parts[1]) > max_target:
            raise HttpError(414, "request target too long")
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if len(target) > max_target:
        raise HttpError(414, "request target too long")
    if not _TOKEN.fullmatch(method) or not target or b"\n" in head.replace(b"\r\n", b""):
        raise HttpError(400, "malformed request line")
    v = _VERSION.fullmatch(version)
    if v is None:
        raise HttpError(400, "malformed HTTP version")
    if v.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.x is supported")
    req = Request(
        method.decode("ascii"), target.decode("latin-1"), (1, int(v.group(2))), _headers(lines)
    )
    _apply_framing(req)
    return req


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header line")
        value = value.strip(b" \t")
        if _FORBIDDEN_VALUE.search(value):
            raise HttpError(400, "control character in header value")
        headers.append((name.lower(), value))
    return headers


def _apply_framing(req: Request) -> None:
    """Derive keep-alive, Content-Length and chunked from the headers (RFC 9112 6)."""
    connection = b""
    lengths: set[bytes] = set()
    for name, value in req.headers:
        if name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            if value.lower() != b"chunked" or req.chunked:
                raise HttpError(501, "unsupported transfer coding")
            req.chunked = True
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"expect" and value.lower() == b"100-continue":
            req.expect_continue = True
    tokens = {t.strip() for t in connection.split(b",")}
    req.keep_alive = b"close" not in tokens and (req.version >= (1, 1) or b"keep-alive" in tokens)
    if lengths:
        if req.chunked or len(lengths) != 1:
            raise HttpError(400, "conflicting body framing")
        (text,) = lengths
        if not text.isdigit() or len(text) > 18:
            raise HttpError(400, "bad Content-Length")
        req.content_length = int(text)


class ChunkedReader:
    """Incremental decoder of a chunked body over caller-owned buffers.

    ``feed(data, start, end)`` consumes bytes of ``data[start:end]`` and returns
    ``(consumed, spans)``: payload spans as ``(start, end)`` offsets into ``data``. Bytes of
    chunk-size lines split across feeds are kept (at most 1 KiB); payload is never copied.
    ``done`` turns True after the last chunk and its trailer.

    Example:
        >>> r = ChunkedReader(max_body=100)
        >>> r.feed(b"3\\r\\nabc\\r\\n0\\r\\n\\r\\n", 0, 15)
        (15, [(3, 6)])
        >>> r.done, r.received
        (True, 3)
    """

    __slots__ = ("_line", "_state", "_want", "done", "max_body", "received")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, *, max_body: int) -> None:
        self.max_body = max_body
        self.received = 0
        self.done = False
        self._state = self._SIZE
        self._want = 0
        self._line = b""

    def feed(
        self, data: bytes | memoryview, start: int, end: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """Consume from ``data[start:end]``; see the class docstring.

        :raises HttpError: 400 on a malformed chunk, 413 past ``max_body``.
        """
        spans: list[tuple[int, int]] = []
        pos = start
        while pos < end and not self.done:
            if self._state == self._DATA:
                take = min(self._want, end - pos)
                spans.append((pos, pos + take))
                pos += take
                self._want -= take
                if self._want == 0:
                    self._state = self._DATA_END
                continue
            line, pos = self._take_line(data, pos, end)
            if line is None:
                break
            self._on_line(line)
        return pos - start, spans

    def _take_line(self, data: bytes | memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
        chunk = bytes(data[pos : min(end, pos + 1026 - len(self._line))])
        nl = chunk.find(b"\n")
        if nl < 0:
            self._line += chunk
            if len(self._line) > 1024:
                raise HttpError(400, "chunk line too long")
            return None, pos + len(chunk)
        line = self._line + chunk[: nl + 1]
        self._line = b""
        if not line.endswith(b"\r\n"):
            raise HttpError(400, "bare LF in chunked body")
        return line[:-2], pos + nl + 1

    def _on_line(self, line: bytes) -> None:
        if self._state == self._DATA_END:
            if line:
                raise HttpError(400, "chunk data longer than its size")
            self._state = self._SIZE
        elif self._state == self._SIZE:
            m = _CHUNK_SIZE.fullmatch(line)
            if m is None:
                raise HttpError(400, "bad chunk size")
            size = int(m.group(1), 16)
            self.received += size
            if self.received > self.max_body:
                raise HttpError(413, "request body too large")
            self._want = size
            self._state = self._DATA if size else self._TRAILER
        elif not line:  # the blank line that ends the trailer section
            self.done = True
