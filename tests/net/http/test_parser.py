"""Sans-IO HTTP parsing: heads, framing rules, chunked bodies split anywhere."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolalloc.net.http.parser import ChunkedReader, HttpError, parse_head


def test_head_fields_and_lazy_headers() -> None:
    req = parse_head(b"PUT /up/a.bin?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nX-A:  v ")
    assert (req.method, req.path, req.query, req.version) == ("PUT", "/up/a.bin", "x=1", (1, 1))
    assert req.content_length == 12
    assert req.keep_alive
    assert req.header("x-a") == "v"
    assert req.header("missing", "d") == "d"


def test_keep_alive_rules() -> None:
    assert not parse_head(b"GET / HTTP/1.0").keep_alive
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    assert not parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close").keep_alive


def test_cached_heads_parse_identically() -> None:
    head = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue"
    first, second = parse_head(head), parse_head(head)
    assert first is not second
    for r in (first, second):
        assert (r.chunked, r.expect_continue, r.content_length, r.keep_alive) == (
            True,
            True,
            None,
            True,
        )
    second.body = b"mutated"
    assert parse_head(head).body == b""  # cached fields, fresh object


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\rB: 2", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r", 400),  # bare CR ending the last line
        (b"GET / HTTP/1.1\r\nHost: h\nA: 1\r", 400),
        (b"GET / HTTP/1.1\r\nA: 1", 400),  # no Host in HTTP/1.1
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a", 400),
        (b"GET / HTTP/1.1\r\nHost: a/b", 400),
        (b"GET / HTTP/1.1\r\nHost: a b", 400),
        (b"GET a/b HTTP/1.1\r\nHost: a", 400),  # no RFC 9112 target form
        (b"GET * HTTP/1.1\r\nHost: a", 400),
        (b"GET ftp://h/x HTTP/1.1\r\nHost: a", 400),  # absolute-form: http(s) only
        (b"GET httpx://h/x HTTP/1.1\r\nHost: a", 400),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a", 400),  # not visible ASCII
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"GET / HTTP/1.1\r\n folded", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nA : 1", 400),  # space before colon
        (b"GET / HTTP/1.1\r\nA: \x00", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2", 400),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked",
            501,
        ),
        (b"GET / HTTP/3.0", 505),
        (b"GET /" + b"x" * 100 + b" HTTP/1.1", 414),
        (b"G(T / HTTP/1.1", 400),
    ],
)
def test_bad_heads(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(head, 50)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("head", "fields"),
    [
        (b"GET /a HTTP/1.1\nHost: h\nX: 1", ("GET", "/a", "/a", (1, 1))),  # bare LF
        (b"GET /a HTTP/1.1\r\nHost: h\nX: 1", ("GET", "/a", "/a", (1, 1))),  # mixed
        (b"\r\n\r\nGET /a HTTP/1.1\r\nHost: h", ("GET", "/a", "/a", (1, 1))),  # leading
        (b"GET http://h:8/t?q=1 HTTP/1.1\r\nHost: h", ("GET", "http://h:8/t?q=1", "/t", (1, 1))),
        (b"GET http://h HTTP/1.1\r\nHost: h", ("GET", "http://h", "/", (1, 1))),
        (b"GET HTTPS://h/a HTTP/1.1\r\nHost: h", ("GET", "HTTPS://h/a", "/a", (1, 1))),
        (b"OPTIONS * HTTP/1.1\r\nHost: h", ("OPTIONS", "*", "", (1, 1))),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443", ("CONNECT", "h:443", "", (1, 1))),
        (b"GET / HTTP/1.0", ("GET", "/", "/", (1, 0))),  # Host is optional in 1.0
        (b"GET / HTTP/1.1\r\nHost:", ("GET", "/", "/", (1, 1))),  # empty Host is valid
        (b"GET / HTTP/1.1\r\nHost: [::1]:80", ("GET", "/", "/", (1, 1))),
    ],
)
def test_lenient_and_other_form_heads(head: bytes, fields: tuple[object, ...]) -> None:
    req = parse_head(head)
    assert (req.method, req.target, req.path, req.version) == fields


def test_expect_continue_is_ignored_in_http10() -> None:
    head = b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue"
    assert not parse_head(head).expect_continue
    assert parse_head(head.replace(b"1.0", b"1.1") + b"\r\nHost: h").expect_continue


def test_error_names_the_method_once_known() -> None:
    with pytest.raises(HttpError) as info:
        parse_head(b"HEAD / HTTP/1.1")
    assert (info.value.status, info.value.method) == (400, "HEAD")


def test_same_content_length_twice_is_accepted() -> None:
    assert (
        parse_head(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3"
        ).content_length
        == 3
    )


BODY = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"chunked", b"x" * 300))
BODY += b"0\r\nTrailer: yes\r\n\r\n"


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=8))
def test_chunked_split_anywhere(cuts: list[int]) -> None:
    reader = ChunkedReader(max_body=10_000)
    payload = bytearray()
    bounds = [0, *sorted(cuts), len(BODY)]
    for start, end in itertools.pairwise(bounds):
        pos = start
        while pos < end and not reader.done:
            used, spans = reader.feed(BODY, pos, end)
            for a, b in spans:
                payload += BODY[a:b]
            pos += used
            if used == 0:
                break
    assert reader.done
    assert bytes(payload) == b"hello chunked" + b"x" * 300
    assert reader.received == len(payload)


def test_chunked_errors() -> None:
    with pytest.raises(HttpError, match="too large") as info:
        ChunkedReader(max_body=5).feed(b"6\r\nabcdef\r\n", 0, 11)
    assert info.value.status == 413
    with pytest.raises(HttpError, match="longer than its size"):
        ChunkedReader(max_body=50).feed(b"2\r\nabc\r\n", 0, 8)
    with pytest.raises(HttpError, match="bare LF"):
        ChunkedReader(max_body=50).feed(b"2\nab", 0, 4)


@pytest.mark.parametrize("length", [1024, 1025])
def test_the_chunk_line_limit_does_not_depend_on_where_the_line_is_split(length: int) -> None:
    """A chunk-size line of 1024 bytes is taken whole or split anywhere, one of 1025 refused
    either way: before, a read that ended with the line's CR counted the CR and refused it."""
    line = b"1;e=" + b"v" * (length - 4) + b"\r\n"
    body = line + b"a\r\n0\r\n\r\n"
    for cut in (len(body), length - 1, length, length + 1):
        reader = ChunkedReader(max_body=50)

        def feed_in_two(reader: ChunkedReader = reader, cut: int = cut) -> None:
            used, _ = reader.feed(body, 0, cut)
            reader.feed(body, used, len(body))

        if length == 1024:
            feed_in_two()
            assert reader.done, cut
        else:
            with pytest.raises(HttpError, match="chunk line too long"):
                feed_in_two()


@pytest.mark.parametrize(
    "body",
    [
        b"2;a\x00b\r\nab\r\n0\r\n\r\n",  # NUL in a chunk extension
        b"2;a=\x01\r\nab\r\n0\r\n\r\n",  # control byte in its value
        b"2;\r\nab\r\n0\r\n\r\n",  # no extension name
        b'2;a="x\r\nab\r\n0\r\n\r\n',  # unterminated quoted string
        b"2\r\nab\r\n0\r\nno colon\r\n\r\n",  # malformed trailer field
        b"2\r\nab\r\n0\r\nT: \x00\r\n\r\n",  # NUL in a trailer value
    ],
)
def test_bad_chunk_extensions_and_trailers_are_400(body: bytes) -> None:
    with pytest.raises(HttpError) as info:
        ChunkedReader(max_body=50).feed(body, 0, len(body))
    assert info.value.status == 400


def test_valid_chunk_extensions_and_endless_trailers() -> None:
    body = b'2 ;a=1; b = "q\\"x" ;c\r\nab\r\n0\r\nT: 1\r\n\r\n'
    reader = ChunkedReader(max_body=50)
    start = body.index(b"\r\nab") + 2
    assert reader.feed(body, 0, len(body)) == (len(body), [(start, start + 2)])
    assert reader.done
    line = b"T: " + b"v" * 1000 + b"\r\n"
    reader = ChunkedReader(max_body=50)
    reader.feed(b"0\r\n", 0, 3)
    for _ in range(16):  # 16 KiB of trailer fields: still accepted
        reader.feed(line, 0, len(line))
    with pytest.raises(HttpError) as info:
        reader.feed(line, 0, len(line))
    assert info.value.status == 431
