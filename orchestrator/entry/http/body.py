"""Judging an /events body, before anything is done with it.

A body is refused with a 400 naming the fault and where it is: bytes that are
not UTF-8, JSON that does not parse (with its line and column), an integer
no Python process could read back, a non-finite number, nesting deeper than
MAX_DEPTH, a lone surrogate, data over the engine's limits, an unknown or
mistyped field. `Refused` is the answer to anything wrong, here and in the
endpoints; it changes nothing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from orchestrator.core.errors import InputError
from orchestrator.core.limits import check_data

MAX_DEPTH = 32
MAX_INT_DIGITS = 4300  # what every Python process can read back (sys.get_int_max_str_digits)
EVENT_FIELDS = frozenset({"type", "workflow", "key", "task", "data", "id"})


class Refused(Exception):
    """Answer `status` with `{"error": message}` and do nothing else."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(body: bytes) -> dict[str, Any]:
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
