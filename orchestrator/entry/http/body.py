"""Judging an /events request, before anything is done with it.

A request is one of three shapes (`event_arguments`): a CloudEvent 1.0 in
structured mode (Content-Type application/cloudevents+json), one in binary
mode (ce-* headers, the body its data), or the plain JSON body. A CloudEvent
is read by the cloudevents SDK, after its JSON was judged here as the plain
body is; then `type` is the event type, `id` the event id, `subject` the
instance (its id, or NAME=VALUE for a business key; none: the event may start
one), `data` the data (a JSON object), the extension `task` the task an
answer is for. `source` must be there but is not stored; other attributes
(time, dataschema, extensions) are ignored.

A body is refused with a 400 naming the fault and where it is: bytes that are
not UTF-8, JSON that does not parse (with its line and column), an integer
no Python process could read back, a non-finite number, nesting deeper than
MAX_DEPTH, a lone surrogate, data over the engine's limits, an unknown or
mistyped field, a missing or malformed CloudEvents attribute; data that is
not JSON is a 415. `Refused` is the answer to anything wrong, here and in the
endpoints; it changes nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

# cloudevents 2.x (pinned in pyproject) keeps its HTTP event API under cloudevents.v1
from cloudevents.v1.exceptions import GenericException as CloudEventError
from cloudevents.v1.http import from_http

from orchestrator.core.errors import InputError
from orchestrator.core.limits import check_data
from orchestrator.store.inbox import ID_ALPHABET, MAX_ID, check_id

MAX_DEPTH = 32
MAX_INT_DIGITS = 4300  # what every Python process can read back (sys.get_int_max_str_digits)
EVENT_FIELDS = frozenset({"type", "workflow", "key", "task", "data", "id"})
STRUCTURED = "application/cloudevents+json"  # a CloudEvent in the body, in the JSON format
REQUIRED = ("specversion", "id", "source", "type")
JSON_MEDIA = re.compile(r"(application|text)/([a-z0-9!#$&^_.-]+\+)?json")


class Refused(Exception):
    """Answer `status` with `{"error": message}` and do nothing else."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(body: bytes, what: str = "the body", root: str = "") -> dict[str, Any]:
    """The JSON object of an /events body, or Refused(400) naming what is wrong and where.

    `what` names the bytes in the answers; `root` is where the object sits in the event
    ("data" for a CloudEvent's binary-mode body), so a fault is named `data.items[2]`.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise Refused(400, f"{what} is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            400, f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise Refused(400, f"{what} is nested too deeply") from None
    except InputError as exc:
        raise Refused(400, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused(400, f"{what} must be a JSON object, not {type(value).__name__}")
    if _depth(value) > MAX_DEPTH:
        raise Refused(400, f"{what} is nested more than {MAX_DEPTH} levels deep")
    where = _lone_surrogate(value, what, root)
    if where is not None:
        raise Refused(
            400, f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        )
    try:
        check_data(value, what)
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


def _lone_surrogate(value: Any, what: str, root: str) -> str | None:
    """Where (e.g. `data.items[2]`) a string or a name holds a lone surrogate, if anywhere."""
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for name, child in item.items():
                if not _is_text(name):
                    return f"a field name in {path or what}"
                stack.append((child, f"{path}.{name}" if path else name))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str) and not _is_text(item):
            return path or what
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def emit_arguments(doc: dict[str, Any]) -> dict[str, Any]:
    """Client.emit's arguments from a request body, or Refused(400) naming the field."""
    try:
        return _arguments(doc)
    except InputError as exc:
        raise Refused(400, str(exc)) from None


def _arguments(doc: dict[str, Any]) -> dict[str, Any]:
    unknown = set(doc) - EVENT_FIELDS
    if unknown:
        known = ", ".join(sorted(EVENT_FIELDS))
        hint = (
            f"; a CloudEvent is sent as Content-Type {STRUCTURED}" if "specversion" in doc else ""
        )
        raise InputError(f"unknown field(s) {', '.join(sorted(unknown))} (fields: {known}){hint}")
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


# -- CloudEvents 1.0 -------------------------------------------------------------


def event_arguments(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Client.emit's arguments from an /events request, whichever its shape;
    Refused(400 or 415) naming the fault."""
    fields = _fields(headers)
    content_type = fields.get("content-type")
    media = _media_type(content_type or "")
    if media == STRUCTURED:
        return _structured(body)
    if media.startswith("application/cloudevents"):  # a batch, or a format other than JSON
        raise Refused(
            415, f"{media} is not accepted: send one CloudEvent, as {STRUCTURED} or in binary mode"
        )
    if any(name.startswith("ce-") for name in fields):
        return _binary(fields, body)
    return emit_arguments(parse_body(body))


def _fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Content-Type and the ce-* headers, by their lower-case names; one of them given
    twice is refused (Starlette's headers list each one given)."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        if name == "content-type" or name.startswith("ce-"):
            if name in found:
                raise Refused(400, f"the {name} header is given more than once")
            found[name] = value
    return found


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _in_body(name: str) -> str:
    return f'CloudEvent attribute "{name}"'


def _in_headers(name: str) -> str:
    return "the Content-Type header" if name == "datacontenttype" else f"the ce-{name} header"


def _structured(body: bytes) -> dict[str, Any]:
    """A CloudEvent in the body: judged as JSON as the plain body is, then read by the SDK."""
    envelope = parse_body(body, "the CloudEvent")
    if "data_base64" in envelope:
        raise Refused(400, 'CloudEvent "data_base64" is not accepted: send "data", a JSON object')
    attributes = {name: value for name, value in envelope.items() if name != "data"}
    _check_attributes(attributes, _in_body)
    data = envelope.get("data")
    if data is not None and not isinstance(data, dict):
        raise Refused(400, f'CloudEvent "data" must be a JSON object, not {type(data).__name__}')
    return _mapped(_read({"content-type": STRUCTURED}, body, data), data, _in_body)


def _binary(fields: dict[str, str], body: bytes) -> dict[str, Any]:
    """A CloudEvent in ce-* headers (values percent-decoded, as the HTTP binding says), its
    data the body: Content-Type (if given) says JSON, and the data is a JSON object."""
    headers = {
        name: unquote(value) if name.startswith("ce-") else value for name, value in fields.items()
    }
    attributes: dict[str, Any] = {
        name[3:]: value for name, value in headers.items() if name.startswith("ce-")
    }
    if "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    _check_attributes(attributes, _in_headers)
    data = parse_body(body, 'the body (the CloudEvent "data")', "data") if body else None
    return _mapped(_read(headers, body, data), data, _in_headers)


def _check_attributes(attributes: dict[str, Any], label: Callable[[str], str]) -> None:
    for name in REQUIRED:
        value = attributes.get(name)
        if value is None:
            raise Refused(400, f"{label(name)} is required")
        if not isinstance(value, str) or not value:
            raise Refused(400, f"{label(name)} must be a non-empty string")
    if attributes["specversion"] != "1.0":
        shown = attributes["specversion"][:20]
        raise Refused(400, f'{label("specversion")} must be "1.0", not {shown!r}')
    try:
        check_id(attributes["id"], label("id"))
    except InputError as exc:  # the engine's event ids: what its history and dedup hold
        raise Refused(400, str(exc)) from None
    for name in ("subject", "task", "datacontenttype"):
        value = attributes.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise Refused(400, f"{label(name)} must be a non-empty string")
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not JSON_MEDIA.fullmatch(_media_type(content_type)):
        shown = content_type[:60]
        raise Refused(
            415, f"{label('datacontenttype')} must be JSON (application/json), not {shown!r}"
        )


def _read(headers: dict[str, str], body: bytes, data: dict[str, Any] | None) -> dict[str, Any]:
    """The CloudEvent's attributes as the SDK reads them; its data is the one judged here."""
    try:
        event = from_http(headers, body, data_unmarshaller=lambda _raw: data)
        return dict(event.get_attributes())
    except (CloudEventError, TypeError, ValueError) as exc:
        raise Refused(400, f"not a valid CloudEvent: {str(exc)[:200]}") from None


def _mapped(
    attributes: dict[str, Any], data: dict[str, Any] | None, label: Callable[[str], str]
) -> dict[str, Any]:
    """Client.emit's arguments: the subject is an instance id, or NAME=VALUE a business key."""
    subject: str | None = attributes.get("subject")
    instance_id, key = subject, None
    if subject is not None:
        name, sep, value = subject.partition("=")
        if sep:
            if not name or not value:
                raise Refused(400, f"{label('subject')} {subject[:120]!r} must be NAME=VALUE")
            instance_id, key = None, (name, value)
        elif len(subject) > MAX_ID or not set(subject) <= ID_ALPHABET:
            raise Refused(
                400,
                f"{label('subject')} {subject[:120]!r} is neither an instance id (letters, "
                "digits, '_', '-') nor NAME=VALUE (a business key)",
            )
    return {
        "event_type": attributes["type"],
        "data": data,
        "instance_id": instance_id,
        "key": key,
        "task": attributes.get("task"),
        "event_id": attributes["id"],
    }
