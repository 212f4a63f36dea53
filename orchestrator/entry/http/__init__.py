"""`orchestrator serve`: the HTTP door for the outside world.

    /api/...              the JSON API, with API tokens (api: its routes and OpenAPI document)
    POST /twilio/status   Twilio's delivery receipts -> the ledger, and an event to the workflow
    POST /events          a signed event from another system (e.g. task.completed) -> emit
    GET  /health          {"ok": true}

An ASGI app (Starlette) on uvicorn, the server the API and console will grow
on. Nothing is believed unsigned, and no slow or hostile client can take it
down. Its parts, each small enough to read at once:

    config     ServerConfig: the public URL and the two secrets, from `settings.http`
    body       judging an /events body, and `Refused`, the answer to anything wrong
    door       what the endpoints do (signatures, the ledger, emitting), on the thread pool
    app        the Starlette app: routes, bounded body reading, JSON answers, access log
    api        the API (FastAPI), mounted at /api: api_instances, api_operations (dead
               letters), api_catalog (workflows, recipients), api_overview, api_errors
               (one error shape), api_guard (body limit, failures), auth (tokens, scopes)
    protocol   uvicorn's h11 protocol with a connection cap and a per-request deadline
    server     the app on uvicorn, bound to its socket: make_server()

It may import the runtime, the store and the core, as the other entry
points do, and `notifiers` for the webhook signature scheme. Logs name the
method, the path and the status; never a body, a header value or a secret.
"""
