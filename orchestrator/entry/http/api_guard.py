"""In front of the API's routes: bodies over the limit refused, failures answered briefly.

FastAPI reads a body whole before a route runs, so the limit is kept here, in
a pure-ASGI layer: a Content-Length over `max_body` is answered 413 before a
byte is read, and a body sent without one (chunked) is counted as it streams
in and refused 413 the moment it passes the limit (the rest is never kept).
A failure no handler took (a bug, Redis gone) is answered 500 "internal
error" (503 when Redis cannot be reached) and logged by its type only, never
with a body or a header value.
"""

from __future__ import annotations

import logging

import redis
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.entry.http.api_errors import error_response

log = logging.getLogger("orchestrator.entry.http")


class Guard:
    """413 for a body over `max_body` (declared or streamed); 500/503 for a failure."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"the body is over {self.max_body} bytes"
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isascii() or not length.isdigit():
                await error_response(400, "Content-Length must be a number")(scope, receive, send)
                return
            if len(length) > 12 or int(length) > self.max_body:
                await error_response(413, too_big)(scope, receive, send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, too_big)  # answered by the API's handlers
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as exc:
            where = f"{scope['method']} {scope['path'][:200]}"
            log.error("%s failed: %s", where, type(exc).__name__)
            log.debug("the failure", exc_info=True)
            if started:
                raise
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                answer = error_response(503, "Redis cannot be reached; try again later")
            else:
                answer = error_response(500, "internal error")
            await answer(scope, receive, send)
