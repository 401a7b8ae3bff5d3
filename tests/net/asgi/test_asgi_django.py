"""A Django project's ASGI handler on poolalloc's ASGI server and on uvicorn: the same requests,
the same answers.

Django's handler is the other ASGI application most users run: it reads the whole body
before the view (a spooled file), answers sync views from a thread, and, while a view runs,
waits in ``receive()`` for ``http.disconnect`` to cancel an async view whose client left.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from typing import Any

import django
import httpx
import pytest

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

SERVERS = ["poolalloc", "uvicorn"]

#: set by the slow async view: (started, cancelled), per server kind
SLOW: dict[str, tuple[threading.Event, threading.Event]] = {}


def _application() -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="test only",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATA_UPLOAD_MAX_MEMORY_SIZE=None,
            USE_TZ=True,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _views() -> list[Any]:
    from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path

    def hello(request: Any) -> Any:
        return HttpResponse(b"hello from a sync view")

    async def ahello(request: Any) -> Any:
        return HttpResponse(b"hello from an async view")

    def meta(request: Any) -> Any:
        return JsonResponse({
            "path": request.path,
            "query": request.GET.dict(),
            "method": request.method,
            "host": request.get_host(),
            "scheme": request.scheme,
            "remote": request.META.get("REMOTE_ADDR"),
            "header": request.headers.get("X-Test"),
        })  # fmt: skip

    def digest(request: Any) -> Any:
        body = request.body
        return JsonResponse({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def upload(request: Any) -> Any:
        f = request.FILES["f"]
        data = f.read()
        return JsonResponse({
            "name": f.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "field": request.POST.get("a"),
        })  # fmt: skip

    async def stream(request: Any) -> Any:
        async def chunks() -> Any:
            for i in range(5):
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0.01)

        return StreamingHttpResponse(chunks())

    async def slow(request: Any) -> Any:
        started, cancelled = SLOW[request.GET["server"]]
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return HttpResponse(b"too late")

    def boom(request: Any) -> Any:
        raise ValueError("on purpose")

    return [
        path("", hello),
        path("async", ahello),
        path("meta", meta),
        path("digest", digest),
        path("upload", upload),
        path("stream", stream),
        path("slow", slow),
        path("boom", boom),
    ]


urlpatterns = _views()


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, make_server: Any) -> Any:
    return make_server(request.param, _application())


@pytest.fixture
def client(server: Any) -> Any:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_sync_and_async_views(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.text == "hello from a sync view"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert client.get("/async").text == "hello from an async view"
    assert client.get("/nowhere").status_code == 404


def test_the_request_as_django_sees_it(client: httpx.Client, server: Any) -> None:
    r = client.get("/meta", params={"x": "1", "y": " z"}, headers={"X-Test": "yes"})
    assert r.json() == {
        "path": "/meta",
        "query": {"x": "1", "y": " z"},
        "method": "GET",
        "host": f"127.0.0.1:{server.port}",
        "scheme": "http",
        "remote": "127.0.0.1",
        "header": "yes",
    }


def test_bodies_and_multipart_uploads(client: httpx.Client) -> None:
    payload = os.urandom(3_000_000)
    want = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert client.post("/digest", content=payload).json() == want
    chunked = client.post("/digest", content=iter([payload[:1000], payload[1000:]]))
    assert chunked.json() == want
    r = client.post("/upload", data={"a": "b"}, files={"f": ("blob.bin", payload)})
    assert r.json() == {"name": "blob.bin", "field": "b", **want}


def test_a_streaming_response_arrives_in_order(client: httpx.Client) -> None:
    with client.stream("GET", "/stream") as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        assert b"".join(r.iter_bytes()) == b"".join(f"chunk {i}\n".encode() for i in range(5))


def test_a_view_that_raises_is_a_500_and_the_server_goes_on(client: httpx.Client) -> None:
    assert client.get("/boom").status_code == 500
    assert client.get("/").status_code == 200


def test_a_client_that_leaves_cancels_the_async_view(server: Any) -> None:
    """Django listens for ``http.disconnect`` beside the running view (a second task in
    ``receive()``): the server must tell it when the client goes away."""
    started, cancelled = SLOW[server.kind] = threading.Event(), threading.Event()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET /slow?server={server.kind} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert started.wait(10)
    t0 = time.monotonic()
    assert cancelled.wait(10)
    assert time.monotonic() - t0 < 5
