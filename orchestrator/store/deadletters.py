"""Dead letters: whatever the engine read back from Redis and could not use, kept
with the reason.

Why: one unreadable entry must never stop a partition. Every reader of the
engine's own data (the applier's inbox entries and instance hashes, the timers'
events, the watchdog's records, the notify-later set) moves an entry it cannot
parse here, in the same transaction that removes it from where it was, and goes
on with the rest.

A letter is a stream entry with these fields:

  source   where it was: inbox (an event; timers fire into the inbox too),
           notify-later, watchdog, retention
  key      the Redis key it was read from
  entry    its id there: stream entry id, set member's job id, hash field
  event    the raw entry as text (UTF-8; undecodable bytes as \\xNN escapes)
  raw      only when the bytes were not UTF-8: all of them, base64 (lossless)
  reason   what was wrong, and where
  at       when it was moved here (Unix seconds)

Listing them and putting them back (after deploying the missing version,
fixing the guard, or repairing a corrupt instance hash) are the only
operations. Putting one back appends its original event, with its original
id, to its instance's inbox and removes the letter, in one transaction; only
inbox letters holding a readable event can go back (a notification job or a
watchdog record is not an event).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from orchestrator.core.errors import InputError, UnknownInstance
from orchestrator.store.instances import decode_text
from orchestrator.store.keys import Keys

INBOX = "inbox"
REPLAY_CHUNK = 500  # letters put back per transaction: a long replay shows progress, holds
# no giant MULTI, and a crash midway leaves each letter either back in its inbox or listed


def dead_letter(source: str, key: str, entry: str, raw: bytes | str, reason: str) -> dict[str, str]:
    """The fields of one dead letter; `raw` exactly as read from Redis."""
    fields = {
        "source": source,
        "key": key,
        "entry": entry,
        "reason": reason,
        "at": repr(time.time()),
    }
    if isinstance(raw, str):
        fields["event"] = raw
        return fields
    try:
        fields["event"] = raw.decode()
    except UnicodeDecodeError:
        fields["event"] = raw.decode(errors="backslashreplace")
        fields["raw"] = base64.b64encode(raw).decode()
    return fields


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def read(self, limit: int = 100, start: str = "-") -> list[dict[str, Any]]:
        """Up to `limit` letters, oldest first, from the letter id `start` on (included)."""
        entries: Any = self.redis.xrange(self.keys.deadletters, min=start, count=limit)
        letters = []
        for entry_id, fields in entries:
            raw = {decode_text(k): decode_text(v) for k, v in fields.items()}
            try:
                event: Any = json.loads(raw.get("event", ""))
            except (ValueError, RecursionError):
                event = raw.get("event", "")
            letters.append(
                {
                    "id": decode_text(entry_id),
                    "reason": raw.get("reason", ""),
                    "event": event,
                    "at": _float(raw.get("at")),
                    "source": raw.get("source", INBOX),  # letters written before sources were
                    "key": raw.get("key", ""),
                    "entry": raw.get("entry", ""),
                    **({"raw": raw["raw"]} if raw.get("raw") else {}),
                }
            )
        return letters

    def replay(
        self,
        letter_ids: list[str] | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Put letters back into their inboxes (all when `letter_ids` is None).

        Every chosen letter is checked before anything is written; they then go back
        REPLAY_CHUNK per transaction, `progress(done, total)` called after each."""
        letters = {letter["id"]: letter for letter in self.read(limit=100_000)}
        if letter_ids is None:  # all: every one that can go back; the others stay listed
            chosen = [i for i, found in letters.items() if _replayable(found)]
        else:
            chosen = letter_ids
        for letter_id in chosen:
            if letter_id not in letters:
                raise UnknownInstance(f"no dead letter with id {letter_id!r}")
            found = letters[letter_id]
            if found["source"] != INBOX:
                raise InputError(
                    f"dead letter {letter_id} is a {found['source']} entry, not an event; "
                    "it cannot be replayed"
                )
            if not _replayable(found):
                raise InputError(f"dead letter {letter_id} holds no valid event; cannot replay it")
        for start in range(0, len(chosen), REPLAY_CHUNK):
            pipe = self.redis.pipeline(transaction=True)
            for letter_id in chosen[start : start + REPLAY_CHUNK]:
                event = letters[letter_id]["event"]
                inbox = self.keys.inbox(self.keys.partition_of(event["instance"]))
                pipe.xadd(inbox, {"e": json.dumps(event, separators=(",", ":"))})
                pipe.xdel(self.keys.deadletters, letter_id)
            pipe.execute()
            if progress is not None:
                progress(min(start + REPLAY_CHUNK, len(chosen)), len(chosen))
        return chosen


def _replayable(found: dict[str, Any]) -> bool:
    event = found["event"]
    return (
        found["source"] == INBOX
        and isinstance(event, dict)
        and isinstance(event.get("instance"), str)
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
