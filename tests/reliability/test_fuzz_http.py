"""Fuzzing the HTTP/1.1 request parser and the per-connection protocol.

Properties, each over inputs split into reads at random points, with random backpressure:

* valid pipelined requests (lengths, chunked bodies, extensions, trailers) parse to exactly the
  fields they were built from, in order, and no error is sent;
* each kind of bad request gets its documented status, after the valid requests before it;
* arbitrary and mutated byte streams never raise out of the protocol: at most one error is
  answered, with a documented status, and the connection is then closed;
* the outcome does not depend on where the stream is split;
* every pooled read buffer comes back.
"""

from __future__ import annotations

import pytest
from httpgen import bad_requests, valid_requests
from hypothesis import given
from hypothesis import strategies as st
from relkit import HTTP_ERROR_STATUSES, FakeApp, drive, fuzz_settings, split

from poolalloc import BufferPool
from poolalloc.net.http.parser import ChunkedReader, HttpError, parse_head

cuts = st.lists(st.integers(0, 1 << 20), max_size=24)
pauses = st.integers(0, 3)


@pytest.fixture(scope="module")
def pool() -> BufferPool:
    p = BufferPool(2048, capacity=64, name="fuzz-http")
    yield p
    assert p.outstanding() == 0
    p.close()


def outcome(app: FakeApp) -> tuple[list[tuple[str, str, bytes]], list[int]]:
    return [(r.method, r.target, r.body) for r in app.finished], app.errors


@fuzz_settings(0.5)
@given(reqs=st.lists(valid_requests(), min_size=1, max_size=5), cuts=cuts, pause=pauses)
def test_valid_pipeline_parses_exactly(pool: BufferPool, reqs, cuts, pause) -> None:
    app = FakeApp()
    drive(split(b"".join(raw for raw, _ in reqs), cuts), app, pool, pause)
    assert app.errors == []
    assert len(app.finished) == len(reqs)
    for got, (_, want) in zip(app.finished, reqs, strict=True):
        assert (got.method, got.target, got.body) == (want.method, want.target, want.body)
        assert [h for h in got.headers if h[0] not in (b"content-length", b"transfer-encoding")] \
            == list(want.headers)  # fmt: skip
    assert pool.outstanding() == 0


@fuzz_settings(0.5)
@given(
    before=st.lists(valid_requests(), max_size=3),
    bad=bad_requests,
    after=st.lists(valid_requests(), max_size=2),
    cuts=cuts,
    pause=pauses,
)
def test_bad_request_gets_its_status(pool: BufferPool, before, bad, after, cuts, pause) -> None:  # noqa: PLR0917
    raw, status = bad
    app = FakeApp()
    stream = b"".join(r for r, _ in before) + raw + b"".join(r for r, _ in after)
    drive(split(stream, cuts), app, pool, pause)
    assert len(app.finished) == len(before), "requests before the bad one are all answered"
    assert app.errors == [status]
    assert pool.outstanding() == 0


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for pos, op, byte in edits:
        i = pos % (len(out) + 1)
        if op == 0:
            out[i:i] = bytes([byte])
        elif op == 1 and i < len(out):
            out[i] = byte
        elif i < len(out):
            del out[i]
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 2), st.integers(0, 255)))
valid_stream = st.lists(valid_requests(), min_size=1, max_size=3).map(
    lambda reqs: b"".join(raw for raw, _ in reqs)
)
hostile = st.one_of(
    st.binary(max_size=3000),
    st.builds(mutate, valid_stream, edits),
    st.builds(lambda r, e: mutate(r[0], e), bad_requests, edits),
)


@fuzz_settings(1.0)
@given(data=hostile, cuts=cuts, pause=pauses)
def test_hostile_bytes_never_escape(pool: BufferPool, data: bytes, cuts, pause) -> None:
    whole = FakeApp()
    proto = drive([data], whole, pool)
    assert len(whole.errors) <= 1
    assert set(whole.errors) <= HTTP_ERROR_STATUSES
    if whole.errors:
        assert proto.errors >= 1
    pieces = FakeApp()
    drive(split(data, cuts), pieces, pool, pause)
    # Where TCP happens to cut the stream must not change what is served or refused.
    assert outcome(pieces)[0] == outcome(whole)[0]
    assert bool(pieces.errors) == bool(whole.errors)
    assert pool.outstanding() == 0


@fuzz_settings(0.5)
@given(head=st.binary(max_size=600) | valid_requests().map(lambda r: r[0].split(b"\r\n\r\n")[0]))
def test_parse_head_raises_only_http_error(head: bytes) -> None:
    try:
        req = parse_head(head, max_target=256)
    except HttpError as exc:
        status = exc.status
    else:
        status = 0
        assert req.version[0] == 1
        assert req.content_length is None or req.content_length >= 0
        assert not (req.chunked and req.content_length is not None)
    assert status == 0 or status in HTTP_ERROR_STATUSES


@fuzz_settings(0.5)
@given(
    body=st.binary(max_size=2000), sizes=st.lists(st.integers(1, 300), max_size=20), data=st.data()
)
def test_chunked_reader_reassembles_split_bodies(body: bytes, sizes, data) -> None:
    from httpgen import chunked

    encoded = data.draw(st.composite(lambda draw: chunked(draw, body))())
    reader, got, pos = ChunkedReader(max_body=len(body)), bytearray(), 0
    for piece in split(encoded, [*sizes]) if sizes else [encoded]:
        used, spans = reader.feed(piece, 0, len(piece))
        got += b"".join(piece[a:b] for a, b in spans)
        pos += used
    assert reader.done
    assert bytes(got) == body
    assert reader.received == len(body)
    assert pos == len(encoded)


@fuzz_settings(0.5)
@given(data=st.binary(max_size=2000), limit=st.integers(0, 5000))
def test_chunked_reader_refuses_only_with_http_error(data: bytes, limit: int) -> None:
    reader = ChunkedReader(max_body=limit)
    try:
        used, spans = reader.feed(data, 0, len(data))
    except HttpError as exc:
        status = exc.status
    else:
        status = 0
        assert 0 <= used <= len(data)
        assert all(0 <= a <= b <= len(data) for a, b in spans)
        assert reader.received <= limit
    assert status in (0, 400, 413)
