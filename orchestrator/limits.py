"""Size limits on what enters the engine, checked at the door before any write.

An event's data (and a start's input) is at most MAX_DATA_BYTES of JSON,
nested at most MAX_DEPTH deep; a task's result at most MAX_RESULT_BYTES. Past
that, Redis memory, every history entry and every job payload would grow
with it, so the caller gets a clear error instead.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import InputError

MAX_DATA_BYTES = 64 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_DEPTH = 32


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
        size = len(json.dumps(data, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not JSON data: {exc}") from None
    if size > limit:
        raise InputError(f"{what} is {size:,} bytes of JSON; the limit is {limit:,}")
