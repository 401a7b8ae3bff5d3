"""The load generator counts every request exactly once: answered, or failed with a reason."""

from __future__ import annotations

import socket

import pytest

from poolalloc.cli.loadgen import LoadResult, http_request, run_load

pytestmark = pytest.mark.net


def test_every_request_is_answered(http_server: int) -> None:
    seen: list[tuple[int, int]] = []
    result = run_load("127.0.0.1", http_server, 40, 25, progress=lambda d, t: seen.append((d, t)))
    assert (result.ok, result.failed, result.errors) == (1000, 0, [])
    assert len(result.latencies) == 1000
    assert 0 < result.percentile(50) <= result.percentile(99) <= result.percentile(100)
    assert seen[-1] == (1000, 1000)
    assert result.requests_per_second > 0


@pytest.mark.parametrize("http_server", [(b"503 Busy", 0)], indirect=True)
def test_non_2xx_status_fails_the_connection(http_server: int) -> None:
    result = run_load("127.0.0.1", http_server, 3, 4)
    assert (result.ok, result.failed) == (0, 12)
    assert "bad status line" in result.errors[0]


@pytest.mark.parametrize("http_server", [(b"200 OK", 2)], indirect=True)
def test_server_closing_early_fails_the_requests_left(http_server: int) -> None:
    result = run_load("127.0.0.1", http_server, 5, 6)
    assert (result.ok, result.failed) == (10, 20)
    # EOF, or a reset when the next request reached the closed socket first
    assert any(word in result.errors[0] for word in ("closed the connection", "reset", "pipe"))


def test_refused_connections_count_as_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        result = run_load("127.0.0.1", port, 4, 3)
    assert (result.ok, result.failed) == (0, 12)


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts (in the backlog) but never answers
        result = run_load("127.0.0.1", listener.getsockname()[1], 2, 3, timeout=0.3)
    assert (result.ok, result.failed) == (0, 6)
    assert "timed out" in result.errors[0]


def test_percentiles_use_nearest_rank() -> None:
    result = LoadResult(ok=4, failed=0, elapsed=2.0, latencies=[4.0, 1.0, 3.0, 2.0])
    assert [result.percentile(p) for p in (25, 50, 75, 100)] == [1.0, 2.0, 3.0, 4.0]
    assert result.requests_per_second == 2.0
    assert LoadResult(ok=0, failed=1, elapsed=0.0).percentile(50) == 0.0


def test_request_bytes() -> None:
    assert http_request("h", 1, "/x", b"ab") == (
        b"POST /x HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\n\r\nab"
    )
