"""Differential test: our request parsing against h11, an independent HTTP/1.1 implementation.

Generated requests (valid, near-valid and hostile: methods, targets, versions, header bytes,
obs-fold, Host, duplicate Content-Length, CL+TE, chunked bodies with extensions and trailers,
bare LF/CR, leading empty lines, oversized lines), each maybe followed by one valid request,
go through the real :class:`~poolalloc.net.http.protocol.HttpProtocol` (relkit.drive, over
pooled leases, the path the server uses) and through ``h11.Connection``. Both must agree on what
is served (method, target, headers, body, in order) and on whether an error ends the stream.

Where they may differ, the difference is one of ``DIFFERENCES`` below: each is a row of the
table in docs/http.md, with a predicate saying which inputs it covers and which side accepts.
A disagreement no row explains fails the test, so an undocumented difference cannot pass.
The corpus (corpus/http/*.http) replays through the same comparison.

``PA_FUZZ_EXAMPLES`` scales the number of generated requests (default: a few seconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from relkit import CORPUS, FakeApp, drive, fuzz_settings

from poolalloc import BufferPool

MAX_HEAD = 16384  # our HttpServer's default, and h11's max_incomplete_event_size
Served = tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...], bytes]
_FRAMING_NAMES = (b"content-length", b"transfer-encoding")


# ---- the two implementations, reduced to (served requests, error?, closed?) ----
def ours(raw: bytes, pool: BufferPool) -> tuple[list[Served], bool]:
    app = FakeApp(max_head=MAX_HEAD, max_target=8190, max_body=1 << 20)
    drive([raw], app, pool)
    served = [
        (
            r.method.encode(),
            r.target.encode(),
            tuple(h for h in r.headers if h[0] not in _FRAMING_NAMES),
            r.body,
        )
        for r in app.finished
    ]
    return served, bool(app.errors)


def theirs(raw: bytes) -> tuple[list[Served], bool, bool]:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(raw)
    served: list[Served] = []
    current: list[bytes] = []
    head: tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]] | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return served, True, False
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return served, False, False
        if isinstance(event, h11.Request):
            headers = tuple((n, v) for n, v in event.headers if n not in _FRAMING_NAMES)
            head, current = (event.method, event.target, headers), []
        elif isinstance(event, h11.Data):
            current.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            served.append((*head, b"".join(current)))
            # Not 2xx: a 2xx answer to CONNECT would switch protocols.
            conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return served, False, True
            conn.start_next_cycle()


# ---- a loose, independent look at the first request, for the predicates ----
class Look:
    """The first request of ``raw`` split the forgiving way: enough to say which row applies."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        rest = raw.lstrip(b"\r\n")
        end = re.search(rb"\n\r?\n", rest)
        head, self.after = (rest, b"") if end is None else (rest[: end.start()], rest[end.end() :])
        lines = re.split(rb"\r?\n", head.removesuffix(b"\r"))
        self.request_line = lines[0]
        self.fields = lines[1:]
        parts = self.request_line.split(b" ")
        self.method, self.target, self.version = [*parts, b"", b"", b""][:3]
        self.headers = [
            (n.lower(), v.strip(b" \t")) for n, _, v in (f.partition(b":") for f in self.fields)
        ]
        self.names = {n for n, _ in self.headers}
        self.chunked = b"transfer-encoding" in self.names

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_ABSOLUTE = re.compile(rb"(?i:https?)://[^/?#]*")  # an origin server's schemes only
_CONTROLS = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f]")
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN
    + rb'|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*'
)  # fmt: skip


def _target_form_ok(look: Look) -> bool:
    t, m = look.target, look.method
    if t[:1] == b"/":
        return True
    if m == b"CONNECT":
        return b":" in t and _HOST.fullmatch(t) is not None
    if t == b"*":
        return m == b"OPTIONS"
    return _ABSOLUTE.match(t) is not None


def _chunk_lines(look: Look) -> list[bytes]:
    """Lines of a chunked body that look like chunk-size lines (loosely: hex first)."""
    if not look.chunked:
        return []
    return [ln for ln in look.after.split(b"\r\n") if re.match(rb"[0-9A-Fa-f]", ln)]


def _over_limits(look: Look) -> bool:
    lengths = [v.split(b",")[0].strip() for v in look.values(b"content-length")]
    if any(v.isdigit() and int(v) > 1 << 20 for v in lengths) or len(look.target) > 8190:
        return True
    if len(look.raw) - len(look.after) > MAX_HEAD:  # h11 bounds only a head still incomplete
        return True
    lines = look.after.split(b"\r\n") if look.chunked else []
    sizes = [re.match(rb"[0-9A-Fa-f]+", ln) for ln in lines]
    return any(len(ln) > 1024 for ln in lines) or any(
        m is not None and int(m.group(), 16) > 1 << 20 for m in sizes
    )


#: Every documented difference (a row of docs/http.md): name -> (applies?, ours_accepts).
#: ``ours_accepts`` says which side is the lenient one for this input.
DIFFERENCES: dict[str, tuple[Callable[[Look], bool], bool]] = {
    # RFC 9112 2.2 says SHOULD ignore at least one empty line; nginx skips them, h11 refuses.
    "leading-empty-lines": (lambda k: k.raw[:1] in (b"\r", b"\n"), True),
    # RFC 9112 5.2: reject obs-fold (nginx) or unfold it (h11).
    "obs-fold": (lambda k: any(f[:1] in (b" ", b"\t") for f in k.fields), False),
    # RFC 9112 6.3: CL with TE may be rejected (nginx) or TE used (h11).
    "cl-with-te": (lambda k: {b"content-length", b"transfer-encoding"} <= k.names, False),
    # RFC 9112 6.1: an HTTP/1.0 request with TE is refused (nginx); h11 takes it.
    "te-in-http10": (lambda k: k.chunked and k.version == b"HTTP/1.0", False),
    # RFC 9112 3.2: an invalid Host value is a 400; h11 checks only presence and count.
    "host-syntax": (lambda k: any(_HOST.fullmatch(v) is None for v in k.values(b"host")), False),
    # RFC 9112 3.2: four target forms (absolute-form for http and https URIs); h11 takes any
    # visible characters.
    "target-form": (lambda k: not _target_form_ok(k), False),
    # RFC 9110 5.5: control bytes in field values; h11 refuses only NUL, CR, LF, VT, FF.
    "controls-in-values": (lambda k: _CONTROLS.search(k.raw) is not None, False),
    # RFC 9110 2.5: HTTP/1.x with x >= 2 is handled as HTTP/1.1, so it needs a Host;
    # h11 asks for Host only in exactly HTTP/1.1.
    "minor-version": (
        lambda k: re.fullmatch(rb"HTTP/1\.[2-9]", k.version) is not None and not k.values(b"host"),
        False,
    ),
    # RFC 9110 2.5: only HTTP/1.x is served (505); h11 parses any d.d version.
    "version": (lambda k: re.fullmatch(rb"HTTP/[02-9]\.\d", k.version) is not None, False),
    # RFC 9112 7.1.1: the chunk-ext grammar; h11 (and nginx) take any bytes up to CRLF.
    "chunk-ext": (
        lambda k: any(
            _EXT.fullmatch(re.sub(rb"^[0-9A-Fa-f]+", b"", ln)) is None for ln in _chunk_lines(k)
        ),
        False,
    ),
    # Numbers we cannot hold in 64 bits are refused; h11 takes up to 20 digits.
    "long-numbers": (
        lambda k: (
            any(len(v.split(b",")[0].strip()) > 18 for v in k.values(b"content-length"))
            or any(re.match(rb"[0-9A-Fa-f]{17}", ln) for ln in _chunk_lines(k))
        ),
        False,
    ),
    # Our limits (413 body over 1 MiB here, 414 target, 1 KiB chunk line, 16 KiB trailers)
    # are not h11's: it has one 16 KiB bound on anything it buffers and no body limit.
    "limits": (_over_limits, False),
    # RFC 9112 7.1: chunked framing lines end in CRLF; h11 lets a trailer line end in LF.
    "bare-lf-in-chunked": (lambda k: k.chunked and re.search(rb"(?<!\r)\n", k.after), False),
}


def explain(
    raw: bytes, pool: BufferPool, rows: dict[str, tuple[Callable[[Look], bool], bool]] | None = None
) -> str | None:
    """None if both agree or a documented row explains the difference, else a description."""
    ours_served, ours_error = ours(raw, pool)
    h11_served, h11_error, h11_closed = theirs(raw)
    if (ours_served, ours_error) == (h11_served, h11_error):
        return None
    look = Look(raw)
    connection = b",".join(look.values(b"connection")).lower()
    if (
        h11_closed
        and look.version == b"HTTP/1.0"
        and b"keep-alive" in connection
        and ours_served[: len(h11_served)] == h11_served
    ):
        return None  # HTTP/1.0 keep-alive: we keep the connection (nginx), h11 closes
    if ours_served[: min(len(ours_served), len(h11_served))] != h11_served[: len(ours_served)]:
        return f"served differently: ours {ours_served!r} h11 {h11_served!r}"
    ours_lenient = len(ours_served) > len(h11_served) or (
        len(ours_served) == len(h11_served) and h11_error and not ours_error
    )
    table = DIFFERENCES if rows is None else rows
    if any(applies(look) for applies, lenient in table.values() if lenient == ours_lenient):
        return None
    return (
        f"undocumented difference: ours served {len(ours_served)} error={ours_error}, "
        f"h11 served {len(h11_served)} error={h11_error}"
    )


# ---- the generator ----
TOKEN = "!#$%&'*+.^_`|~-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
ODD = [b"\x00", b"\x01", b"\x7f", b"\x80", b"\x0b", b"\t", b" ", b"\r", b"\n", b"\xff"]


def _rare(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (hypothesis favours small integers, so not integers)."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


def _sometimes(draw: st.DrawFn, common: list[bytes], odd: list[bytes]) -> bytes:
    return draw(st.sampled_from(odd) if _rare(draw, 10) else st.sampled_from(common))


def _text(alphabet: str, max_size: int) -> st.SearchStrategy[bytes]:
    return st.text(alphabet, max_size=max_size).map(lambda s: s.encode("latin-1"))


@st.composite
def field_values(draw: st.DrawFn) -> bytes:
    value = draw(_text(VISIBLE + " \t", 16))
    if _rare(draw, 16):
        pos = draw(st.integers(0, len(value)))
        value = value[:pos] + draw(st.sampled_from(ODD)) + value[pos:]
    return value


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    out, pos = bytearray(), 0
    sizes = draw(st.lists(st.integers(1, 20), max_size=4))
    exts = [b""] * 6 + [
        b";a=1",
        b";a",
        b' ; a = "x y"',
        b";a\x00",
        b";",
        b" ",
        b";a=\x01",
        b";a=b c",
    ]
    eols = [b"\r\n"] * 15 + [b"\n"]
    for size in [*sizes, len(body)]:
        piece = body[pos : pos + size]
        if not piece:
            continue
        pos += len(piece)
        digits = draw(st.sampled_from(["%x"] * 4 + ["%X", "%04x", "%017x"])) % len(piece)
        eol = draw(st.sampled_from(eols))
        out += (
            digits.encode()
            + draw(st.sampled_from(exts))
            + eol
            + piece
            + draw(st.sampled_from(eols))
        )
    out += b"0" + draw(st.sampled_from(exts)) + draw(st.sampled_from(eols))
    out += draw(st.sampled_from([b""] * 4 + [b"T: 1\r\n", b"T\x00: 1\r\n", b"T: 1\n", b"bad\r\n"]))
    return bytes(out + draw(st.sampled_from([b"\r\n"] * 9 + [b"\n"])))


FRAMINGS = ["none", "cl", "cl", "te", "te", "cl-same-twice", "cl-list-same", "cl-differ",
            "cl-plus", "cl-long", "te-gzip", "te-twice", "cl-te", "cl-huge"]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    lead = draw(st.sampled_from([b""] * 8 + [b"\r\n", b"\n", b"\r\n\r\n"]))
    method = draw(
        st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"get"])
        if not _rare(draw, 3)
        else _text(TOKEN, 8).filter(bool)
        if not _rare(draw, 5)
        else st.sampled_from([b"G(T", b"", b"M\x00", b"G\x80"])
    )
    target = draw(
        _text(VISIBLE, 20).map(lambda t: b"/" + t)
        if not _rare(draw, 3)
        else st.sampled_from(
            [b"/", b"*", b"http://h:1/p?q", b"HTTPS://h", b"ftp://h/p", b"p", b"h:443", b"//x"]
        )
        if not _rare(draw, 5)
        else st.sampled_from([b"http:/x", b"/a b", b"/\x00", b"/\x80", b"/" + b"a" * 9000])
    )
    version = _sometimes(
        draw,
        [b"HTTP/1.1"] * 3 + [b"HTTP/1.0"],
        [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"http/1.1", b"HTTP/1.10", b"HTTP/1", b"HTTP/1.1 "],
    )
    sp = _sometimes(draw, [b" "], [b"  ", b"\t"])
    lines = [method + sp + target + b" " + version]
    hosts = draw(st.sampled_from([1] * 6 + [0, 2]))
    for _ in range(hosts):
        lines.append(
            b"Host: "
            + _sometimes(draw, [b"h", b"h:80", b"[::1]:8", b""], [b"a b", b"a/b", b"h\x01", b"a@b"])
        )
    for _ in range(draw(st.integers(0, 3))):
        name = draw(
            _text(TOKEN, 10).filter(bool)
            if not _rare(draw, 10)
            else st.sampled_from([b"Bad Name", b"X\x00", b"", b"X "])
        )
        lines.append(name + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + draw(field_values()))
    if _rare(draw, 5):
        lines.append(
            b"Connection: " + draw(st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, x"]))
        )
    if _rare(draw, 10):
        lines.append(b" folded")
    if _rare(draw, 40):
        lines.append(b"X-Big: " + b"b" * 17000)
    if _rare(draw, 10):
        lines.append(b"Expect: 100-continue")
    framing = draw(st.sampled_from(FRAMINGS))
    body = draw(st.binary(max_size=40)) if framing != "none" else b""
    n = str(len(body)).encode()
    cl, te = b"Content-Length: ", b"Transfer-Encoding: "
    framing_lines = {
        "none": [],
        "cl": [cl + n],
        "te": [te + b"chunked"],
        "cl-same-twice": [cl + n] * 2,
        "cl-list-same": [cl + n + b", " + n],
        "cl-differ": [cl + n, cl + b"1" + n],
        "cl-plus": [cl + b"+" + n],
        "cl-long": [cl + n.rjust(19, b"0")],
        "te-gzip": [te + b"gzip"],
        "te-twice": [te + b"chunked"] * 2,
        "cl-huge": [cl + b"99999999"],
        "cl-te": [cl + n, te + b"chunked"],
    }[framing]
    lines += framing_lines
    order = draw(st.permutations(range(1, len(lines))))
    lines = [lines[0]] + [lines[i] for i in order]
    eol = _sometimes(draw, [b"\r\n"], [b"\n", b"\r"])
    head = b"".join(line + (b"\r\n" if not _rare(draw, 10) else eol) for line in lines)
    raw = lead + head + eol
    if "te" in framing and framing != "te-gzip":
        raw += draw(chunked_body(body))
    elif framing != "cl-huge":
        raw += body
    if draw(st.booleans()):
        raw += b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n"
    return raw


@pytest.fixture(scope="module")
def pool() -> BufferPool:
    p = BufferPool(2048, capacity=64, name="diff-h11")
    yield p
    assert p.outstanding() == 0
    p.close()


@fuzz_settings(1.0)
@given(raw=requests())
def test_parser_agrees_with_h11_or_a_documented_row(pool: BufferPool, raw: bytes) -> None:
    assert explain(raw, pool) is None, raw


@pytest.mark.parametrize("path", sorted((CORPUS / "http").glob("*.http")), ids=lambda p: p.name)
def test_corpus_agrees_with_h11_or_a_documented_row(pool: BufferPool, path: Path) -> None:
    raw = path.read_bytes()
    assert explain(raw, pool) is None


def test_every_documented_row_is_exercised_by_the_corpus(pool: BufferPool) -> None:
    """Each row of DIFFERENCES explains at least one corpus input (none is dead text)."""
    used = set()
    for path in sorted((CORPUS / "http").glob("*.http")):
        raw = path.read_bytes()
        if ours(raw, pool)[:2] != theirs(raw)[:2]:
            look = Look(raw)
            used |= {name for name, (applies, _) in DIFFERENCES.items() if applies(look)}
    assert used == set(DIFFERENCES)


@pytest.mark.parametrize("row", sorted(DIFFERENCES))
def test_a_row_taken_away_makes_its_corpus_inputs_fail(pool: BufferPool, row: str) -> None:
    """The comparison can fail: without its row, a documented difference is reported."""
    others = {k: v for k, v in DIFFERENCES.items() if k != row}
    reported = [
        path.name
        for path in sorted((CORPUS / "http").glob("*.http"))
        if DIFFERENCES[row][0](Look(path.read_bytes()))
        and explain(path.read_bytes(), pool, others) is not None
    ]
    assert reported, f"no corpus input shows the {row!r} difference on its own"
