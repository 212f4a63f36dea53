"""`orchestrator serve`: the HTTP door for the outside world.

    POST /twilio/status   Twilio's delivery receipts -> the ledger, and an event to the workflow
    POST /events          a signed event from another system (e.g. task.completed) -> emit
    GET  /health          {"ok": true}

Nothing is believed unsigned. Twilio's callbacks carry X-Twilio-Signature
over the URL Twilio called (ORCHESTRATOR_PUBLIC_URL + the path, since behind
a proxy this server cannot know it) and the form fields; /events requests
are signed like the webhook channel's (notifiers.webhook), are refused when
their timestamp is over five minutes off, and each signature is accepted
once. A refused request changes nothing.

A receipt moves the ledger record forward only (notifiers.ledger), so a
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

import importlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from notifiers.base import Secret, secret
from notifiers.ledger import Ledger
from notifiers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from orchestrator.bootstrap import App
from orchestrator.errors import ConfigurationError, InputError, OrchestratorError
from orchestrator.inbox import parse_json_object

log = logging.getLogger("orchestrator.server")

MAX_BODY = 256 * 1024
DRAIN_LIMIT = 4 * 1024 * 1024  # read (and drop) a too-large body up to this, so the 413 arrives
TOLERANCE = 300  # seconds a signed request's timestamp may be off
SEEN_FOR = 2 * TOLERANCE  # a signature is remembered for as long as its timestamp is accepted
MAX_DEPTH = 32
MAX_FORM_FIELDS = 200
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


class OrchestratorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.ledger = Ledger(app.redis, app.keys)
        self.client = app.client  # built here, once, not raced for by the first requests
        self.validator: Any = None
        if config.twilio_token:
            module = importlib.import_module("twilio.request_validator")
            self.validator = module.RequestValidator(config.twilio_token)
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer: one line, not socketserver's traceback on stderr."""
        log.warning("connection from %s failed mid-request", client_address[0])
        log.debug("the failure", exc_info=True)


def make_server(
    app: App, host: str, port: int, env: Mapping[str, str] | None = None
) -> OrchestratorServer:
    """Bind the server (port 0: any free one); run it with `serve_forever()`."""
    config = ServerConfig.from_env(os.environ if env is None else env)
    app.keys  # connect now: a bad Redis URL fails before the port is bound  # noqa: B018
    return OrchestratorServer((host, port), app, config)


class Handler(BaseHTTPRequestHandler):
    server: OrchestratorServer
    timeout = 10  # seconds a client may take to send its request
    server_version = "orchestrator"
    sys_version = ""

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/health":
            self._answer(200, {"ok": True})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        routes = {"/twilio/status": self._twilio_status, "/events": self._events}
        route = routes.get(urlsplit(self.path).path)
        try:
            if route is None:
                raise Refused(404, "not found")
            status, doc = route()
        except Refused as refused:
            if refused.status == 403:
                log.warning("%s %s refused: %s", self.command, self._path(), refused.message)
            status, doc = refused.status, {"error": refused.message}
        except Exception as exc:  # a bug or Redis gone: say little, log the type
            log.error("%s %s failed: %s", self.command, self._path(), type(exc).__name__)
            log.debug("the failure", exc_info=True)
            status, doc = 500, {"error": "internal error"}
        self._answer(status, doc)

    # -- Twilio ---------------------------------------------------------------

    def _twilio_status(self) -> tuple[int, dict[str, Any]]:
        validator, public_url = self.server.validator, self.server.config.public_url
        if validator is None or public_url is None:
            raise Refused(503, "Twilio callbacks are not configured (TWILIO_AUTH_TOKEN)")
        body = self._body()
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not a form") from None
        form = _Form()
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        signature = self.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(public_url + self.path, form, signature):
            raise Refused(403, "missing or wrong X-Twilio-Signature")
        sid, status = form.last("MessageSid"), form.last("MessageStatus")
        if not sid or not status:
            raise Refused(400, "MessageSid and MessageStatus are required")
        key = self.server.ledger.by_provider_id(sid)
        if key is None:
            log.warning("Twilio status %s for unknown message %s; ignored", status, sid)
            return 200, {"ok": True, "changed": False}
        outcome = RECEIPTS.get(status)
        if outcome is None:  # queued, sending, sent, ...: nothing to record
            return 200, {"ok": True, "changed": False}
        error_code = form.last("ErrorCode") or None
        moved = self.server.ledger.advance(
            key, outcome, provider_status=status, error_code=error_code
        )
        if moved:
            self._tell_workflow(key, outcome, sid, status, error_code)
        return 200, {"ok": True, "changed": moved}

    def _tell_workflow(
        self, key: str, outcome: str, sid: str, status: str, error_code: str | None
    ) -> None:
        record = self.server.ledger.get(key) or {}
        instance = record.get("instance")
        if not instance:
            return
        inbox = self.server.client.inbox
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

    def _events(self) -> tuple[int, dict[str, Any]]:
        key = self.server.config.events_secret
        if key is None:
            raise Refused(503, "/events is not configured (ORCHESTRATOR_EVENTS_SECRET)")
        body = self._body()
        self._check_signature(key, body)
        try:
            doc = parse_json_object(body.decode(), "the body")
        except UnicodeDecodeError:
            raise Refused(400, "the body is not UTF-8 text") from None
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        try:
            args = _emit_arguments(doc)
            emitted = self.server.client.emit(**args)
        except OrchestratorError as exc:
            raise Refused(400, str(exc)) from None
        answer: dict[str, Any] = {
            "event_id": emitted.event_id or None,
            "instance": emitted.instance_id or None,
            "started": emitted.started,
        }
        if emitted.note:
            answer["note"] = emitted.note
        return 202, answer

    def _check_signature(self, key: str, body: bytes) -> None:
        timestamp = self.headers.get(TIMESTAMP_HEADER, "")
        signature = self.headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise Refused(403, f"missing or malformed {TIMESTAMP_HEADER}")
        if abs(time.time() - int(timestamp)) > TOLERANCE:
            raise Refused(403, f"stale {TIMESTAMP_HEADER} (more than {TOLERANCE}s off)")
        found = SIGNATURE.fullmatch(signature)
        if found is None or not verify(key, timestamp, body, signature):
            raise Refused(403, f"missing or wrong {SIGNATURE_HEADER}")
        seen = f"{self.server.app.keys.namespace}:seen-signature:{found.group(1)}"
        if not self.server.app.redis.set(seen, 1, nx=True, ex=SEEN_FOR):
            raise Refused(403, "replayed request (this signature was used already)")

    # -- plumbing -------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise Refused(411, "send the body with a Content-Length")
        length = self.headers.get("Content-Length", "")
        if not length.isascii() or not length.isdigit():
            raise Refused(411, "a Content-Length is required")
        size = int(length)
        if size > MAX_BODY:
            self.close_connection = True
            if size <= DRAIN_LIMIT:  # else the client may see a reset instead of the answer
                while size > 0 and (chunk := self.rfile.read(min(size, 65536))):
                    size -= len(chunk)
            raise Refused(413, f"the body is over {MAX_BODY} bytes")
        try:
            body = self.rfile.read(size)
        except TimeoutError:
            self.close_connection = True
            raise Refused(408, "the body did not arrive in time") from None
        if len(body) < size:
            raise Refused(400, "the body is shorter than its Content-Length")
        return body

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def _path(self) -> str:
        return urlsplit(self.path).path[:200]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s", self.command, self._path(), code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _Form(dict[str, list[str]]):
    """Form fields as Twilio's validator reads them: every value of a repeated field."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def last(self, name: str) -> str:
        return self.get(name, [""])[-1]


def _emit_arguments(doc: dict[str, Any]) -> dict[str, Any]:
    """Client.emit's arguments from a request body, or InputError naming the field."""
    unknown = set(doc) - EVENT_FIELDS
    if unknown:
        known = ", ".join(sorted(EVENT_FIELDS))
        raise InputError(f"unknown field(s) {', '.join(sorted(unknown))} (fields: {known})")
    if _depth(doc) > MAX_DEPTH:
        raise InputError(f"the body is nested more than {MAX_DEPTH} levels deep")
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
