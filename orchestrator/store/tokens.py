"""API tokens: who may call the HTTP API, and with which scope.

A token is shown once, when it is made (`orchestrator tokens create`), and
never stored: Redis holds the SHA-256 of it. A plain hash is right here, not
a password hash: the token is 32 random bytes, so there is nothing to guess,
and checking it costs one hash per request. It looks like

    orch_<id>_<secret>       id: 12 hex digits, the record's key; secret: token_urlsafe(32)

so a request's token names its record, and the check is one HGET and one
constant-time comparison (hmac.compare_digest).

`N:tokens` (a hash) maps each id to its record as JSON: name, scope, the
hash, created, last_used. `last_used` is written at most once a minute per
token and process (TOUCH_EVERY), by a script that writes only a record still
there, so a token revoked meanwhile stays revoked.

Scopes are ordered: read < operate < admin; a token may do what its scope
and every lower one allow.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.core.errors import InputError, InstanceExists, UnknownInstance
from orchestrator.store.keys import Keys

SCOPES: tuple[str, ...] = ("read", "operate", "admin")
PREFIX = "orch_"
TOUCH_EVERY = 60.0  # seconds between writes of a token's last_used, per process
MAX_NAME = 100
_ID = re.compile(r"[0-9a-f]{12}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@:/-]*")

# KEYS[1]: N:tokens; ARGV: id, time. Only a record still there is touched.
_TOUCH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cjson.decode(raw)
record['last_used'] = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
return 1
"""


@dataclass(frozen=True)
class Token:
    """A token's record, without its hash: what listings and the API show."""

    id: str
    name: str
    scope: str
    created: float
    last_used: float | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created": self.created,
            "last_used": self.last_used,
        }


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r} (scopes: {', '.join(SCOPES)})")
    return scope


def allows(scope: str, needed: str) -> bool:
    """Whether a token of `scope` may do what needs `needed` (read < operate < admin)."""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._touch = client.register_script(_TOUCH)
        self._touched: dict[str, float] = {}

    def create(self, name: str, scope: str) -> tuple[Token, str]:
        """A new token named `name`: its record and the token itself (shown once)."""
        name = name.strip()
        if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
            raise InputError(
                f"a token name is 1 to {MAX_NAME} letters, digits, spaces or ._@:/- "
                f"(starting with a letter or digit), not {name[:MAX_NAME]!r}"
            )
        check_scope(scope)
        token_id = secrets.token_hex(6)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        created = time.time()
        record = {"name": name, "scope": scope, "hash": digest(token), "created": created}
        key = self.keys.tokens
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw: dict[bytes, bytes] = pipe.hgetall(key)  # type: ignore[assignment]
                    if any(t.name == name for t in self._read(raw)):
                        raise InstanceExists(f"a token named {name!r} exists already")
                    pipe.multi()
                    pipe.hsetnx(key, token_id, json.dumps(record))
                    (added,) = pipe.execute()
                    if added:
                        return Token(token_id, name, scope, created, None), token
                    # the same 48 random bits twice: draw again
                    token_id = secrets.token_hex(6)
                    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
                    record["hash"] = digest(token)
                except redis.WatchError:
                    continue

    def list(self) -> list[Token]:
        """Every token, oldest first."""
        raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.tokens)  # type: ignore[assignment]
        return sorted(self._read(raw), key=lambda t: (t.created, t.id))

    def revoke(self, token_id: str) -> Token:
        """Forget a token: requests with it are refused from now on."""
        found = self._get(token_id)
        if found is None or not self.redis.hdel(self.keys.tokens, token_id):
            raise UnknownInstance(
                f"no token with id {token_id[:40]!r} (see `orchestrator tokens list`)"
            )
        self._touched.pop(token_id, None)
        return found[0]

    def authenticate(self, token: str) -> Token | None:
        """The token's record when `token` is one of ours and not revoked; else None."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        token_id, sep, rest = token[len(PREFIX) :].partition("_")
        if not sep or not rest or not _ID.fullmatch(token_id):
            return None
        found = self._get(token_id)
        if found is None or not hmac.compare_digest(found[1], digest(token)):
            return None
        now = time.time()
        if now - self._touched.get(token_id, 0.0) >= TOUCH_EVERY:
            self._touched[token_id] = now
            self._touch(keys=[self.keys.tokens], args=[token_id, repr(now)])
        return found[0]

    def _get(self, token_id: str) -> tuple[Token, str] | None:
        if not _ID.fullmatch(token_id):
            return None
        raw: bytes | None = self.redis.hget(self.keys.tokens, token_id)  # type: ignore[assignment]
        return _parse(token_id, raw) if raw is not None else None

    @staticmethod
    def _read(raw: dict[bytes, bytes]) -> builtins.list[Token]:
        found = (_parse(k.decode(errors="replace"), v) for k, v in raw.items())
        return [parsed[0] for parsed in found if parsed is not None]


def _parse(token_id: str, raw: bytes) -> tuple[Token, str] | None:
    """A record and its hash; None when it is not one (never an error: refused as unknown)."""
    try:
        doc = json.loads(raw)
        token = Token(
            id=token_id,
            name=str(doc["name"]),
            scope=str(doc["scope"]),
            created=float(doc["created"]),
            last_used=float(doc["last_used"]) if doc.get("last_used") is not None else None,
        )
        return token, str(doc["hash"])
    except (ValueError, KeyError, TypeError):
        return None
