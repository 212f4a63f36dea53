"""What the endpoints do with a request that arrived whole (on the thread pool).

Twilio's callbacks carry X-Twilio-Signature over the URL Twilio called
(ORCHESTRATOR_PUBLIC_URL + the path, since behind a proxy this server cannot
know it) and the form fields. /events requests are signed like the webhook
channel's (notifiers.webhook), are refused when their timestamp is over
TOLERANCE seconds off, and each signature is accepted once. The signature
covers the body: a CloudEvent in structured mode is signed whole, one in
binary mode its data only (its ce-* headers are not signed). A refused request
changes nothing and consumes nothing: its signature is recorded only once the
body has been judged well-formed, and released again when the event cannot
be emitted, so a correct retry is accepted.

A receipt moves the ledger record forward only (orchestrator.runtime.notify.ledger),
so a late `sent` after `delivered` changes nothing, and the event it sends has
a deterministic id, so a replayed receipt reaches the workflow once. The one
window left: a process that dies between recording a receipt and appending
its event loses that event (the ledger already holds the outcome).
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends
from starlette.requests import Request

from notifiers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from orchestrator.core.errors import OrchestratorError
from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.body import Refused, event_arguments
from orchestrator.entry.http.config import ServerConfig
from orchestrator.runtime.notify.ledger import Ledger

log = logging.getLogger("orchestrator.entry.http")

TOLERANCE = 300  # seconds a signed request's timestamp may be off
SEEN_FOR = 2 * TOLERANCE  # a signature is remembered for as long as its timestamp is accepted
MAX_FORM_FIELDS = 200
SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")
# Twilio's final statuses -> the ledger's. A provider "failed" comes after our "sent"
# (Twilio took the message, then could not send it), so it is recorded as undelivered.
RECEIPTS = {
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "undelivered",
}


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
        args = event_arguments(headers, body)
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


def door_of(request: Request) -> Door:
    """The door of the API a request came to (a dependency of every API route)."""
    door: Door = request.app.state.door
    return door


TheDoor = Annotated[Door, Depends(door_of)]  # an API route's parameter: the door
