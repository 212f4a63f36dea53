"""The API's errors: one JSON shape, a status that fits, the CLI's words.

Every refusal is `{"error": message, "field": name-or-null}`. The engine's own
errors (orchestrator.core.errors) keep their messages, the ones the CLI
prints; their class gives the status:

    InputError, UnknownEventType     400  (SchemaViolation is an InputError)
    UnknownWorkflow, UnknownInstance 404
    InstanceExists, InvalidOperation 409
    ConfigurationError               503  (Redis unreachable, a setting unusable)
    anything else                    500  "internal error" (logged by its type only, by
                                          the guard: orchestrator.entry.http.auth)

FastAPI's validation failures are 422 naming the field (400 when the body is
not JSON at all); Starlette's own refusals (404, 405, 413) take the same
shape. A route names the field an engine error is about with `blame`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from orchestrator.core.errors import (
    ConfigurationError,
    InputError,
    InstanceExists,
    InvalidOperation,
    OrchestratorError,
    UnknownEventType,
    UnknownInstance,
    UnknownWorkflow,
)

STATUSES: tuple[tuple[type[OrchestratorError], int], ...] = (
    (InputError, 400),
    (UnknownEventType, 400),
    (UnknownWorkflow, 404),
    (UnknownInstance, 404),
    (InstanceExists, 409),
    (InvalidOperation, 409),
    (ConfigurationError, 503),
)


class ApiError(Exception):
    """Answer `status` with `{"error": message, "field": field}`, and do nothing else."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": message, "field": field},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def status_of(exc: OrchestratorError) -> int:
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status
    return 500


@contextmanager
def blame(field: str | None, **by_error: str | None) -> Iterator[None]:
    """Engine errors raised inside, as ApiError naming `field` (or, for an error class
    named in `by_error`, e.g. `UnknownWorkflow="workflow"`, that field)."""
    try:
        yield
    except OrchestratorError as exc:
        status = status_of(exc)
        if status >= 500:
            raise
        named = next((f for name, f in by_error.items() if type(exc).__name__ == name), field)
        raise ApiError(status, str(exc), named if status in (400, 404) else None) from None


def install(api: FastAPI) -> None:
    """The handlers that give every refusal the shape above."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.field, exc.headers)

    async def engine_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OrchestratorError)
        status = status_of(exc)
        if status == 500:
            raise exc  # a bug: the guard answers it (orchestrator.entry.http.auth)
        return error_response(status, str(exc))

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors: list[Any] = list(exc.errors())
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            detail = (first.get("ctx") or {}).get("error", "malformed")
            return error_response(400, f"the body is not valid JSON: {detail}")
        field = _field(first.get("loc", ()))
        message = str(first.get("msg", "invalid"))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        shown = f"{field}: {message}{more}" if field else f"{message}{more}"
        return error_response(422, shown, field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        message = detail or HTTPStatus(exc.status_code).phrase.lower()
        return error_response(exc.status_code, message[:1].lower() + message[1:], None, exc.headers)

    api.add_exception_handler(ApiError, api_error)
    api.add_exception_handler(OrchestratorError, engine_error)
    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(HTTPException, http_error)


def _field(loc: Any) -> str | None:
    """`("body", "data", "items", 2)` -> "data.items[2]"; `("query", "limit")` -> "limit"."""
    parts = list(loc)[1:] if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None
