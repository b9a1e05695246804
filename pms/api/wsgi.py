"""A WSGI app (the Dramatiq dashboard) behind an aiohttp handler, with no extra dependency.

The request body is read by aiohttp, a PEP 3333 environ is built from it, and the WSGI app
runs in a worker thread (it does blocking Redis calls). Its response is collected whole: the
dashboard's pages are small.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(request: web.Request, body: bytes, mount: str) -> dict[str, Any]:
    path = request.path
    script_name = mount if path.startswith(mount) else ""
    host, _, port = (request.host or "localhost").partition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path[len(script_name) :] or "/",
        "QUERY_STRING": request.query_string,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": host,
        "SERVER_PORT": port or ("443" if request.secure else "80"),
        "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[f"HTTP_{key}"] = value
    return environ


def call(app: WsgiApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        captured["status"], captured["headers"] = status, headers
        return lambda _chunk: None  # the legacy write() callable; the dashboard never uses it

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return int(captured["status"].split(" ", 1)[0]), captured["headers"], body


def handler(app: WsgiApp, mount: str) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        status, headers, payload = await asyncio.to_thread(
            call, app, environ_for(request, body, mount)
        )
        response = web.Response(status=status, body=payload)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                response.headers.add(name, value)
        return response

    return handle
