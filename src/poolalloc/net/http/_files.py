"""What a static file's answer is: validators, conditional requests and byte ranges.

Pure functions of the request and the file's ``fstat``, so the server decides everything
before it writes a byte (the body then goes out by ``sendfile``/splice from the chosen offset).

* Validators: ``Last-Modified`` (the mtime, whole seconds) and a strong ``ETag`` made of the
  inode, size and ``st_mtime_ns`` (any change of content through a write changes one of them).
* Preconditions in the order of RFC 9110 13.2.2: ``If-Match`` (else ``If-Unmodified-Since``)
  failing gives 412; ``If-None-Match`` (else ``If-Modified-Since``, GET/HEAD only) matching
  gives 304. ``If-None-Match`` takes precedence: ``If-Modified-Since`` is then ignored.
* Ranges (RFC 9110 14): only for ``GET``, one range of unit ``bytes`` (``a-b``, ``a-``,
  ``-n``) gives 206; a range starting past the end gives 416 with ``Content-Range: bytes
  */size``. Several ranges get the whole file (200), which RFC 9110 14.2 permits; a
  ``Range`` outside the grammar of RFC 9110 14.1 (``bytes = 0-5``, ``bytes=5``) is ignored,
  as is one whose ``If-Range`` validator does not match the file (the whole file, 200,
  replaces a stale partial copy).

Example:
    >>> import os
    >>> from poolalloc.net.http.parser import parse_head
    >>> st = os.stat_result((0o100644, 7, 0, 1, 0, 0, 1000, 0, 0, 0), {"st_mtime_ns": 0})
    >>> a = plan(parse_head(b"GET /f HTTP/1.1\\r\\nHost: x\\r\\nRange: bytes=-100"), st)
    >>> a.status, a.offset, a.length
    (206, 900, 100)
"""

from __future__ import annotations

import datetime
import email.utils
import mimetypes
import os
import re
from typing import NamedTuple

from poolalloc.net.http.parser import Request

__all__ = ["Answer", "content_type", "create_only", "etag", "plan", "upload_allowed"]

#: RFC 9110 14.1.2: int-range (first-pos "-" [ last-pos ]) or suffix-range ("-" suffix-length).
_RANGE = re.compile(r"(\d*)-(\d*)", re.ASCII)
#: RFC 9110 5.6.1: the comma between list elements, with optional whitespace around it.
_LIST_COMMA = re.compile(r"[ \t]*,[ \t]*")

#: A compressed file is served as what it is, never as its content with a Content-Encoding
#: (``x.txt.gz`` is a gzip file to the client, which saves it as such).
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


class Answer(NamedTuple):
    """The status and the part of the file to send, with the file's validators."""

    status: int
    offset: int
    length: int
    etag: str
    last_modified: str


def etag(st: os.stat_result) -> str:
    """A strong entity tag for the file: inode, size and modification time in nanoseconds.

    Example:
        >>> etag(os.stat_result((0o100644, 7, 0, 1, 0, 0, 10, 0, 0, 0), {"st_mtime_ns": 0}))
        '"7-a-0"'
    """
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def content_type(path: str) -> str:
    """The ``Content-Type`` for a file name; compressed files are their archive type.

    Example:
        >>> content_type("notes.txt.gz"), content_type("a.html")
        ('application/gzip', 'text/html')
    """
    mime, encoding = mimetypes.guess_type(path, strict=False)
    if encoding is not None:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return mime or "application/octet-stream"


def plan(req: Request, st: os.stat_result) -> Answer:
    """Decide the answer to a ``GET``/``HEAD`` of a regular file with status ``st``.

    Example:
        >>> from poolalloc.net.http.parser import parse_head
        >>> st = os.stat_result((0o100644, 7, 0, 1, 0, 0, 10, 0, 0, 0), {"st_mtime_ns": 0})
        >>> plan(parse_head(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nIf-None-Match: "7-a-0"'), st).status
        304
    """
    size = st.st_size
    tag = etag(st)
    modified = int(st.st_mtime)
    last_modified = email.utils.formatdate(modified, usegmt=True)

    def answer(status: int, offset: int = 0, length: int = size) -> Answer:
        return Answer(status, offset, length, tag, last_modified)

    if_match = _field(req, "if-match")
    if if_match is not None:
        if not _tag_matches(if_match, tag, weak=False):
            return answer(412, 0, 0)
    else:
        since = _date(_field(req, "if-unmodified-since"))
        if since is not None and modified > since:
            return answer(412, 0, 0)
    if_none_match = _field(req, "if-none-match")
    if if_none_match is not None:
        if _tag_matches(if_none_match, tag, weak=True):
            return answer(304, 0, 0)
    else:
        since = _date(_field(req, "if-modified-since"))
        if since is not None and modified <= since:
            return answer(304, 0, 0)
    ranges = _field(req, "range")
    if req.method != "GET" or ranges is None or not _if_range_holds(req, tag, modified):
        return answer(200)
    # RFC 9110 14.1: ranges-specifier = range-unit "=" range-set, with no whitespace around
    # the "=" (a unit is case-insensitive); range-set = 1#range-spec, whose list rule puts
    # optional whitespace around the commas only and lets a recipient skip empty elements.
    unit, equals, spec = ranges.partition("=")
    specs = [s for s in _LIST_COMMA.split(spec) if s]
    if not equals or unit.lower() != "bytes" or len(specs) != 1:
        return answer(200)  # another unit, not a ranges-specifier, or several: the whole file
    m = _RANGE.fullmatch(specs[0])
    if m is None or m.group(1) == m.group(2) == "":
        return answer(200)  # not a range: ignored
    first, last = m.group(1), m.group(2)
    if first == "":  # the last n bytes
        n = _count(last)
        if n == 0 or size == 0:
            return answer(416, 0, 0)
        start = max(0, size - n)
        return answer(206, start, size - start)
    start = _count(first)
    if last != "" and _count(last) < start:
        return answer(200)  # invalid: ignored
    if start >= size:
        return answer(416, 0, 0)
    end = size - 1 if last == "" else min(_count(last), size - 1)
    return answer(206, start, end - start + 1)


def upload_allowed(req: Request, st: os.stat_result | None) -> bool:
    """RFC 9110 13.2.2 for an upload that would replace the regular file with status ``st``
    (None: there is none): False (412) when ``If-Match`` (else ``If-Unmodified-Since``) or
    ``If-None-Match`` fails. ``If-None-Match: *`` is how a client says "create, never replace";
    ``If-Match`` is how it says "replace only the version I have" (no lost update).

    Example:
        >>> from poolalloc.net.http.parser import parse_head
        >>> st = os.stat_result((0o100644, 7, 0, 1, 0, 0, 10, 0, 0, 0), {"st_mtime_ns": 0})
        >>> req = parse_head(b"PUT /f HTTP/1.1\\r\\nHost: x\\r\\nIf-None-Match: *")
        >>> upload_allowed(req, st), upload_allowed(req, None)
        (False, True)
    """
    if_match = _field(req, "if-match")
    if if_match is not None:
        if st is None or not _tag_matches(if_match, etag(st), weak=False):
            return False  # "*" too: it asks for a current file
    elif st is not None:
        since = _date(_field(req, "if-unmodified-since"))
        if since is not None and int(st.st_mtime) > since:
            return False
    if_none_match = _field(req, "if-none-match")
    return not (
        if_none_match is not None
        and st is not None
        and _tag_matches(if_none_match, etag(st), weak=True)
    )


def create_only(req: Request) -> bool:
    """Does ``If-None-Match`` hold ``*``? The upload must then create its name, never replace
    a file that appeared while its body was read.

    Example:
        >>> from poolalloc.net.http.parser import parse_head
        >>> create_only(parse_head(b"PUT /f HTTP/1.1\\r\\nHost: x\\r\\nIf-None-Match: *"))
        True
    """
    value = _field(req, "if-none-match")
    return value is not None and any(item.strip() == "*" for item in value.split(","))


def _count(digits: str) -> int:
    """A byte position; beyond any file when it has more digits than int64 (no slow
    conversion of a long string, and ``int()`` refuses over 4300 digits)."""
    return int(digits) if len(digits) <= 18 else 1 << 63


def _field(req: Request, name: str) -> str | None:
    """Every line of a header joined as one list value (RFC 9110 5.3), or None."""
    key = name.encode("ascii")
    values = [v.decode("latin-1") for k, v in req.headers if k == key]
    return ", ".join(values) if values else None


def _tag_matches(field: str, tag: str, *, weak: bool) -> bool:
    """Does the list in ``field`` name ``tag`` (or ``*``)? Weak comparison ignores ``W/``."""
    for raw in field.split(","):
        item = raw.strip()
        if item == "*":
            return True
        if item.startswith("W/"):
            if not weak:
                continue
            item = item[2:]
        if item == tag:
            return True
    return False


def _date(value: str | None) -> int | None:
    """An HTTP-date as a POSIX timestamp; None when absent or not a date (then ignored)."""
    if value is None or "," in value.partition(",")[2]:  # a date has one comma at most
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def _if_range_holds(req: Request, tag: str, modified: int) -> bool:
    """RFC 9110 13.1.5: a strong entity tag or the exact ``Last-Modified`` date."""
    value = _field(req, "if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == tag  # a weak tag never matches
    return _date(value) == modified
