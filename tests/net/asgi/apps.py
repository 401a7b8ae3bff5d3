"""Real applications for the ASGI tests: a Starlette app, and a raw ASGI conformance app."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

EVENTS: list[str] = []  # lifespan events of the Starlette app, in order


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    EVENTS.append("startup")
    yield {"greeting": "hello from lifespan", "hits": []}
    EVENTS.append("shutdown")


async def hello_json(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world", "q": request.query_params.get("q")})


async def state(request: Request) -> JSONResponse:
    request.state.hits.append(1)
    return JSONResponse({"greeting": request.state.greeting, "hits": len(request.state.hits)})


async def echo_body(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def upload_stream(request: Request) -> JSONResponse:
    size = 0
    digest = hashlib.sha256()
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "50"))

    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"line %d\n" % i
            if i % 10 == 0:
                await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


async def big(request: Request) -> Response:
    return Response(b"b" * int(request.query_params.get("n", "1000000")))


async def headers(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        request.headers.get("x-probe", "none"),
        headers={"x-answer": "42"},
        status_code=201,
    )


async def path_info(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "method": request.method,
            "http_version": request.scope["http_version"],
            "client_is_local": request.client is not None and request.client.host == "127.0.0.1",
        }
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("the app failed on purpose")


starlette_app = Starlette(
    routes=[
        Route("/json", hello_json),
        Route("/state", state),
        Route("/echo", echo_body, methods=["POST"]),
        Route("/upload", upload_stream, methods=["POST", "PUT"]),
        Route("/stream", stream),
        Route("/big", big),
        Route("/headers", headers),
        Route("/path/{rest:path}", path_info, methods=["GET", "DELETE"]),
        Route("/boom", boom),
    ],
    lifespan=lifespan,
)


class Recorder:
    """A raw ASGI app that records every message it receives, for the conformance tests."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lifespan: list[str] = []
        self.disconnected = asyncio.Event()
        self.in_slow = threading.Event()  # a /slow request reached the app (seen from tests)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["ready"] = True
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/upload":
            body = b""
            while True:
                message = await receive()
                self.received.append({k: v for k, v in message.items() if k != "body"})
                self.received[-1]["size"] = len(message.get("body", b""))
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif path == "/chunks":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/wait-disconnect":
            await receive()  # the (empty) request
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"start", "more_body": True})
            message = await receive()  # blocks until the client goes away
            self.received.append(message)
            self.disconnected.set()
        elif path == "/state":
            body = repr(scope["state"].get("ready")).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        elif path == "/no-response":
            return
        elif path == "/slow":
            self.in_slow.set()
            await asyncio.sleep(float(scope["query_string"] or b"0.5"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"slow done"})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not found"})


async def hello_world(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw ASGI hello world of the benchmarks."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, World!"})
