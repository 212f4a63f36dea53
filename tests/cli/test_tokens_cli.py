"""`orchestrator tokens`: create (the token shown once), list (never the token), revoke."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import redis

from tests.conftest import cli_env, run_cli


def test_create_list_revoke(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path)
    # When a token is made
    made = run_cli("tokens", "create", "console", "--scope", "operate", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    # Then it is printed alone on stdout, once, and Redis holds its hash, not it
    assert token.startswith("orch_") and "not shown again" in made.stderr
    client = redis.Redis.from_url(redis_url)
    stored = b"".join(k + v for k, v in client.hgetall("orch:tokens").items()).decode()
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored
    # and --json gives its record with the token
    other = run_cli("tokens", "create", "ci", "--scope", "read", "--json", env=env)
    doc = json.loads(other.stdout)
    assert doc["scope"] == "read" and doc["token"].startswith(f"orch_{doc['id']}_")
    # When they are listed, the token and its hash are never shown
    listed = run_cli("tokens", "list", "--json", env=env)
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["scope"]) for r in rows] == [("console", "operate"), ("ci", "read")]
    assert set(rows[0]) == {"id", "name", "scope", "created", "last_used"}
    text = run_cli("tokens", "list", env=env).stdout
    assert "console" in text and token not in text and doc["token"] not in listed.stdout
    # When one is revoked, it is gone
    gone = run_cli("tokens", "revoke", doc["id"], env=env)
    assert gone.returncode == 0 and doc["id"] in gone.stdout
    assert [r["name"] for r in json.loads(run_cli("tokens", "list", "--json", env=env).stdout)] == [
        "console"
    ]


def test_clear_errors(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path)
    assert run_cli("tokens", "create", "a", "--scope", "read", env=env).returncode == 0
    cases = [
        (("tokens", "create", "a", "--scope", "read"), "'a' exists already"),
        (("tokens", "create", "b", "--scope", "root"), "unknown scope 'root'"),
        (("tokens", "revoke", "0123456789ab"), "no token with id"),
    ]
    for args, says in cases:
        done = run_cli(*args, env=env)
        assert done.returncode == 1 and says in done.stderr, done.stderr
    assert run_cli("tokens", "list", env=env).stdout.count("\n") == 2  # header and one row
