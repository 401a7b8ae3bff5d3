"""The HTTP server's one reply cache: request heads seen before, and the bytes that answer them.

Keep-alive clients send the same head again and again, byte for byte. The same head bytes
always parse the same way, so the cache keeps, per exact head (with its blank line), the
checked fields of its :class:`~poolalloc.net.http.parser.Request` (no regex the next time) and,
when the server answers it with a static response, the encoded answer itself (no parse, no
handler: one write). It also keeps the last dynamic response the server encoded, so a handler
that returns the same immutable ``Response`` again gets the same bytes again.

One invalidation rule: :meth:`ReplyCache.clear` runs whenever what an answer is made of
changes (a route is added or replaced, the ``Date`` second changes), and when the cache is full
(``max_entries``: many distinct heads only cost a refill). Heads longer than ``max_key`` bytes
are not kept.
"""

from __future__ import annotations

from collections.abc import Callable

from poolalloc.net.http.parser import Request, parse_head

__all__ = ["ReplyCache"]

#: The checked fields of a parsed head: method, target, minor version, header block, and the
#: framing (keep_alive, content_length, chunked, expect_continue) when headers set it.
_Fields = tuple[str, str, int, bytes, tuple[bool, int | None, bool, bool] | None]


class ReplyCache:
    """Heads by their exact bytes -> parsed fields, and the static answers; see the module.

    Example:
        >>> cache = ReplyCache()
        >>> head = b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
        >>> cache.parse(head, 8190, lambda req: b"answer").path
        '/'
        >>> cache.answer(head)
        b'answer'
        >>> cache.clear(); cache.answer(head) is None
        True
    """

    __slots__ = ("_heads", "answers", "last", "max_entries", "max_key")

    def __init__(self, max_entries: int = 512, max_key: int = 1024) -> None:
        self.max_entries = max_entries
        self.max_key = max_key
        self._heads: dict[bytes, _Fields] = {}
        #: The static answers among them, by the same keys (the fast path's one lookup).
        self.answers: dict[bytes, bytes] = {}
        #: The last dynamic response encoded for keep-alive, and its bytes (see the module).
        self.last: tuple[object, bytes] | None = None

    def __len__(self) -> int:
        return len(self._heads)

    def answer(self, key: bytes) -> bytes | None:
        """The static answer remembered for the head ``key`` (with its blank line), or None."""
        return self.answers.get(key)

    def parse(
        self,
        key: bytes,
        max_target: int,
        static_reply: Callable[[Request], bytes | None] | None = None,
    ) -> Request:
        """Parse the head ``key`` (ending with its CRLF CRLF), from the cache when it was seen.

        ``static_reply(req)`` gives the bytes that always answer ``req`` (or None); it is asked
        once per new head and its answer is kept for :meth:`answer`.

        :raises HttpError: as :func:`~poolalloc.net.http.parser.parse_head`.
        """
        fields = self._heads.get(key)
        if fields is not None:
            req = Request(fields[0], fields[1], fields[2], fields[3])
            if fields[4] is not None:
                req.keep_alive, req.content_length, req.chunked, req.expect_continue = fields[4]
            return req
        req = parse_head(key[:-4], max_target)
        if len(key) <= self.max_key:
            heads = self._heads
            if len(heads) >= self.max_entries:
                self.clear()  # bounded: many distinct heads only cost a refill
            framing = None
            if req._headers is not None:  # framing headers were parsed
                framing = (req.keep_alive, req.content_length, req.chunked, req.expect_continue)
            heads[key] = (req.method, req.target, req.version[1], req._block, framing)
            wire = static_reply(req) if static_reply is not None else None
            if wire is not None:
                self.answers[key] = wire
        return req

    def clear(self) -> None:
        """Forget everything (the one invalidation rule: see the module docstring)."""
        self._heads.clear()
        self.answers.clear()
        self.last = None
