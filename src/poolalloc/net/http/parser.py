"""Sans-IO HTTP/1.1 request parsing: the request head, and chunked bodies read in place.

Goals, in the order they were traded off:

1. Strict enough to be safe: anything ambiguous (two ``Content-Length`` values that differ,
   ``Content-Length`` together with ``Transfer-Encoding``, whitespace before a colon, a bare
   CR, obs-fold, a missing or repeated ``Host``, a chunk size with junk) is a
   :class:`HttpError` carrying the status to answer with, as h11's ``error_status_hint`` does.
   The server answers and closes; it never guesses. Where RFC 9112 lets a recipient be
   lenient, the choice follows nginx or h11; ``docs/http.md`` lists every case.
2. No copy of body bytes: :class:`ChunkedReader` walks a pooled buffer and returns
   ``(start, end)`` spans of payload inside it, so bodies go from the lease to their sink.
3. Cheap for the common request: the head is parsed from one ``bytes`` slice with one regex
   match; header names are lower-cased once. Nothing is remembered here: the server's reply
   cache (``_cache.ReplyCache``) keeps heads seen before, so a repeated one is not parsed again.

Nothing here does IO or knows about sockets, so it is tested with plain bytes.
"""

from __future__ import annotations

import re

__all__ = [
    "BLANK_LINE",
    "ChunkedReader",
    "HttpError",
    "Request",
    "line_end",
    "parse_head",
    "valid_field",
]

#: RFC 9110 token characters, for methods and header names.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: The whole request line in one C-level match: method, target (visible ASCII, as h11 and
#: RFC 3986 allow), version.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
#: Every header line at once: CRLF, a token, a colon, a value without control characters
#: (so no bare CR or LF, no NUL, and no obs-fold continuation line, which starts with space).
_HEADER_BLOCK = re.compile(rb"(?:\r\n" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*)*")
#: A whole valid head in one match (the common case costs one C call).
_HEAD = re.compile(_REQUEST_LINE.pattern + rb"(" + _HEADER_BLOCK.pattern + rb")")
#: Headers that change how the request is framed or kept alive: only these need parsing.
_FRAMING = re.compile(rb"\r\n(?:content-length|transfer-encoding|connection|expect):", re.I)
#: Every Host value at once (values hold no CR, the head pattern made sure of that).
_HOST_FIELD = re.compile(rb"\r\nhost:[ \t]*([^\r]*)", re.I)
#: RFC 9112 7.1: chunk-size, then chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
_CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*'
)
#: A trailer field line (RFC 9112 7.1.2): the same syntax as a header line.
_FIELD_LINE = re.compile(_TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*")
#: RFC 9112 3.2 / RFC 3986 3.2.2: Host = uri-host [ ":" port ]; uri-host is an IP literal in
#: brackets or a reg-name (unreserved, pct-encoded, sub-delims), possibly empty.
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
#: RFC 9112 3.2.2 absolute-form: scheme "://" authority [path-abempty] ["?" query].
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://[^/?#]*")
#: The schemes of the URIs an origin server serves (RFC 9110 4.2; a scheme is case-insensitive).
_SERVED_SCHEMES = frozenset({"http", "https"})
#: Trailer sections bigger than this are refused (431), so a peer cannot stream them forever.
_MAX_TRAILER = 16384
#: The blank line that ends a head, its lines ending in CRLF or a bare LF (RFC 9112 2.2): the
#: head ends where the line of the match's first LF does (:func:`line_end`), what follows it at
#: the match's end.
BLANK_LINE = re.compile(rb"\n\r?\n")
_FIELD_NAME = re.compile(_TOKEN)
#: A control byte other than HTAB (the head pattern refuses the same in a request), or
#: whitespace at either end.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\A[ \t]|[ \t]\Z")


def line_end(buf: bytes | bytearray | memoryview, lf: int) -> int:
    """Where the line whose LF is at ``lf`` ends: before its CR, if one precedes the LF (only
    one: any other CR is a bare CR, which the parser refuses).

    Example:
        >>> head = b"GET / HTTP/1.1\\r\\nHost: h\\r\\n\\r\\nnext"
        >>> m = BLANK_LINE.search(head)
        >>> head[: line_end(head, m.start())], head[m.end() :]
        (b'GET / HTTP/1.1\\r\\nHost: h', b'next')
    """
    return lf - 1 if lf > 0 and buf[lf - 1] == 13 else lf


def valid_field(name: bytes, value: bytes) -> bool:
    """Whether ``name: value`` is a header line a head may carry: a token for the name (RFC
    9110 5.1), no control byte but HTAB in the value (5.5: a CR or LF would start another
    line; VT and FF end one for some readers) and no whitespace at either end of it.

    Example:
        >>> valid_field(b"x-a", b"1"), valid_field(b"x-a", b"1\\r\\nSet-Cookie: a=1")
        (True, False)
    """
    return _FIELD_NAME.fullmatch(name) is not None and _BAD_VALUE.search(value) is None


class HttpError(Exception):
    """A request the server must refuse; ``status`` is the response code to send.

    Example:
        >>> HttpError(431, "headers too large").status
        431
    """

    def __init__(self, status: int, message: str, method: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: The request's method when it was read before the error (a ``HEAD`` is answered
        #: without a body), else None.
        self.method = method


class Request:
    """One parsed request head. ``headers`` keeps order and repeats, names lower-case.

    The header list is built on first use: the server itself needs only the framing
    headers, which it finds with a substring test on the lower-cased block.

    Example:
        >>> r = parse_head(b"GET /a?b=1 HTTP/1.1\\r\\nHost: x")
        >>> r.method, r.path, r.query, r.keep_alive, r.headers
        ('GET', '/a', 'b=1', True, [(b'host', b'x')])
    """

    __slots__ = (
        "_block",
        "_headers",
        "body",
        "chunked",
        "content_length",
        "expect_continue",
        "keep_alive",
        "method",
        "target",
        "version",
    )

    def __init__(self, method: str, target: str, minor: int, block: bytes) -> None:
        self.method = method
        self.target = target
        self.version = (1, minor)
        self.keep_alive = minor >= 1
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.body = b""
        self._block = block
        self._headers: list[tuple[bytes, bytes]] | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """``(name, value)`` pairs in order, names lower-cased, values stripped."""
        if self._headers is None:
            pairs = []
            for line in self._block.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                pairs.append((name.lower(), value.strip(b" \t")))
            self._headers = pairs
        return self._headers

    @property
    def path(self) -> str:
        """The target's path without its query string (``/p`` for ``http://h/p?q``)."""
        target = self.target
        if target[:1] != "/":
            target = _origin_form(target)
        return target.partition("?")[0]

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


def parse_head(head: bytes, max_target: int = 8190) -> Request:
    """Parse a request head: the bytes before the blank line, without the final CRLF CRLF.

    Example:
        >>> parse_head(b"POST /u HTTP/1.1\\r\\nHost: h\\r\\nContent-Length: 5").content_length
        5

    :raises HttpError: 400 malformed (including a missing, repeated or invalid ``Host``),
        414 target too long, 501 unsupported transfer coding, 505 not HTTP/1.x.
    """
    return _parse(head, max_target)


def _origin_form(target: str) -> str:
    """The path and query of an absolute-form target ("*" and authority-form give "")."""
    m = _ABSOLUTE.match(target)
    if m is None:
        return ""
    rest = target[m.end() :]
    return rest if rest[:1] == "/" else "/" + rest


def _parse(head: bytes, max_target: int) -> Request:
    m = _HEAD.fullmatch(head)
    if m is None:
        # Only heads that missed the strict pattern pay for the lenient cases of RFC 9112 2.2:
        # empty lines before the request line are skipped (as nginx does), and a bare LF is a
        # line end (as nginx and h11 take it); a bare CR stays an error.
        if head[:1] in (b"\r", b"\n"):
            head = head.lstrip(b"\r\n")
        if b"\n" in head:
            lf = head.replace(b"\r\n", b"\n")
            if b"\r" not in lf:
                head = lf.replace(b"\n", b"\r\n")
        m = _HEAD.fullmatch(head)
    if m is None:
        raise _head_error(head, max_target)
    method_b, target_b, major, minor, block = m.groups()
    method = method_b.decode("ascii")
    if len(target_b) > max_target:
        raise HttpError(414, "request target too long", method)
    if major != b"1":
        raise HttpError(505, "only HTTP/1.x is supported", method)
    target = target_b.decode("ascii")
    if target[0] != "/" and not _other_form_ok(method, target):
        raise HttpError(400, "malformed request target", method)
    req = Request(method, target, minor[0] - 48, block)
    # RFC 9112 3.2: one Host, valid, and present in HTTP/1.1 (one C-level scan of the block).
    hosts = _HOST_FIELD.findall(block) if block else []
    if len(hosts) > 1 or (hosts and _HOST.fullmatch(hosts[0].rstrip(b" \t")) is None):
        raise HttpError(400, "bad or repeated Host", method)
    if not hosts and req.version[1]:
        raise HttpError(400, "HTTP/1.1 request without Host", method)
    if block and _FRAMING.search(block) is not None:
        _apply_framing(req)
    return req


def _other_form_ok(method: str, target: str) -> bool:
    """RFC 9112 3.2: asterisk-form for OPTIONS, authority-form for CONNECT, absolute-form."""
    if target == "*":
        return method == "OPTIONS"
    if method == "CONNECT":
        return _HOST.fullmatch(target.encode("ascii")) is not None and ":" in target
    m = _ABSOLUTE.match(target)
    if m is not None and m.group(1).lower() not in _SERVED_SCHEMES:
        # RFC 9112 3.2.2: absolute-form is what a proxy is sent; an origin server must take it
        # for its own (http, https) URIs. Another scheme names no resource here: serving its
        # path would answer for a URI that is not this server's.
        raise HttpError(400, "absolute-form target of a scheme other than http(s)", method)
    return m is not None


def _head_error(head: bytes, max_target: int) -> HttpError:
    """Say precisely what is wrong with a head the one-match pattern refused."""
    eol = head.find(b"\r\n")
    line, block = (head, b"") if eol < 0 else (head[:eol], head[eol:])
    m = _REQUEST_LINE.fullmatch(line)
    if m and not _HEADER_BLOCK.fullmatch(block):
        return HttpError(400, "malformed header line", m.group(1).decode("ascii"))
    parts = line.split(b" ")
    if len(parts) >= 2 and len(parts[1]) > max_target:
        return HttpError(414, "request target too long")
    if len(parts) == 3 and re.fullmatch(rb"HTTP/\d\.\d", parts[2]) and parts[2][5:6] != b"1":
        return HttpError(505, "only HTTP/1.x is supported")
    return HttpError(400, "malformed request line")


def _apply_framing(req: Request) -> None:
    """Derive keep-alive, Content-Length and chunked from the headers (RFC 9112 6)."""
    connection = b""
    lengths: set[bytes] = set()
    method = req.method
    http11 = req.version[1] >= 1
    for name, value in req.headers:
        if name == b"content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        elif name == b"transfer-encoding":
            if not http11:
                # RFC 9112 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding
                # cannot be trusted; refused as nginx does.
                raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request", method)
            if value.lower() != b"chunked" or req.chunked:
                raise HttpError(501, "unsupported transfer coding", method)
            req.chunked = True
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"expect" and value.lower() == b"100-continue":
            # RFC 9110 10.1.1: an HTTP/1.0 client does not understand 100 Continue.
            req.expect_continue = http11
    if connection:
        tokens = {t.strip(b" \t") for t in connection.split(b",")}
        if b"close" in tokens:
            req.keep_alive = False
        elif b"keep-alive" in tokens:
            req.keep_alive = True
    if lengths:
        if req.chunked or len(lengths) != 1:
            raise HttpError(400, "conflicting body framing", method)
        (text,) = lengths
        if not text.isdigit() or len(text) > 18:
            raise HttpError(400, "bad Content-Length", method)
        req.content_length = int(text)


class ChunkedReader:
    """Incremental decoder of a chunked body over caller-owned buffers.

    ``feed(data, start, end)`` consumes bytes of ``data[start:end]`` and returns
    ``(consumed, spans)``: payload spans as ``(start, end)`` offsets into ``data``. Bytes of
    chunk-size lines split across feeds are kept (at most 1 KiB); payload is never copied.
    ``done`` turns True after the last chunk and its trailer.

    Example:
        >>> r = ChunkedReader(max_body=100)
        >>> r.feed(b"3\\r\\nabc\\r\\n0\\r\\n\\r\\n", 0, 13)
        (13, [(3, 6)])
        >>> r.done, r.received
        (True, 3)
    """

    __slots__ = ("_line", "_state", "_trailer", "_want", "done", "max_body", "received")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, *, max_body: int) -> None:
        self.max_body = max_body
        self.received = 0
        self.done = False
        self._state = self._SIZE
        self._want = 0
        self._line = b""
        self._trailer = 0

    def feed(
        self, data: bytes | memoryview, start: int, end: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """Consume from ``data[start:end]``; see the class docstring.

        :raises HttpError: 400 on a malformed chunk or trailer field, 413 past ``max_body``,
            431 for a trailer section over 16 KiB.
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
            # a CR that ends the read may be the line's own end: not counted, as it is not
            # when its LF comes in the same read (else the answer hung on where TCP split it)
            if len(self._line) - self._line.endswith(b"\r") > 1024:
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
        else:  # a trailer field: checked as a header line would be, then dropped
            self._trailer += len(line) + 2
            if self._trailer > _MAX_TRAILER:
                raise HttpError(431, "trailer section too large")
            if _FIELD_LINE.fullmatch(line) is None:
                raise HttpError(400, "malformed trailer field")
