"""Size limits on what enters the engine, checked at the door before any write.

An event's data (and a start's input) is at most MAX_DATA_BYTES of JSON,
nested at most MAX_DEPTH deep; a task's result at most MAX_RESULT_BYTES. Past
that, Redis memory, every history entry and every job payload would grow
with it, so the caller gets a clear error instead.

Text is checked as well as size: a string holding a lone surrogate (`"\ud800"` in
JSON, or bytes that are not UTF-8 in a command's arguments) is no Unicode text, and
Redis, every reader and every log would choke on it later. JSON read from a file or
a stream is read at most MAX_TEXT_BYTES (+1, to tell), never whole.
"""

from __future__ import annotations

import json
import re
from typing import Any, BinaryIO

from orchestrator.core.errors import InputError

MAX_DATA_BYTES = 64 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_TEXT_BYTES = 4 * MAX_DATA_BYTES  # JSON text for MAX_DATA_BYTES of data: room for layout

_SURROGATE = re.compile("[\ud800-\udfff]")


def depth(value: Any) -> int:
    """How deeply a JSON value nests (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        else:
            continue
        deepest = max(deepest, level + 1)
    return deepest


def check_data(data: Any, what: str, limit: int = MAX_DATA_BYTES) -> None:
    """InputError when `data` is nested too deeply, is not JSON, or is too large."""
    if depth(data) > MAX_DEPTH:
        raise InputError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        text = json.dumps(data, allow_nan=False)  # ASCII: \uXXXX escapes, one byte a character
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not JSON data: {exc}") from None
    if len(text) > limit:
        raise InputError(f"{what} is {len(text):,} bytes of JSON; the limit is {limit:,}")
    if "\\ud" in text:  # a surrogate, alone or one of a valid pair (an emoji)
        where = surrogate_in(data)
        if where is not None:
            raise InputError(
                f"{what} holds text that is not valid Unicode: a lone surrogate {where[:120]}"
            )


def surrogate_in(value: Any) -> str | None:
    """Where a JSON value holds a lone surrogate ("at items[2].name", "in the key '\\udcff'")."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return f"at {path}" if path else "in the text"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"in the key {key.encode('utf-8', 'backslashreplace').decode()!r}"
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def read_limited(stream: BinaryIO, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """At most `limit` bytes from a stream, or an InputError: never more than limit + 1 read
    (`--input @/dev/zero` is refused at once)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(
            f"{what} is more than {limit:,} bytes of text; the limit is {MAX_DATA_BYTES:,} "
            "bytes of JSON"
        )
    return data
