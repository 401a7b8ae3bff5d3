"""The applications bench_asgi.py serves: raw ASGI hello world, a small Starlette JSON endpoint."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


async def _json(request: Request) -> JSONResponse:
    return JSONResponse({"message": "Hello, World!", "items": [1, 2, 3]})


starlette_json = Starlette(routes=[Route("/test", _json)])
