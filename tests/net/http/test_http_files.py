"""Static files: validators, conditional requests, byte ranges, directories, types, HEAD.

Every test takes ``make_server``, so tests/net/uring/test_net_suites_on_uring.py runs them on
the io_uring engine too.
"""

from __future__ import annotations

import email.utils
import os
from typing import Any

import pytest
from rawhttp import connect, is_closed_by_peer, read_response

import poolalloc
from poolalloc.net import HttpServer, Reactor

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

MTIME = 1_700_000_000  # a fixed modification time, whole seconds


@pytest.fixture
def files_root(tmp_path: Any) -> Any:
    (tmp_path / "small.txt").write_bytes(b"0123456789abcdefghij")  # 20 bytes
    (tmp_path / "big.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_bytes(b"<p>index</p>")
    (tmp_path / "noindex").mkdir()
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "notes.txt.gz").write_bytes(b"\x1f\x8b\x08\x00fake")
    (tmp_path / "site.tar.gz").write_bytes(b"\x1f\x8b\x08\x00fake")
    for name in ("small.txt", "big.bin", "empty.bin"):
        os.utime(tmp_path / name, (MTIME, MTIME))
    return tmp_path


Result = tuple[int, dict[str, str], bytes]


def ask(port: int, *requests: tuple[str, str, dict[str, str]]) -> list[Result]:
    """Send each ``(method, target, headers)`` on ONE keep-alive connection, in turn."""
    out = []
    with connect(port) as sock:
        f = sock.makefile("rb")
        for method, target, headers in requests:
            lines = [f"{method} {target} HTTP/1.1", "Host: x"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            out.append(read_response(f, method))
    return out


def one(port: int, target: str, method: str = "GET", **headers: str) -> Result:
    return ask(port, (method, target, {k.replace("_", "-"): v for k, v in headers.items()}))[0]


def httpdate(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def test_validators_and_accept_ranges(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    status, h, body = one(srv.port, "/small.txt")
    assert (status, body) == (200, b"0123456789abcdefghij")
    assert h["last-modified"] == httpdate(MTIME)
    assert h["accept-ranges"] == "bytes"
    etag = h["etag"]
    assert etag.startswith('"')  # strong: no W/ prefix
    assert etag.endswith('"')
    st = os.stat(files_root / "small.txt")
    assert etag == f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
    # A rewrite (same size, new mtime) changes the tag; so does a new size.
    os.utime(files_root / "small.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert one(srv.port, "/small.txt")[1]["etag"] != etag
    (files_root / "small.txt").write_bytes(b"longer than before, much")
    assert one(srv.port, "/small.txt")[1]["etag"] not in (etag, None)


def test_if_none_match_and_if_modified_since_give_304(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    etag = one(srv.port, "/small.txt")[1]["etag"]
    before, after = httpdate(MTIME - 10), httpdate(MTIME + 10)
    cases: list[tuple[dict[str, str], int]] = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"other", {etag}'}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),  # weak comparison for If-None-Match
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": httpdate(MTIME)}, 304),
        ({"If-Modified-Since": after}, 304),
        ({"If-Modified-Since": before}, 200),
        ({"If-Modified-Since": "not a date"}, 200),  # an invalid date is ignored
        # If-None-Match takes precedence: If-Modified-Since is then not looked at.
        ({"If-None-Match": '"other"', "If-Modified-Since": after}, 200),
        ({"If-None-Match": etag, "If-Modified-Since": before}, 304),
    ]
    # All on one connection: a 304 has no body and must leave the connection usable.
    results = ask(srv.port, *[("GET", "/small.txt", hdrs) for hdrs, _ in cases])
    for (hdrs, want), (status, h, body) in zip(cases, results, strict=True):
        assert status == want, hdrs
        if status == 304:
            assert body == b""
            assert "content-length" not in h
            assert "content-type" not in h
            assert h["etag"] == etag
            assert h["last-modified"] == httpdate(MTIME)
        else:
            assert body == b"0123456789abcdefghij"
    # HEAD answers the same way.
    status, h, body = one(srv.port, "/small.txt", "HEAD", If_None_Match=etag)
    assert (status, body, h["etag"]) == (304, b"", etag)
    # Connection: close is honoured after a 304, a 412 and a 416 as after a 200.
    for extra in (f"If-None-Match: {etag}", 'If-Match: "other"', "Range: bytes=99-"):
        with connect(srv.port) as sock:
            raw = f"GET /small.txt HTTP/1.1\r\nHost: x\r\n{extra}\r\nConnection: close\r\n\r\n"
            sock.sendall(raw.encode())
            status, h, _ = read_response(sock.makefile("rb"))
            assert h["connection"] == "close", extra
            assert is_closed_by_peer(sock), extra
        assert status in (304, 412, 416)


def test_if_match_and_if_unmodified_since_give_412(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    etag = one(srv.port, "/small.txt")[1]["etag"]
    cases: list[tuple[dict[str, str], int]] = [
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),  # strong comparison for If-Match
        ({"If-Unmodified-Since": httpdate(MTIME)}, 200),
        ({"If-Unmodified-Since": httpdate(MTIME - 10)}, 412),
        ({"If-Match": etag, "If-Unmodified-Since": httpdate(MTIME - 10)}, 200),
    ]
    results = ask(srv.port, *[("GET", "/small.txt", hdrs) for hdrs, _ in cases])
    assert [r[0] for r in results] == [want for _, want in cases]


def test_single_ranges_give_206_with_content_range(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    data = b"0123456789abcdefghij"
    cases = [
        ("bytes=0-4", 0, 4),
        ("bytes=5-9", 5, 9),
        ("bytes=15-", 15, 19),
        ("bytes=-3", 17, 19),
        ("bytes=-50", 0, 19),  # a suffix longer than the file is the whole file
        ("bytes=10-999", 10, 19),  # the end is clipped to the file
        ("bytes=19-19", 19, 19),
        ("BYTES=2-3", 2, 3),  # the unit is case-insensitive
        ("bytes=,2-3 ,", 2, 3),  # empty list elements are skipped
    ]
    results = ask(srv.port, *[("GET", "/small.txt", {"Range": r}) for r, _, _ in cases])
    for (rng, first, last), (status, h, body) in zip(cases, results, strict=True):
        assert status == 206, rng
        assert h["content-range"] == f"bytes {first}-{last}/20", rng
        assert int(h["content-length"]) == last - first + 1
        assert body == data[first : last + 1], rng
        assert h["accept-ranges"] == "bytes"


def test_ranges_of_a_big_file_come_from_the_offset(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    data = (files_root / "big.bin").read_bytes()
    spans = [(0, 0), (1, 65536), (300_000, 1_000_000), (len(data) - 1, len(data) - 1)]
    results = ask(srv.port, *[("GET", "/big.bin", {"Range": f"bytes={a}-{b}"}) for a, b in spans])
    for (a, b), (status, h, body) in zip(spans, results, strict=True):
        assert status == 206
        assert h["content-range"] == f"bytes {a}-{b}/{len(data)}"
        assert body == data[a : b + 1]


def test_unsatisfiable_range_gives_416(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    cases = [("/small.txt", "bytes=20-", 20), ("/small.txt", "bytes=100-200", 20)]
    cases += [("/small.txt", "bytes=-0", 20), ("/empty.bin", "bytes=0-", 0)]
    cases += [("/empty.bin", "bytes=-5", 0)]
    results = ask(srv.port, *[("GET", p, {"Range": r}) for p, r, _ in cases])
    results.append(one(srv.port, "/small.txt"))  # the connection stayed usable
    for (path, rng, size), (status, h, _) in zip(cases, results, strict=False):
        assert status == 416, (path, rng)
        assert h["content-range"] == f"bytes */{size}"
    assert results[-1][0] == 200


def test_ranges_that_are_ignored_give_the_whole_file(make_server: Any, files_root: Any) -> None:
    """Several ranges get the whole file (200; RFC 9110 14.2 lets a server ignore Range);
    an unknown unit or a value outside the grammar of RFC 9110 14.1 is ignored."""
    srv = make_server(root=files_root)
    ranges = ["bytes=0-1,5-6", "bytes=0-1, -2", "items=0-1", "bytes=5-2", "bytes=x-y"]
    ranges += ["bytes=-", "bytes=", "bytes=\u00b2-3", "bytes=5", "bytes=,"]
    ranges += ["bytes = 0-5", "bytes =0-5", "bytes= 0-5", "BYTES = 2-3"]  # no space around "="
    results = ask(srv.port, *[("GET", "/small.txt", {"Range": r}) for r in ranges])
    for rng, (status, h, body) in zip(ranges, results, strict=True):
        assert (status, body) == (200, b"0123456789abcdefghij"), rng
        assert "content-range" not in h


def test_if_range(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    etag = one(srv.port, "/small.txt")[1]["etag"]
    cases: list[tuple[str, int]] = [
        (etag, 206),
        ('"stale"', 200),
        (f"W/{etag}", 200),  # If-Range needs a strong validator
        (httpdate(MTIME), 206),  # exactly Last-Modified
        (httpdate(MTIME - 1), 200),
        (httpdate(MTIME + 1), 200),
    ]
    requests = [("GET", "/small.txt", {"Range": "bytes=0-3", "If-Range": v}) for v, _ in cases]
    results = ask(srv.port, *requests)
    for (value, want), (status, _, body) in zip(cases, results, strict=True):
        assert status == want, value
        assert body == (b"0123" if want == 206 else b"0123456789abcdefghij")


def test_head_has_the_get_headers_and_no_body(make_server: Any, files_root: Any) -> None:
    """HEAD gets the headers GET would get; Range applies to GET only (RFC 9110 14.2), so
    HEAD with Range answers as HEAD without it."""
    srv = make_server(root=files_root)
    for target in ("/small.txt", "/big.bin", "/notes.txt.gz", "/sub/", "/empty.bin"):
        g_status, g_head, _ = one(srv.port, target)
        h_status, h_head, h_body = one(srv.port, target, "HEAD")
        assert (h_status, h_body) == (g_status, b"")
        g_head.pop("date"), h_head.pop("date")
        assert h_head == g_head, target
    status, h, body = one(srv.port, "/big.bin", "HEAD", Range="bytes=0-9")
    assert (status, body, h["content-length"]) == (200, b"", str(1 << 20))
    status, h, _ = one(srv.port, "/small.txt", "HEAD", Range="bytes=50-")
    assert status == 200


def test_directories_redirect_and_files_take_no_slash(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    status, h, _ = one(srv.port, "/sub")
    assert (status, h["location"]) == (301, "/sub/")
    status, h, _ = one(srv.port, "/sub?x=1")
    assert (status, h["location"]) == (301, "/sub/?x=1")
    status, h, body = one(srv.port, "/sub", "HEAD")
    assert (status, h["location"], body) == (301, "/sub/", b"")
    status, h, _ = one(srv.port, "/s%75b")  # the Location is built from the path as sent
    assert (status, h["location"]) == (301, "/s%75b/")
    assert one(srv.port, "/sub/")[::2] == (200, b"<p>index</p>")
    # Never a network-path reference ("//sub/" sends a browser to the host "sub"), nor one a
    # browser reads as such ("/\\sub/"): the leading slashes become one, as nginx's are
    (files_root / "\\sub").mkdir()
    for target, location in (
        ("//sub", "/sub/"),
        ("///sub?x=1", "/sub/?x=1"),
        ("/\\sub", "/%5Csub/"),
    ):
        status, h, _ = one(srv.port, target)
        assert (status, h["location"]) == (301, location), target
    assert one(srv.port, "/%2Fsub")[1]["location"] == "/%2Fsub/"  # a path: "/%2F" is no "//"
    assert one(srv.port, "/noindex/")[0] == 404
    assert one(srv.port, "/noindex")[0] == 301
    for target in ("/small.txt/", "/small.txt/.", "/sub/index.html/"):
        assert one(srv.port, target)[0] == 404, target
    results = ask(srv.port, ("GET", "/", {}))  # the files_root itself, with no index.html
    assert results[0][0] == 404


def test_compressed_files_are_their_archive_type(make_server: Any, files_root: Any) -> None:
    srv = make_server(root=files_root)
    for target in ("/notes.txt.gz", "/site.tar.gz"):
        status, h, body = one(srv.port, target)
        assert (status, body) == (200, b"\x1f\x8b\x08\x00fake")
        assert h["content-type"] == "application/gzip"
        assert "content-encoding" not in h
    assert one(srv.port, "/small.txt")[1]["content-type"].startswith("text/plain")
    assert one(srv.port, "/big.bin")[1]["content-type"] == "application/octet-stream"


def test_a_root_that_is_not_a_directory_is_refused(tmp_path: Any) -> None:
    # Taken, it answered every request 404 (and every upload "No such file or directory").
    (tmp_path / "file").write_bytes(b"x")
    reactor = Reactor()
    with poolalloc.BufferPool(4096, capacity=2) as pool:
        with pytest.raises(FileNotFoundError, match="must be an existing directory"):
            HttpServer(reactor, buffer_pool=pool, root=tmp_path / "missing")
        with pytest.raises(NotADirectoryError, match="must be an existing directory"):
            HttpServer(reactor, buffer_pool=pool, root=tmp_path / "file")
    reactor.close()


def test_symlinks_out_of_the_root_are_not_served(
    make_server: Any, files_root: Any, tmp_path_factory: Any
) -> None:
    """A symlink under the root that points out of it is a 404, whether it is named (a file,
    a directory on the way) or reached as a directory's ``index.html``: the directory was
    checked to be under the root, and its index then opened without a look at where it led."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(b"secret")
    (files_root / "link.txt").symlink_to(outside / "secret.txt")
    (files_root / "linkdir").symlink_to(outside)
    (files_root / "trap").mkdir()
    (files_root / "trap" / "index.html").symlink_to(outside / "secret.txt")
    srv = make_server(root=files_root)
    for target in ("/link.txt", "/linkdir/secret.txt", "/trap/", "/trap/index.html"):
        for method in ("GET", "HEAD"):
            status, _, body = one(srv.port, target, method)
            assert (status, b"secret" in body) == (404, False), (method, target)
    (files_root / "trap" / "index.html").unlink()  # a link that stays under the root is served
    (files_root / "trap" / "index.html").symlink_to(files_root / "sub" / "index.html")
    assert one(srv.port, "/trap/")[::2] == (200, b"<p>index</p>")
    (files_root / "index.html").symlink_to(outside / "secret.txt")  # the root's own index
    assert one(srv.port, "/")[0] == 404
