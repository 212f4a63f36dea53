"""The ASGI app (Starlette): the routes, bounded body reading, JSON answers, the access log.

The HTTP API (FastAPI, orchestrator.entry.http.api) is mounted at /api, with its own
token check, body limit (the same MAX_BODY) and error shape.

Every answer is JSON, with `Cache-Control: no-store`. A body over MAX_BODY is
refused 413 on its Content-Length before a byte of it is read, and counted as
it streams in; a chunked body is refused 411. The endpoints' work runs on
Starlette's thread pool (anyio's, 40 threads), so threads do not grow with
the number of clients. A failure is logged by its type only; a 403 by its
reason; every answer by method, path and status, never a body or a header value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.entry.http.api import build_api
from orchestrator.entry.http.body import Refused
from orchestrator.entry.http.console import console_routes
from orchestrator.entry.http.door import Door
from orchestrator.entry.http.metrics import metrics_route
from orchestrator.entry.http.tracing import TracingMiddleware

log = logging.getLogger("orchestrator.entry.http")

MAX_BODY = 256 * 1024


def _json(status: int, doc: dict[str, Any]) -> Response:
    return Response(
        json.dumps(doc).encode(),  # ASCII: a message quoting odd input still encodes
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _raw_path(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw.decode("latin-1")[:200]


async def _read_body(request: Request) -> bytes:
    """The whole body, refused before it is read when its Content-Length is over MAX_BODY."""
    if request.headers.get("Transfer-Encoding"):
        raise Refused(411, "send the body with a Content-Length")
    length = request.headers.get("Content-Length", "")
    if not length.isascii() or not length.isdigit():
        raise Refused(411, "a Content-Length is required")
    if len(length) > 12 or int(length) > MAX_BODY:
        raise Refused(413, f"the body is over {MAX_BODY} bytes")
    size, chunks, received = int(length), [], 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > min(size, MAX_BODY):  # the framing makes this unreachable; counted anyway
                raise Refused(413, f"the body is over {MAX_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "the client left before its body arrived") from None
    if received < size:
        raise Refused(400, "the body is shorter than its Content-Length")
    return b"".join(chunks)


def build_asgi(door: Door) -> Starlette:
    """The Starlette app: every answer JSON, every failure logged by type only."""

    async def health(request: Request) -> Response:
        return _json(200, {"ok": True})

    async def twilio_status(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            public_url = door.config.public_url
            if door.validator is None or public_url is None:
                raise Refused(503, "Twilio callbacks are not configured (TWILIO_AUTH_TOKEN)")
            body = await _read_body(request)
            query = request.scope.get("query_string", b"").decode("latin-1")
            url = public_url + _raw_path(request.scope) + ("?" + query if query else "")
            return await run_in_threadpool(door.twilio_status, url, request.headers, body)

        return await _answer(request, work)

    async def events(request: Request) -> Response:
        async def work() -> tuple[int, dict[str, Any]]:
            if door.config.events_secret is None:
                raise Refused(503, "/events is not configured (ORCHESTRATOR_EVENTS_SECRET)")
            body = await _read_body(request)
            return await run_in_threadpool(door.events, request.headers, body)

        return await _answer(request, work)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (404, 405) as JSON like every other answer."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _json(status, {"error": HTTPStatus(status).phrase.lower()})

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/twilio/status", twilio_status, methods=["POST"]),
        Route("/events", events, methods=["POST"]),
        Mount("/api", app=build_api(door, MAX_BODY)),  # its own auth, limits and errors
    ]
    routes.append(metrics_route(door.app))  # Prometheus scrapes it; counts, no ids
    routes += console_routes()  # "/" and its assets: last, after every other route
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(TracingMiddleware)  # a request's traceparent: off unless tracing is on
    app.add_middleware(_AccessLog)
    return app


async def _answer(
    request: Request, work: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
) -> Response:
    try:
        status, doc = await work()
    except Refused as refused:
        if refused.status == 403:
            log.warning(
                "%s %s refused: %s", request.method, _raw_path(request.scope), refused.message
            )
        status, doc = refused.status, {"error": refused.message}
    except Exception as exc:  # a bug or Redis gone: say little, log the type
        log.error("%s %s failed: %s", request.method, _raw_path(request.scope), type(exc).__name__)
        log.debug("the failure", exc_info=True)
        status, doc = 500, {"error": "internal error"}
    return _json(status, doc)


class _AccessLog:
    """One line per answer: method, path, status; never a body or a header value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.info("%s %s %s", scope["method"], _raw_path(scope), message["status"])
            await send(message)

        await self.app(scope, receive, logged)
