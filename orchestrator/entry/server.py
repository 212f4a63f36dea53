"""`orchestrator serve`: the HTTP door for the outside world.

    POST /twilio/status   Twilio's delivery receipts -> the ledger, and an event to the workflow
    POST /events          a signed event from another system (e.g. task.completed) -> emit
    GET  /health          {"ok": true}

An ASGI app (Starlette) on uvicorn, the server the API and console will grow
on. Nothing is believed unsigned. Twilio's callbacks carry X-Twilio-Signature
over the URL Twilio called (ORCHESTRATOR_PUBLIC_URL + the path, since behind
a proxy this server cannot know it) and the form fields; /events requests
are signed like the webhook channel's (notifiers.webhook), are refused when
their timestamp is over five minutes off, and each signature is accepted
once. A refused request changes nothing and consumes nothing: its signature
is recorded only once the body has been judged well-formed, and released
again when the event cannot be emitted, so a correct retry is accepted.

Limits, so ordinary load and slow or hostile clients cannot take it down:
a listen backlog of BACKLOG; at most `max_connections` open connections (one
more is answered 503 and closed); each request must arrive whole, headers
and body, within `request_timeout` seconds of its first byte (else 408 and
the connection is closed); a body over MAX_BODY is refused 413 on its
Content-Length before a byte of it is read, and counted as it streams in.
Handlers run on a bounded thread pool (anyio's, 40 threads), so neither
threads nor connections grow with the number of clients.

A receipt moves the ledger record forward only (orchestrator.runtime.notify.ledger), so a
late `sent` after `delivered` changes nothing, and the event it sends has a
deterministic id, so a replayed receipt reaches the workflow once. The one
window left: a process that dies between recording a receipt and appending
its event loses that event (the ledger already holds the outcome).

    ORCHESTRATOR_PUBLIC_URL                     e.g. https://hooks.example.com
    TWILIO_AUTH_TOKEN / _FILE                   checks X-Twilio-Signature
    ORCHESTRATOR_EVENTS_SECRET / _FILE          the HMAC key of /events

An endpoint whose secret is not set answers 503. Logs name the method, the
path and the status; never a body, a header value or a secret.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from notifiers.base import Secret, secret
from notifiers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from orchestrator.core.errors import ConfigurationError, InputError, OrchestratorError
from orchestrator.core.limits import check_data
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.notify.ledger import Ledger

log = logging.getLogger("orchestrator.entry.server")

MAX_BODY = 256 * 1024
DRAIN_LIMIT = 4 * 1024 * 1024  # a refused body is read (and dropped) up to this, then cut
BACKLOG = 1024  # connections the kernel queues before accept()
MAX_CONNECTIONS = 1000  # open connections served at once (default of --max-connections)
REQUEST_TIMEOUT = 10.0  # seconds for a request to arrive whole (default of --request-timeout)
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open
REFUSED_GRACE = 1.0  # seconds a connection refused at the cap may take to read its 503
TOLERANCE = 300  # seconds a signed request's timestamp may be off
SEEN_FOR = 2 * TOLERANCE  # a signature is remembered for as long as its timestamp is accepted
MAX_DEPTH = 32
MAX_FORM_FIELDS = 200
MAX_INT_DIGITS = 4300  # what every Python process can read back (sys.get_int_max_str_digits)
SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
EVENT_FIELDS = frozenset({"type", "workflow", "key", "task", "data", "id"})
# Twilio's final statuses -> the ledger's. A provider "failed" comes after our "sent"
# (Twilio took the message, then could not send it), so it is recorded as undelivered.
RECEIPTS = {
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "undelivered",
}


@dataclass(frozen=True)
class ServerConfig:
    public_url: str | None = None
    twilio_token: Secret | None = None
    events_secret: Secret | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        public_url = (env.get("ORCHESTRATOR_PUBLIC_URL") or "").rstrip("/") or None
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "ORCHESTRATOR_PUBLIC_URL must be an http(s) URL such as https://example.com"
                )
        token = _secret(env, "TWILIO_AUTH_TOKEN")
        if token and public_url is None:
            raise ConfigurationError(
                "TWILIO_AUTH_TOKEN is set but ORCHESTRATOR_PUBLIC_URL is not: Twilio signs the "
                "URL it calls, so the server must know it"
            )
        events = _secret(env, "ORCHESTRATOR_EVENTS_SECRET")
        return cls(
            public_url=public_url,
            twilio_token=Secret(token) if token else None,
            events_secret=Secret(events) if events else None,
        )


def _secret(env: Mapping[str, str], name: str) -> str | None:
    try:
        return secret(env, name)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {name}_FILE: {type(exc).__name__}") from None


class Refused(Exception):
    """Answer `status` with `{"error": message}` and do nothing else."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the endpoints' work (synchronous: it runs on the thread pool) ----------------------


class Door:
    """What the endpoints do with a request that arrived whole."""

    def __init__(self, app: App, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.ledger = Ledger(app.redis, app.keys)
        self.client = app.client  # built here, once, not raced for by the first requests
        self.validator: Any = None
        if config.twilio_token:
            module = importlib.import_module("twilio.request_validator")
            self.validator = module.RequestValidator(config.twilio_token)

    # -- Twilio ---------------------------------------------------------------

    def twilio_status(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """`url`: the URL Twilio called (the public URL + the path and query it used)."""
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not a form") from None
        form = _Form()
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        signature = headers.get("X-Twilio-Signature", "")
        if not signature or not self.validator.validate(url, form, signature):
            raise Refused(403, "missing or wrong X-Twilio-Signature")
        sid, status = form.last("MessageSid"), form.last("MessageStatus")
        if not sid or not status:
            raise Refused(400, "MessageSid and MessageStatus are required")
        key = self.ledger.by_provider_id(sid)
        if key is None:
            log.warning("Twilio status %s for unknown message %s; ignored", status, sid)
            return 200, {"ok": True, "changed": False}
        outcome = RECEIPTS.get(status)
        if outcome is None:  # queued, sending, sent, ...: nothing to record
            return 200, {"ok": True, "changed": False}
        error_code = form.last("ErrorCode") or None
        moved = self.ledger.advance(key, outcome, provider_status=status, error_code=error_code)
        if moved:
            self._tell_workflow(key, outcome, sid, status, error_code)
        return 200, {"ok": True, "changed": moved}

    def _tell_workflow(
        self, key: str, outcome: str, sid: str, status: str, error_code: str | None
    ) -> None:
        record = self.ledger.get(key) or {}
        instance = record.get("instance")
        if not instance:
            return
        inbox = self.client.inbox
        data = {
            "key": key,
            "channel": record.get("channel", "sms"),
            "provider_id": sid,
            "status": status,
            "error_code": error_code,
        }
        event_type = f"notification.{outcome}"
        inbox.append(inbox.event(event_type, instance, data, event_id=f"{key}-{outcome}"))

    # -- signed events --------------------------------------------------------

    def events(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Check the signature, judge the body, then consume the signature and emit.

        The signature is recorded only for a body judged well-formed, and released
        when the event is not emitted, so whatever fails leaves nothing behind.
        """
        key = self.config.events_secret
        assert key is not None
        found = self._check_signature(key, headers, body)
        args = _emit_arguments(_parse_body(body))
        seen = f"{self.app.keys.namespace}:seen-signature:{found}"
        if not self.app.redis.set(seen, 1, nx=True, ex=SEEN_FOR):
            raise Refused(403, "replayed request (this signature was used already)")
        try:
            emitted = self.client.emit(**args)
        except OrchestratorError as exc:
            self.app.redis.delete(seen)
            raise Refused(400, str(exc)) from None
        except BaseException:
            self.app.redis.delete(seen)
            raise
        answer: dict[str, Any] = {
            "event_id": emitted.event_id or None,
            "instance": emitted.instance_id or None,
            "started": emitted.started,
        }
        if emitted.note:
            answer["note"] = emitted.note
        return 202, answer

    @staticmethod
    def _check_signature(key: str, headers: Mapping[str, str], body: bytes) -> str:
        """The signature's hex digest, when it is fresh and right; else Refused(403)."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise Refused(403, f"missing or malformed {TIMESTAMP_HEADER}")
        if abs(time.time() - int(timestamp)) > TOLERANCE:
            raise Refused(403, f"stale {TIMESTAMP_HEADER} (more than {TOLERANCE}s off)")
        found = SIGNATURE.fullmatch(signature)
        if found is None or not verify(key, timestamp, body, signature):
            raise Refused(403, f"missing or wrong {SIGNATURE_HEADER}")
        return found.group(1)


class _Form(dict[str, list[str]]):
    """Form fields as Twilio's validator reads them: every value of a repeated field."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def last(self, name: str) -> str:
        return self.get(name, [""])[-1]


# -- judging a body ---------------------------------------------------------------


def _parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of an /events body, or Refused(400) naming what is wrong and where."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise Refused(400, f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise Refused(400, "the body is nested too deeply") from None
    except InputError as exc:
        raise Refused(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused(400, f"the body must be a JSON object, not {type(value).__name__}")
    if _depth(value) > MAX_DEPTH:
        raise Refused(400, f"the body is nested more than {MAX_DEPTH} levels deep")
    where = _lone_surrogate(value)
    if where is not None:
        raise Refused(
            400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        )
    try:
        check_data(value, "the body")
    except InputError as exc:
        raise Refused(400, str(exc)) from None
    return value


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise InputError(f"an integer of {digits:,} digits (the limit is {MAX_INT_DIGITS:,})")
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise InputError(f"the number {shown} is out of range (a 64-bit float)")
    return value


def _constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number; send a number or a string")


def _lone_surrogate(value: Any) -> str | None:
    """Where (e.g. `data.items[2]`) a string or a name holds a lone surrogate, if anywhere."""
    stack: list[tuple[Any, str]] = [(value, "the body")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for name, child in item.items():
                child_path = path + "." + name if path != "the body" else name
                if not _is_text(name):
                    return f"a field name in {path}"
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str) and not _is_text(item):
            return path
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _emit_arguments(doc: dict[str, Any]) -> dict[str, Any]:
    """Client.emit's arguments from a request body, or Refused(400) naming the field."""
    try:
        return _arguments(doc)
    except InputError as exc:
        raise Refused(400, str(exc)) from None


def _arguments(doc: dict[str, Any]) -> dict[str, Any]:
    unknown = set(doc) - EVENT_FIELDS
    if unknown:
        known = ", ".join(sorted(EVENT_FIELDS))
        raise InputError(f"unknown field(s) {', '.join(sorted(unknown))} (fields: {known})")
    event_type = doc.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InputError('"type" (the event type) is required and must be a string')
    for name in ("workflow", "task", "id"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise InputError(f'"{name}" must be a string')
    data = doc.get("data")
    if data is not None and not isinstance(data, dict):
        raise InputError('"data" must be a JSON object')
    return {
        "event_type": event_type,
        "data": data,
        "instance_id": doc.get("workflow") or None,
        "key": _key(doc.get("key")),
        "task": doc.get("task") or None,
        "event_id": doc.get("id") or None,
    }


def _key(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        name, sep, found = value.partition("=")
    elif isinstance(value, dict) and set(value) == {"name", "value"}:
        name, sep, found = value["name"], "=", value["value"]
        if isinstance(found, int | float) and not isinstance(found, bool):
            found = str(found)
    else:
        name, sep, found = "", "", ""
    if not sep or not isinstance(name, str) or not isinstance(found, str) or not name or not found:
        raise InputError('"key" must be "NAME=VALUE" or {"name": NAME, "value": VALUE}')
    return name, found


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, level + 1) for child in children)
    return deepest


# -- the ASGI app -------------------------------------------------------------------


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

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/twilio/status", twilio_status, methods=["POST"]),
            Route("/events", events, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
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


# -- connections: a cap, and a deadline on each request -------------------------------


def _canned(status: int, message: str) -> bytes:
    """A whole HTTP answer, for a connection the app never sees (then closed)."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a connection cap and a deadline on each request.

    `limited()` makes one subclass per server, holding its limits and its count.
    """

    max_connections: ClassVar[int] = MAX_CONNECTIONS
    request_timeout: ClassVar[float] = REQUEST_TIMEOUT
    open: ClassVar[int] = 0  # connections served now (those refused at the cap not counted)
    warned: ClassVar[float] = 0.0  # when a refusal was last logged (one line a second at most)

    @classmethod
    def limited(cls, max_connections: int, request_timeout: float) -> type[LimitedProtocol]:
        limits = {"max_connections": max_connections, "request_timeout": request_timeout}
        return type("Protocol", (cls,), {**limits, "open": 0, "warned": 0.0})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.refused = False
        self.counted = False
        self.drained = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        kind = type(self)
        if kind.open >= kind.max_connections:
            self._refuse(transport)
            return
        kind.open += 1
        self.counted = True
        self._arm()  # a client that connects and says nothing is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.counted:
            type(self).open -= 1
            self.counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped, so the close sends no reset over the 503
        if self.deadline is None:
            self._arm()  # the first bytes of a request: its deadline starts
        if self._draining():
            self.drained += len(data)
            if self.drained > DRAIN_LIMIT:
                self.transport.close()
                return
        super().data_received(data)
        if self._between_requests():
            self._disarm()

    def on_response_complete(self) -> None:
        if self._between_requests():
            self._disarm()
        super().on_response_complete()

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 at once, read and drop what the client sends, close after a grace."""
        kind = type(self)
        self.refused = True
        now = time.monotonic()
        if now - kind.warned >= 1:
            kind.warned = now
            log.warning("connections refused: %d open (--max-connections)", kind.open)
        limit = kind.max_connections
        transport.write(_canned(503, f"the server is at its limit of {limit} connections"))
        if transport.can_write_eof():
            transport.write_eof()
        self.deadline = self.loop.call_later(REFUSED_GRACE, transport.close)

    def _draining(self) -> bool:
        """Answered already (e.g. 413), while the client is still sending its body."""
        return (
            self.cycle is not None
            and self.cycle.response_complete
            and self.conn.their_state is h11.SEND_BODY
        )

    def _between_requests(self) -> bool:
        """The client's request is all in (or none has begun): its deadline is over."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return not self.conn.trailing_data[0]
        return state is h11.DONE or state is h11.MUST_CLOSE or state is h11.CLOSED

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(type(self).request_timeout, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if not answering and not self._draining():
            seconds = type(self).request_timeout
            log.info("request cut at its %gs deadline (--request-timeout)", seconds)
            message = f"the request did not arrive whole within {seconds:g}s"
            self.transport.write(_canned(408, message))
        self.transport.close()


# -- the server -------------------------------------------------------------------------


class OrchestratorServer:
    """The ASGI app on uvicorn, bound to its socket; `serve_forever()` runs it."""

    def __init__(
        self,
        sock: socket.socket,
        app: App,
        config: ServerConfig,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError("max_connections must be 1 or more")
        if not 0 < request_timeout <= 3600:
            raise ConfigurationError("request_timeout must be over 0 and at most 3600 seconds")
        self.socket = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self.server_port = self.server_address[1]
        self.config = config
        self.door = Door(app, config)
        self.asgi = build_asgi(self.door)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.protocol = LimitedProtocol.limited(max_connections, request_timeout)
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                self.asgi,
                http=self.protocol,
                ws="none",
                lifespan="off",
                log_config=None,
                access_log=False,
                proxy_headers=False,
                server_header=False,
                backlog=BACKLOG,
                timeout_keep_alive=KEEP_ALIVE,
                timeout_graceful_shutdown=min(30, max(1, math.ceil(request_timeout))),
            )
        )
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def open_connections(self) -> int:
        """Connections being served now (not those refused at the cap)."""
        return self.protocol.open

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve until `shutdown()` (another thread) or SIGINT/SIGTERM (the main thread).

        A signal is raised again once the server has stopped, so the caller's
        handler (KeyboardInterrupt by default) still runs.
        """
        self._stopped.clear()
        self._running.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._running.clear()
            self._stopped.set()

    def shutdown(self, timeout: float = 30) -> None:
        """Stop serving (open requests get up to the request timeout to finish)."""
        self._uvicorn.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    app: App,
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
) -> OrchestratorServer:
    """Bind the server (port 0: any free one); run it with `serve_forever()`."""
    config = ServerConfig.from_env(os.environ if env is None else env)
    app.keys  # connect now: a bad Redis URL fails before the port is bound  # noqa: B018
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return OrchestratorServer(
            sock, app, config, max_connections=max_connections, request_timeout=request_timeout
        )
    except BaseException:
        sock.close()
        raise
