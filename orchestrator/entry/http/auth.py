"""Who calls the API: a bearer token, checked before anything else is done.

    Authorization: Bearer orch_<id>_<secret>      (made by `orchestrator tokens create`)

`Authenticate` is a pure-ASGI layer in front of the API: a request without a
token, or with one that is unknown or revoked, is answered 401 (with
`WWW-Authenticate: Bearer`) before its body is read or a route runs; the
check (one HGET, orchestrator.store.tokens) runs on the thread pool. The
token's record goes on the request's state, and each route then asks for
the scope it needs with `need("read" | "operate" | "admin")`: too low a
scope is a 403 naming the one needed. The OpenAPI document is the one path
open without a token: it holds the API's shape, no data. A token is never
logged nor echoed; a refusal is logged by its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.entry.http.api_errors import ApiError, error_response
from orchestrator.store.tokens import SCOPES, Token, Tokens, allows

log = logging.getLogger("orchestrator.entry.http")

OPEN_PATHS = frozenset({"/openapi.json"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `orchestrator tokens create NAME --scope read|operate|admin`.",
)

Security = Depends(bearer)  # the scheme, so the OpenAPI document shows it


class Authenticate:
    """401 for a request to the API without a valid token; else its record on the state."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        found = await self._token(Headers(scope=scope).get("authorization", ""))
        if isinstance(found, str):
            log.warning("%s %s refused: %s", scope["method"], scope["path"][:200], found)
            await error_response(401, found, None, CHALLENGE)(scope, receive, send)
            return
        scope.setdefault("state", {})["token"] = found
        await self.app(scope, receive, send)

    async def _token(self, header: str) -> Token | str:
        """The caller's token, or why there is none."""
        kind, _, given = header.partition(" ")
        if not header:
            return "an API token is required (Authorization: Bearer TOKEN)"
        if kind.lower() != "bearer" or not given.strip():
            return "the Authorization header must be: Bearer TOKEN"
        token = await run_in_threadpool(self.tokens.authenticate, given.strip())
        if token is None:
            return "unknown or revoked API token"
        return token


def need(scope: str) -> Callable[..., Token]:
    """A dependency: the caller's token, when its scope allows what needs `scope`."""
    assert scope in SCOPES

    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security]
    ) -> Token:
        token: Any = request.scope.get("state", {}).get("token")
        if not isinstance(token, Token):  # only a route mounted without Authenticate
            raise ApiError(401, "an API token is required", None, CHALLENGE)
        if not allows(token.scope, scope):
            raise ApiError(
                403, f"this needs a token of scope {scope} or higher; this one is {token.scope}"
            )
        return token

    return check


Read = Annotated[Token, Depends(need("read"))]
Operate = Annotated[Token, Depends(need("operate"))]


def _route_path(scope: Scope) -> str:
    """The path inside the API (without the /api it is mounted at)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path
