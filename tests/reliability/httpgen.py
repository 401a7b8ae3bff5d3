"""Hypothesis strategies for HTTP/1.1 request streams: valid requests with the fields they must
parse to, and bad requests with the status they must be answered with."""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import strategies as st

TOKEN = "!#$%&'*+.^_`|~-" + string.digits + string.ascii_letters
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
FRAMING = {"content-length", "transfer-encoding", "connection", "expect", "host"}


@dataclass(frozen=True)
class Expected:
    method: str
    target: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE"]) | st.text(TOKEN, min_size=1)
targets = st.text(VISIBLE, max_size=60).map(lambda s: "/" + s)
header_names = st.text(TOKEN, min_size=1, max_size=20).filter(lambda n: n.lower() not in FRAMING)
header_values = st.text(VISIBLE + " \t", max_size=40).map(lambda v: v.strip(" \t"))
headers = st.lists(st.tuples(header_names, header_values), max_size=5)


def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks of random sizes, hex case, extensions and trailers."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, max(1, len(body) - pos)))
        hex_size = format(size, "x")
        if draw(st.booleans()):
            hex_size = hex_size.upper()
        ext = draw(st.sampled_from([b"", b";a=1", b";name"]))
        out += hex_size.encode() + ext + b"\r\n" + body[pos : pos + size] + b"\r\n"
        pos += size
    out += b"0\r\n"
    if draw(st.booleans()):
        out += b"X-Trailer: t\r\n"
    return bytes(out + b"\r\n")


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, Expected]:
    method, target, hdrs = draw(methods), draw(targets), draw(headers)
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b"" if framing == "none" else draw(st.binary(max_size=600))
    head = [f"{method} {target} HTTP/1.1", "Host: h"]
    head += [f"{n}:{draw(st.sampled_from(['', ' ', chr(9)]))}{v}" for n, v in hdrs]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
    raw = "\r\n".join(head).encode() + b"\r\n\r\n"
    raw += chunked(draw, body) if framing == "chunked" else body
    expected_headers = ((b"host", b"h"), *((n.lower().encode(), v.encode()) for n, v in hdrs))
    return raw, Expected(method, target, body, expected_headers)


def _req(line: str, *hdrs: str, body: bytes = b"") -> bytes:
    return "\r\n".join([line, "Host: h", *hdrs]).encode() + b"\r\n\r\n" + body


# Each strategy gives (raw bytes, the status the server must answer). Limits: FakeApp defaults.
bad_version = st.tuples(st.integers(2, 9), st.integers(0, 9)).map(
    lambda v: (_req(f"GET / HTTP/{v[0]}.{v[1]}"), 505)
)
long_target = st.integers(257, 3000).map(lambda n: (_req("GET /" + "a" * n + " HTTP/1.1"), 414))
big_head = st.integers(3, 40).map(
    lambda n: (_req("GET / HTTP/1.1", *[f"X-Pad-{i}: " + "v" * 60 for i in range(n + 14)]), 431)
)
codings = ["gzip", "chunked, gzip", "identity", "chunked\r\nTransfer-Encoding: chunked"]
bad_coding = st.sampled_from(codings).map(
    lambda te: (_req("POST / HTTP/1.1", f"Transfer-Encoding: {te}"), 501)
)
bad_framing = st.sampled_from(
    [
        ("Content-Length: 3", "Transfer-Encoding: chunked"),
        ("Content-Length: 3", "Content-Length: 4"),
        ("Content-Length: 3, 4",),
        ("Content-Length: +3",),
        ("Content-Length: -1",),
        ("Content-Length: 0x10",),
        ("Content-Length: 1 2",),
        ("Content-Length: 99999999999999999999",),
    ]
).map(lambda h: (_req("POST / HTTP/1.1", *h, body=b"abcd"), 400))
too_large = st.integers(4097, 10**12).map(
    lambda n: (_req("POST / HTTP/1.1", f"Content-Length: {n}"), 413)
)
_CHUNKED = "Transfer-Encoding: chunked"
too_large_chunked = st.integers(4097, 10**6).map(
    lambda n: (_req("POST / HTTP/1.1", _CHUNKED, body=f"{n:x}\r\n".encode()), 413)
)
bad_chunk = st.sampled_from(
    [
        b"zz\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"3\nabc\r\n0\r\n\r\n",
        b"-3\r\n",
        b"3 \r\n",
        b"x" * 1100,
    ]
).map(lambda c: (_req("POST / HTTP/1.1", _CHUNKED, body=c), 400))
bad_head = st.sampled_from(
    [
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",  # bare CR
        b"GET / HTTP/1.1\r\n\r\n",  # no Host in HTTP/1.1
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",  # two Host lines
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",  # not a host
        b"GET x HTTP/1.1\r\nHost: a\r\n\r\n",  # target of no RFC 9112 form
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",  # asterisk-form is for OPTIONS only
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # TE in 1.0
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # whitespace before the colon
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",  # NUL in a value
        b"GET / HTTP/1.1\r\nHost: a\x1bb\r\n\r\n",  # control character in a value
        b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",  # two spaces
        b"GET /\r\n\r\n",  # HTTP/0.9 style
        b"G(T / HTTP/1.1\r\n\r\n",  # not a token
        b"GET / HTTP/1.1 \r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b" GET / HTTP/1.1\r\n\r\n",  # leading whitespace
        b"GET / HTTP/1.10\r\n\r\n",
    ]
).map(lambda raw: (raw, 400))

bad_requests = st.one_of(
    bad_version, long_target, big_head, bad_coding, bad_framing, too_large, too_large_chunked,
    bad_chunk, bad_head,
)  # fmt: skip
