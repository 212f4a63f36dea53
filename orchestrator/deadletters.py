"""Dead letters: events the applier could not apply, kept with the reason.

Listing them and putting them back (after deploying the missing version, or
fixing the guard) are the only operations; putting one back appends its
original event, with its original id, to its instance's inbox and removes
the letter, in one transaction.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from orchestrator.errors import InputError, UnknownInstance
from orchestrator.keys import Keys
from orchestrator.store import decode_hash


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def read(self, limit: int = 100) -> list[dict[str, Any]]:
        entries: Any = self.redis.xrange(self.keys.deadletters, count=limit)
        letters = []
        for entry_id, fields in entries:
            raw = decode_hash(fields)
            try:
                event: Any = json.loads(raw.get("event", ""))
            except ValueError:
                event = raw.get("event", "")
            letters.append(
                {
                    "id": entry_id.decode(),
                    "reason": raw.get("reason", ""),
                    "event": event,
                    "at": float(raw["at"]) if raw.get("at") else None,
                }
            )
        return letters

    def replay(self, letter_ids: list[str] | None) -> list[str]:
        """Put letters back into their inboxes (all when `letter_ids` is None)."""
        letters = {letter["id"]: letter for letter in self.read(limit=100_000)}
        chosen = list(letters) if letter_ids is None else letter_ids
        for letter_id in chosen:
            if letter_id not in letters:
                raise UnknownInstance(f"no dead letter with id {letter_id!r}")
            if not isinstance(letters[letter_id]["event"], dict):
                raise InputError(f"dead letter {letter_id} holds no valid event; cannot replay it")
        pipe = self.redis.pipeline(transaction=True)
        for letter_id in chosen:
            event = letters[letter_id]["event"]
            inbox = self.keys.inbox(self.keys.partition_of(str(event["instance"])))
            pipe.xadd(inbox, {"e": json.dumps(event, separators=(",", ":"))})
            pipe.xdel(self.keys.deadletters, letter_id)
        pipe.execute()
        return chosen
