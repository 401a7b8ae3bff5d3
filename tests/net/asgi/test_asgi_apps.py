"""A Starlette app on poolalloc's ASGI server and on uvicorn: the same requests, the same answers.

Every test runs against both servers; uvicorn's answers are the reference behaviour.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import httpx
import pytest
from asgi_test_apps import EVENTS, starlette_app

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

SERVERS = ["poolalloc", "uvicorn"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, make_server: Any) -> Any:
    return make_server(request.param, starlette_app)


@pytest.fixture
def client(server: Any) -> Any:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_json_endpoint(client: httpx.Client) -> None:
    r = client.get("/json", params={"q": "pools"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"hello": "world", "q": "pools"}
    assert int(r.headers["content-length"]) == len(r.content)
    assert "date" in r.headers


def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    peers = set()
    for i in range(20):
        r = client.get("/json", params={"q": str(i)}, extensions={})
        assert r.json()["q"] == str(i)
        stream = r.extensions["network_stream"]
        peers.add(stream.get_extra_info("socket").getsockname())
    assert len(peers) == 1


def test_lifespan_state_reaches_requests(client: httpx.Client) -> None:
    assert client.get("/state").json() == {"greeting": "hello from lifespan", "hits": 1}
    assert client.get("/state").json()["hits"] == 2  # the state's objects are shared
    assert "startup" in EVENTS


def test_body_and_upload_stream(client: httpx.Client) -> None:
    payload = os.urandom(3_000_000)
    want = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert client.post("/echo", content=payload).json() == want

    def pieces() -> Any:  # chunked transfer coding, in uneven pieces
        for i in range(0, len(payload), 70_001):
            yield payload[i : i + 70_001]

    assert client.post("/upload", content=pieces()).json() == want
    assert client.post("/echo", content=b"").json()["size"] == 0


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream", params={"n": "300"}) as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        lines = b"".join(r.iter_bytes()).splitlines()
    assert lines == [b"line %d" % i for i in range(300)]


def test_large_response_with_backpressure(client: httpx.Client) -> None:
    with client.stream("GET", "/big", params={"n": str(20_000_000)}) as r:
        total = 0
        for chunk in r.iter_bytes():
            total += len(chunk)
    assert total == 20_000_000


def test_headers_status_and_paths(client: httpx.Client) -> None:
    r = client.get("/headers", headers={"X-Probe": "probe value"})
    assert (r.status_code, r.text, r.headers["x-answer"]) == (201, "probe value", "42")
    r = client.get("/path/a%20b/c", params={"x": "1"})
    assert r.json() == {
        "path": "/path/a b/c",
        "raw_path": "/path/a%20b/c",
        "query": "x=1",
        "method": "GET",
        "http_version": "1.1",
        "client_is_local": True,
    }
    assert client.delete("/path/z").json()["method"] == "DELETE"
    assert client.get("/nowhere").status_code == 404
    assert client.post("/json").status_code == 405


def test_head_has_no_body(client: httpx.Client) -> None:
    r = client.head("/json")
    assert r.status_code == 200
    assert r.content == b""


def test_app_error_is_a_500(client: httpx.Client, server: Any) -> None:
    r = client.get("/boom")
    assert r.status_code == 500
    # the server goes on serving (a new connection: after a 500 the old one may be closing)
    assert httpx.get(server.url + "/json", timeout=20).status_code == 200


def _raw(server: Any, data: bytes, until_count: int, marker: bytes = b"HTTP/1.1 ") -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        while got.count(marker) < until_count or not got.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pipelined_requests_answer_in_order(server: Any) -> None:
    requests = b"".join(b"GET /json?q=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    got = _raw(server, requests, 5)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in got.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b'"q":"%d"' % i in body for i, body in enumerate(bodies)] == [True] * 5


def test_http_10_request(server: Any) -> None:
    got = _raw(server, b"GET /json HTTP/1.0\r\n\r\n", 1)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b'{"hello":"world","q":null}'


def test_malformed_request_is_a_400(server: Any) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400")
