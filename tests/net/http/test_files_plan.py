"""The static-file answer planner (net/http/_files.py) against any header text and any size."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolalloc.net.http._files import content_type, etag, plan
from poolalloc.net.http.parser import Request, parse_head


def stat_of(size: int, mtime: int = 1_700_000_000) -> os.stat_result:
    return os.stat_result(
        (0o100644, 42, 0, 1, 0, 0, size, mtime, mtime, mtime), {"st_mtime_ns": mtime * 10**9}
    )


def request(**headers: str) -> Request:
    lines = [b"GET /f HTTP/1.1", b"Host: x"]
    lines += [f"{k.replace('_', '-')}: {v}".encode("latin-1") for k, v in headers.items()]
    return parse_head(b"\r\n".join(lines))


# Header values: printable Latin-1 without CR/LF (what a parsed head can hold).
text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"))


@given(
    size=st.integers(0, 1 << 45),
    rng=st.one_of(text, st.from_regex(r"bytes=[0-9]{0,30}-[0-9]{0,30}", fullmatch=True)),
    inm=text,
    ims=text,
    if_range=text,
)
def test_any_headers_give_a_valid_answer(
    size: int, rng: str, inm: str, ims: str, if_range: str
) -> None:
    a = plan(request(Range=rng, If_None_Match=inm, If_Modified_Since=ims, If_Range=if_range),
             stat_of(size))  # fmt: skip
    assert a.status in (200, 206, 304, 412, 416)
    if a.status == 206:
        assert a.length >= 1
        assert a.offset >= 0
        assert a.offset + a.length <= size
    elif a.status == 200:
        assert (a.offset, a.length) == (0, size)


@given(size=st.integers(0, 10**12), first=st.integers(0, 10**13), span=st.integers(0, 10**12))
def test_a_valid_range_is_served_as_the_rfc_says(size: int, first: int, span: int) -> None:
    last = first + span
    a = plan(request(Range=f"bytes={first}-{last}"), stat_of(size))
    if first >= size:
        assert a.status == 416
    else:
        assert (a.status, a.offset, a.length) == (206, first, min(last, size - 1) - first + 1)


@given(size=st.integers(0, 10**12), n=st.integers(0, 10**13))
def test_a_suffix_range_is_the_last_n_bytes(size: int, n: int) -> None:
    a = plan(request(Range=f"bytes=-{n}"), stat_of(size))
    if n == 0 or size == 0:
        assert a.status == 416
    else:
        assert (a.status, a.offset, a.length) == (206, size - min(n, size), min(n, size))


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("bytes=0-5", (206, 0, 6)),
        ("BYTES=0-5", (206, 0, 6)),  # a range unit is case-insensitive (RFC 9110 14.1)
        ("Bytes=-3", (206, 97, 3)),
        # RFC 9110 5.6.1.2: a recipient skips empty list elements, and whitespace may stand
        # around the commas
        ("bytes=1-2,", (206, 1, 2)),
        ("bytes=,1-2", (206, 1, 2)),
        ("bytes=, ,\t1-2 ,", (206, 1, 2)),
        # whitespace around "=" is not in ranges-specifier = range-unit "=" range-set
        ("bytes = 0-5", (200, 0, 100)),
        ("bytes =0-5", (200, 0, 100)),
        ("bytes= 0-5", (200, 0, 100)),
        ("bytes\t=0-5", (200, 0, 100)),
        ("bytes=\t0-5", (200, 0, 100)),
        ("BYTES = 2-3", (200, 0, 100)),
        # not a range-spec: ignored, the whole file
        ("bytes=5", (200, 0, 100)),
        ("bytes=-", (200, 0, 100)),
        ("bytes=", (200, 0, 100)),
        ("bytes=,", (200, 0, 100)),
        ("bytes", (200, 0, 100)),
        ("bytes=1 -2", (200, 0, 100)),
        ("bytes=1- 2", (200, 0, 100)),
        ("bytes=0-5=", (200, 0, 100)),
        ("bytes=0-1,5-6", (200, 0, 100)),  # several ranges: the whole file
    ],
)
def test_a_range_outside_the_rfc_grammar_is_ignored(value: str, want: tuple[int, ...]) -> None:
    a = plan(request(Range=value), stat_of(100))
    assert (a.status, a.offset, a.length) == want


def test_huge_positions_are_beyond_the_file() -> None:
    st_ = stat_of(100)
    assert plan(request(Range="bytes=" + "9" * 5000 + "-"), st_).status == 416
    a = plan(request(Range="bytes=10-" + "9" * 5000), st_)
    assert (a.status, a.offset, a.length) == (206, 10, 90)
    a = plan(request(Range="bytes=-" + "9" * 5000), st_)
    assert (a.status, a.offset, a.length) == (206, 0, 100)
    assert plan(request(If_Modified_Since="Mon, 01 Jan 99999 00:00:00 GMT"), st_).status == 200


def test_etag_and_types() -> None:
    assert etag(stat_of(255)) == f'"2a-ff-{1_700_000_000 * 10**9:x}"'
    assert content_type("a.tar.gz") == "application/gzip"
    assert content_type("a.txt.bz2") == "application/x-bzip2"
    assert content_type("a.json.xz") == "application/x-xz"
    assert content_type("noext") == "application/octet-stream"
    assert content_type("page.html") == "text/html"
