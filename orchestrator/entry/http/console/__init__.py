"""The web console: a small single-page app served by `orchestrator serve`, a client of /api.

Why a package of static files: the console must work with no internet access and no
build step, so every asset (HTML, CSS, JavaScript modules) ships in the package's
`static/` folder and is served as written. `console_routes()` gives the routes the
HTTP app mounts: the page itself at `/` and its assets under `/console/`.

Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no
inline script or style, no framing), so data shown by the page can never run as
code even if some escaping were missed; the page sets text with `textContent` only.
The API token lives in the tab's sessionStorage and travels in the Authorization
header: never in a URL, never in a cookie.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Secured:
    """Adds the console's security headers to every answer of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() not in _LOWER
                ]
                headers.extend((k.lower().encode(), v.encode()) for k, v in HEADERS.items())
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured)


_LOWER = {k.lower() for k in HEADERS}


async def _index(request: Request) -> Response:
    # The page is small and changes with each release: revalidated every time.
    return FileResponse(STATIC / "index.html", headers={**HEADERS, "Cache-Control": "no-cache"})


def console_routes() -> list[BaseRoute]:
    """The console's routes: the page at `/`, its assets under `/console/`."""
    return [
        Route("/", _index, methods=["GET", "HEAD"]),
        Mount("/console", app=Secured(StaticFiles(directory=STATIC)), name="console"),
    ]
