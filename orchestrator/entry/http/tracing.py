"""The HTTP door's tracing: a request's W3C `traceparent` header becomes the parent of
what the request starts or emits.

A pure ASGI middleware (no framework needed, and nothing buffered): with tracing off
(orchestrator.runtime.tracing.enabled, looked at once a request) it hands the request on
untouched. On, it opens a server span per HTTP request, child of the request's
`traceparent` (a missing or malformed one: a new trace, never an error), named by the
method alone (a path holds ids: unbounded), with the path and the answer's status as
attributes. The client's start/emit spans inside it are its children, and the events
they write carry that trace on. Mount it around the app:

    app.add_middleware(TracingMiddleware)        # or TracingMiddleware(app)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from orchestrator.runtime import tracing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not tracing.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        parent = _header(scope, b"traceparent")
        attributes = {"http.request.method": method, "url.path": str(scope.get("path", ""))}
        with tracing.span(method, parent, attributes, "SERVER") as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message.get("status", 0))
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        tracing.failed(span, str(status), f"HTTP {status}")
                await send(message)

            await self.app(scope, receive, sending)


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value as text, the first of its name; None when absent or not
    ASCII (the propagator then starts a new trace)."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None
