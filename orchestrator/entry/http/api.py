"""The HTTP API (FastAPI), mounted at /api in the server's Starlette app.

    GET  /api/me                               the caller's token: id, name, scope
    GET  /api/instances                        a page: ?workflow= &state= &status= &key=NAME=VALUE
                                               &limit=1..500 &cursor=
    POST /api/instances                        start {"workflow", "data"?, "id"?}         operate
    GET  /api/instances/{id}                   where it stands, its timers, last failure
    GET  /api/instances/{id}/history           every event applied, what it did
    GET  /api/instances/{id}/notifications     the ledger's records, with delivery status
    POST /api/instances/{id}/cancel            {"reason"?}                                operate
    POST /api/instances/{id}/retry                                                        operate
    POST /api/instances/{id}/replay            the replay check (writes nothing)
    POST /api/events                           emit {"type", "data"?, "instance_id"? | "key"?}
                                                                                          operate
    GET  /api/dead-letters                     a page, oldest first
    POST /api/dead-letters/{id}/replay         put one back into its inbox                operate
    GET  /api/recipients, /api/recipients/{id}
    GET  /api/workflows, /api/workflows/{name} with its graph as nodes and edges
    GET  /api/overview                         counts, failure rate, inbox lag, queue depths
    GET  /api/openapi.json                     this API's OpenAPI document (no token needed)

Every route needs an API token (orchestrator.entry.http.auth), of scope read
unless marked; the answers are JSON, refusals `{"error", "field"}`
(orchestrator.entry.http.api_errors). The routes are plain `def`s, so their
Redis work runs on the thread pool, off the event loop. `build_api` is what
the server mounts and what the tests call.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from orchestrator.entry.http import api_catalog, api_instances, api_operations, api_overview
from orchestrator.entry.http.api_errors import install
from orchestrator.entry.http.api_guard import Guard
from orchestrator.entry.http.auth import Authenticate, Read
from orchestrator.entry.http.door import Door
from orchestrator.store.tokens import Tokens

DESCRIPTION = """Start, steer and inspect workflow instances.

Every route needs `Authorization: Bearer TOKEN`, a token made with
`orchestrator tokens create NAME --scope read|operate|admin`. Reads need
`read`; start, emit, cancel, retry and dead-letter replay need `operate`.
Errors are `{"error": message, "field": name-or-null}`."""


def build_api(door: Door, max_body: int) -> FastAPI:
    """The API as an ASGI app of its own, to mount at /api."""
    api = FastAPI(
        title="orchestrator",
        description=DESCRIPTION,
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: none here
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.door = door
    install(api)
    api.include_router(api_instances.router)
    api.include_router(api_operations.router)
    api.include_router(api_catalog.router)
    api.include_router(api_overview.router)

    @api.get("/me", tags=["tokens"])
    def me(token: Read) -> dict[str, Any]:
        """The caller's token: what a console may show (a read token sees no buttons)."""
        return {"token": token.id, "name": token.name, "scope": token.scope}

    api.add_middleware(Authenticate, tokens=Tokens(door.app.redis, door.app.keys))
    api.add_middleware(Guard, max_body=max_body)  # the outer one: added last
    return api
