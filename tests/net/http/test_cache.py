"""The HTTP server's one reply cache (``net/http/_cache.py``): what it keeps, and its one rule."""

from __future__ import annotations

from typing import Any

import pytest

from poolalloc.net.epoll.reactor import Reactor
from poolalloc.net.http import _cache
from poolalloc.net.http._cache import ReplyCache
from poolalloc.net.http.parser import HttpError, Request, parse_head
from poolalloc.net.http.server import HttpServer, Response

HEAD = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"


def _counting_parse(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []

    def parse(head: bytes, max_target: int = 8190) -> Request:
        calls.append(head)
        return parse_head(head, max_target)

    monkeypatch.setattr(_cache, "parse_head", parse)
    return calls


def test_a_head_seen_before_is_not_parsed_again_and_parses_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting_parse(monkeypatch)
    cache = ReplyCache()
    first = cache.parse(HEAD, 8190)
    again = cache.parse(HEAD, 8190)
    assert calls == [HEAD[:-4]]
    assert again is not first  # a fresh Request each time: the server may change it
    for name in ("method", "target", "version", "keep_alive", "content_length", "chunked"):
        assert getattr(again, name) == getattr(first, name), name
    assert again.headers == first.headers


def test_only_static_answers_are_kept_for_the_fast_path() -> None:
    cache = ReplyCache()
    cache.parse(HEAD, 8190, lambda req: None)
    assert cache.answer(HEAD) is None
    other = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    cache.parse(other, 8190, lambda req: b"answer for " + req.path.encode())
    assert cache.answer(other) == b"answer for /b"


def test_a_bad_head_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_parse(monkeypatch)
    cache = ReplyCache()
    bad = b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"
    for _ in range(2):
        with pytest.raises(HttpError):
            cache.parse(bad, 8190)
    assert len(calls) == 2
    assert len(cache) == 0


def test_bounded_in_entries_and_in_key_size() -> None:
    cache = ReplyCache(max_entries=8, max_key=64)
    for i in range(20):
        cache.parse(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i, 8190)
        assert len(cache) <= 8
    cache.clear()
    long_head = b"GET /" + b"x" * 80 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    cache.parse(long_head, 8190, lambda req: b"answer")
    assert len(cache) == 0
    assert cache.answer(long_head) is None


def test_clear_forgets_heads_answers_and_the_last_response() -> None:
    cache = ReplyCache()
    cache.parse(HEAD, 8190, lambda req: b"answer")
    cache.last = (object(), b"bytes")
    cache.clear()
    assert (len(cache), cache.answer(HEAD), cache.last) == (0, None, None)


def test_the_server_owns_one_cache_and_a_route_change_clears_all_of_it() -> None:
    import poolalloc

    pool = poolalloc.BufferPool(4096, capacity=4)
    with Reactor() as reactor:
        srv = HttpServer(reactor, buffer_pool=pool)
        try:
            cache: Any = srv.replies
            cache.parse(HEAD, 8190, srv.static_reply)
            cache.last = (Response(), b"encoded")
            srv.route("/other", lambda req: Response(body=b"x"))
            assert srv.replies is cache  # the same object: one cache, cleared in place
            assert (len(cache), cache.last) == (0, None)
        finally:
            srv.close()
    pool.close()
