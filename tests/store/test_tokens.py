"""API tokens in Redis: stored hashed, found by their id, refused once revoked."""

from __future__ import annotations

import hashlib
import json

import pytest

from orchestrator.core.errors import InputError, InstanceExists, UnknownInstance
from orchestrator.entry.bootstrap import App
from orchestrator.store.tokens import SCOPES, Tokens, allows


@pytest.fixture
def tokens(app: App) -> Tokens:
    return Tokens(app.redis, app.keys)


def test_a_token_is_stored_as_its_hash_only(app: App, tokens: Tokens) -> None:
    made, token = tokens.create("ci", "operate")
    assert token.startswith(f"orch_{made.id}_") and len(token) > 50
    stored = app.redis.hgetall(app.keys.tokens)
    assert list(stored) == [made.id.encode()]
    record = json.loads(stored[made.id.encode()])
    assert record["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token.split("_", 2)[2] not in json.dumps(record)
    assert (record["name"], record["scope"]) == ("ci", "operate")


def test_authenticate_finds_the_token_and_records_its_use(tokens: Tokens) -> None:
    made, token = tokens.create("ci", "read")
    found = tokens.authenticate(token)
    assert found is not None and (found.id, found.scope) == (made.id, "read")
    assert tokens.list()[0].last_used is not None
    for wrong in (
        "",
        token + "x",
        token[:-1],
        token.replace("orch_", "orc_"),
        "orch_zz_a",
        "x" * 500,
    ):
        assert tokens.authenticate(wrong) is None


def test_a_revoked_token_is_refused_and_stays_revoked(tokens: Tokens) -> None:
    made, token = tokens.create("ci", "admin")
    assert tokens.revoke(made.id).name == "ci"
    assert tokens.authenticate(token) is None
    assert tokens.list() == []
    with pytest.raises(UnknownInstance, match="no token with id"):
        tokens.revoke(made.id)


def test_names_are_unique_scopes_known(tokens: Tokens) -> None:
    tokens.create("ci", "read")
    with pytest.raises(InstanceExists, match="'ci' exists already"):
        tokens.create("ci", "admin")
    with pytest.raises(InputError, match="unknown scope 'root'"):
        tokens.create("other", "root")
    for name in ("", " ", "x" * 101, "-dash", "new\nline"):
        with pytest.raises(InputError, match="token name"):
            tokens.create(name, "read")
    assert [t.name for t in tokens.list()] == ["ci"]


def test_scopes_are_ordered() -> None:
    assert SCOPES == ("read", "operate", "admin")
    assert allows("admin", "operate") and allows("operate", "read") and allows("read", "read")
    assert not allows("read", "operate") and not allows("operate", "admin")
    assert not allows("root", "read")


def test_an_unreadable_record_is_an_unknown_token(app: App, tokens: Tokens) -> None:
    made, token = tokens.create("ci", "read")
    app.redis.hset(app.keys.tokens, made.id, b"\xff not json")
    assert tokens.authenticate(token) is None
    assert tokens.list() == []


def test_touching_a_revoked_token_writes_nothing(app: App, tokens: Tokens) -> None:
    made, token = tokens.create("ci", "read")
    other = Tokens(app.redis, app.keys)
    tokens.revoke(made.id)
    assert other.authenticate(token) is None
    assert app.redis.hlen(app.keys.tokens) == 0
