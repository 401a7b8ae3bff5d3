"""The keep-alive fast path: a repeated head of a static route answered from the reply cache."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rawhttp import connect, read_response

from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

HEAD = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"


def _roundtrips(port: int, raw: bytes, count: int, method: str = "GET") -> list[Any]:
    """Send ``raw`` ``count`` times on one connection, one at a time (one read each)."""
    out = []
    with connect(port) as sock:
        f = sock.makefile("rb")
        for _ in range(count):
            sock.sendall(raw)
            out.append(read_response(f, method))
    return out


def test_repeated_head_is_answered_from_the_table_and_counted(make_server: Any) -> None:
    srv = make_server()
    srv.call(srv.http._date_timer.cancel)  # a new second would empty the table mid-test
    got = _roundtrips(srv.port, HEAD, 50)
    assert all(status == 200 and body == b"Hello, World!" for status, _, body in got)
    assert all("date" in headers and "connection" not in headers for _, headers, _ in got)
    assert srv.call(srv.http.replies.answer, HEAD) is not None
    metrics = srv.call(srv.http.metrics)
    assert metrics["requests_total"] == 50
    assert metrics["errors_total"] == 0
    assert metrics["bytes_in_total"] == 50 * len(HEAD)


def test_replacing_a_route_drops_its_remembered_answers(make_server: Any) -> None:
    srv = make_server()
    assert _roundtrips(srv.port, HEAD, 3)[-1][2] == b"Hello, World!"
    srv.call(srv.http.route, "/test", Response(body=b"changed"))
    assert _roundtrips(srv.port, HEAD, 3)[-1][2] == b"changed"
    srv.call(srv.http.route, "/test", lambda req: Response(body=req.method.encode()))
    assert _roundtrips(srv.port, HEAD, 3)[-1][2] == b"GET"
    assert srv.call(srv.http.replies.answer, HEAD) is None


def test_a_new_date_second_drops_remembered_answers(make_server: Any) -> None:
    srv = make_server()
    _roundtrips(srv.port, HEAD, 2)
    srv.call(srv.http._date_timer.cancel)
    srv.call(srv.http._tick)  # as the timer does every second
    assert srv.call(lambda: len(srv.http.replies)) == 0
    status, headers, _ = _roundtrips(srv.port, HEAD, 1)[0]
    assert status == 200
    assert headers["date"].encode() == srv.call(lambda: srv.http._date)


@pytest.mark.parametrize(
    ("raw", "method", "closes"),
    [
        (b"HEAD /test HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", False),
        (b"GET /test HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET", True),
        (b"GET /test HTTP/1.0\r\n\r\n", "GET", True),
    ],
)
def test_heads_the_table_must_not_answer(
    make_server: Any, raw: bytes, method: str, closes: bool
) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for _ in range(1 if closes else 3):
            sock.sendall(raw)
            status, headers, body = read_response(f, method)
            assert status == 200
            assert body == (b"" if method == "HEAD" else b"Hello, World!")
            assert headers["content-length"] == "13"
            assert (headers.get("connection") == "close") is closes
    assert srv.call(srv.http.replies.answer, raw) is None


def test_bad_input_after_warm_fast_path_still_gets_its_status(make_server: Any) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(HEAD)
            assert read_response(f)[0] == 200
        sock.sendall(b"GET /test HTTP/2.0\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(f)
    assert (status, headers["connection"]) == (505, "close")
    assert srv.call(srv.http.metrics)["errors_total"] == 1


def test_pipelined_copies_of_a_remembered_head_are_all_answered(make_server: Any) -> None:
    srv = make_server()
    _roundtrips(srv.port, HEAD, 2)
    with connect(srv.port) as sock:
        sock.sendall(HEAD * 5)
        f = sock.makefile("rb")
        got = [read_response(f) for _ in range(5)]
    assert [g[2] for g in got] == [b"Hello, World!"] * 5
    assert srv.call(srv.http.metrics)["requests_total"] == 7


def test_fast_path_still_pauses_a_client_that_never_reads(make_server: Any) -> None:
    """Backpressure holds on the fast path: reading stops, queued answers stay bounded."""
    srv = make_server(high_water=4096, low_water=1024)
    with connect(srv.port) as warm:
        warm.sendall(HEAD)
        read_response(warm.makefile("rb"))
    deadline = time.monotonic() + 10
    while srv.call(lambda: len(srv.http.tcp.connections)) and time.monotonic() < deadline:
        time.sleep(0.01)  # the warm-up connection's close is seen first: one live connection
    with connect(srv.port) as sock:
        sock.setblocking(False)
        # Generous: the kernel's socket buffers must fill first (megabytes of answers), which
        # takes seconds on the io_uring engine under AddressSanitizer.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the server stops reading us
            try:
                sock.send(HEAD)
            except BlockingIOError:
                time.sleep(0.01)
                if srv.call(lambda: [c.paused for c in srv.http.tcp.connections]) == [True]:
                    break
        state = srv.call(lambda: [(c.paused, c.queued) for c in srv.http.tcp.connections])
    assert len(state) == 1
    paused, queued = state[0]
    assert paused, "the connection never paused"
    assert queued <= 4096 + 200


def test_a_head_split_across_reads_is_answered_through_the_table(make_server: Any) -> None:
    """A head that arrives in two reads (an io_uring receive that filled its buffer's block
    splits one) is looked up and remembered by its whole bytes, as one read whole is."""
    srv = make_server()
    srv.call(srv.http._date_timer.cancel)  # a new second would empty the table mid-test

    def read_in() -> int:
        return int(srv.call(lambda: sum(c.bytes_in for c in srv.http.tcp.connections)))

    with connect(srv.port) as sock:
        f = sock.makefile("rb")
        for i in range(3):
            sock.sendall(HEAD[:10])
            deadline = time.monotonic() + 10
            while read_in() < i * len(HEAD) + 10:  # the server read the first part on its own
                assert time.monotonic() < deadline
                time.sleep(0.005)
            sock.sendall(HEAD[10:])
            status, _, body = read_response(f)
            assert (status, body) == (200, b"Hello, World!")
            assert srv.call(srv.http.replies.answer, HEAD) is not None
    metrics = srv.call(srv.http.metrics)
    assert metrics["requests_total"] == 3
    assert metrics["errors_total"] == 0
    assert metrics["bytes_in_total"] == 3 * len(HEAD)
