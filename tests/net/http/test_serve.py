"""`poolalloc serve`: the CLI entry, SO_REUSEPORT workers, metrics, clean shutdown."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from poolalloc.net.metrics import flatten_stats, prometheus_text

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    out = (resp.status, resp.read())
    conn.close()
    return out


def children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(x) for x in f.read().split()]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_cli(tmp_path: Any, workers: int) -> None:
    (tmp_path / "hello.txt").write_bytes(b"from disk\n")
    port = free_port()
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port)]
    cmd += ["--root", str(tmp_path), "--workers", str(workers)]
    # From outside the source tree, so that the installed (compiled) package is imported.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, cwd=tmp_path, env=dict(os.environ))
    try:
        wait_listening(port, proc)
        assert get(port, "/test") == (200, b"Hello, World!")
        assert get(port, "/hello.txt") == (200, b"from disk\n")
        status, text = get(port, "/metrics")
        assert status == 200
        assert b"poolalloc_requests_total" in text
        assert b"# TYPE poolalloc_connections_total counter" in text
        for method in ("POST", "PUT", "DELETE"):  # a scrape only reads (they answered 200)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, "/metrics", body=b"x")
            resp = conn.getresponse()
            answer = (resp.status, resp.getheader("Allow"), resp.read())
            assert answer == (405, "GET, HEAD", b"method not allowed\n")
            conn.close()
        if workers > 1:
            assert len(children(proc.pid)) == workers  # N processes on one port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def listening_ports(proc: subprocess.Popen[bytes], count: int) -> list[str]:
    """The addresses the first ``count`` "listening on" lines of the server name."""
    assert proc.stderr is not None
    found: list[str] = []
    end = time.monotonic() + 20
    while len(found) < count and time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline().decode()
            assert line, "server exited"
            if " listening on " in line:
                found.append(line.rsplit(" ", 1)[1].strip())
    assert len(found) == count, found
    return found


@pytest.mark.parametrize(
    ("host", "workers", "url_host", "clients"),
    [
        ("::", 1, "[::]", ["::1", "127.0.0.1"]),  # one IPv6 socket takes both families
        ("0.0.0.0", 2, "0.0.0.0", ["127.0.0.1"]),
        ("[::1]", 2, "[::1]", ["::1"]),
    ],
)
def test_serve_on_any_address(
    tmp_path: Any, host: str, workers: int, url_host: str, clients: list[str]
) -> None:
    """``--host`` takes any address; the tests still talk to it over loopback only. With
    ``--port 0`` every worker shares the one port the parent picked."""
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--host", host, "--port", "0"]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path, env=dict(os.environ)
    )  # unbuffered: select() must see every line that has not been read yet
    try:
        urls = listening_ports(proc, workers)
        assert len(set(urls)) == 1, urls
        prefix = f"http://{url_host}:"
        assert urls[0].startswith(prefix)
        port = int(urls[0][len(prefix) :])
        assert port > 0
        for client in clients:
            conn = http.client.HTTPConnection(client, port, timeout=5)
            conn.request("GET", "/test")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"Hello, World!")
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_prometheus_text_and_flatten() -> None:
    flat = flatten_stats("pool", {"in_use": 1, "name": "x", "ok": True, "rate": 0.25})
    assert flat == {"pool_in_use": 1, "pool_rate": 0.25}
    text = prometheus_text({"requests_total": 5, "connections_active": 2, "pool_rate": 0.25})
    assert text.splitlines() == [
        "# HELP poolalloc_connections_active Connections open now.",
        "# TYPE poolalloc_connections_active gauge",
        "poolalloc_connections_active 2",
        "# HELP poolalloc_pool_rate poolalloc figure pool_rate.",
        "# TYPE poolalloc_pool_rate gauge",
        "poolalloc_pool_rate 0.25",
        "# HELP poolalloc_requests_total Requests answered.",
        "# TYPE poolalloc_requests_total counter",
        "poolalloc_requests_total 5",
    ]
