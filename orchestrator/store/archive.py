"""A finished instance's history, folded into one compressed string.

While an instance runs, its history is a stream: appending is cheap. Once it
is finished, nothing but late copies of events is ever added, and a stream
spends far more on its structure than on a handful of entries (XADD reserves
a 4 KB node): some 1,100 bytes an entry for a 3-step instance. So the commit
that finishes an instance writes its whole history as one zlib-compressed
JSON list (about 100 bytes an entry) and deletes the stream. Entries are the
stream's field maps, unchanged; readers put archive and stream together
(orchestrator.store.instances.Store.history).
"""

from __future__ import annotations

import json
import zlib
from typing import Any


def pack(entries: list[dict[str, str]]) -> bytes:
    return zlib.compress(json.dumps(entries, separators=(",", ":")).encode())


def unpack(blob: bytes | None) -> list[dict[str, str]]:
    if not blob:
        return []
    entries: Any = json.loads(zlib.decompress(blob))
    return [{str(k): str(v) for k, v in entry.items()} for entry in entries]


def stream_entries(entries: Any) -> list[dict[str, str]]:
    """An XRANGE reply as field maps of text."""
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
