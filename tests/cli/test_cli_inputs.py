"""Hostile command-line input: each is a user error (exit 1, one line naming the
argument), never an "internal error" (exit 70), and nothing is written to Redis.

Every command runs as a real `python -m cli.main` subprocess against a real Redis.
Bytes that are not UTF-8 reach the command as real argv bytes: a `str` argument
holding "\\udcff" is passed by subprocess as the byte 0xff.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import cli_env, run_cli

Env = dict[str, str]
DIGITS_5000 = "1" + "0" * 5000


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    return cli_env(redis_url, tmp_path)


def snapshot(url: str) -> dict[bytes, Any]:
    """Every key and its serialized value: equal snapshots, nothing written in between."""
    client = redis.Redis.from_url(url)
    try:
        keys: list[bytes] = client.keys("*")  # type: ignore[assignment]
        return {key: client.dump(key) for key in sorted(keys)}
    finally:
        client.close()


def refused(*args: str, env: Env, input_text: str | None = None) -> str:
    """Run a command that must fail as a user error; return its one line on stderr."""
    result = run_cli(*args, env=env, input_text=input_text)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert result.returncode == 1, f"{args!r} exited {result.returncode}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


CASES: dict[str, tuple[list[str], list[str]]] = {
    "lone surrogate in JSON": (
        ["start", "order", "--input", '{"order_id": "\\ud800"}'],
        ["--input", "not valid Unicode", "lone surrogate", "order_id"],
    ),
    "lone surrogate in a key": (
        ["emit", "order.placed", "--data", '{"\\udcff": 1, "order_id": "S1"}'],
        ["--data", "lone surrogate", "key"],
    ),
    "nested lone surrogate": (
        ["start", "counter", "--input", '{"a": [1, {"b": "x\\udc80"}]}'],
        ["--input", "a[1].b"],
    ),
    "invalid UTF-8 in --input": (
        ["start", "counter", "--input", '{"n": "\udcff"}'],
        ["argument 4 (--input)", "not valid UTF-8", "\\xff"],
    ),
    "invalid UTF-8 in --input=": (
        ["start", "counter", '--input={"n": "\udcff"}'],
        ["argument 3 (--input)", "not valid UTF-8"],
    ),
    "invalid UTF-8 instance id": (["status", "ab\udcffcd"], ["argument 2", "b'ab\\xffcd'"]),
    "invalid UTF-8 event type": (["emit", "\udcfe", "--workflow", "x"], ["argument 2"]),
    "invalid UTF-8 --key": (["emit", "tick", "--key", "order_id=\udcff"], ["(--key)"]),
    "invalid UTF-8 --id": (["start", "counter", "--id", "\udcc3\udca9x\udcff"], ["(--id)"]),
    "5000-digit integer": (
        ["start", "counter", "--input", '{"n": ' + DIGITS_5000 + "}"],
        ["--input", "a number of more than 4,300 digits"],
    ),
    "5000-digit integer in --data": (
        ["emit", "tick", "--workflow", "x", "--data", '{"n": [' + DIGITS_5000 + "]}"],
        ["--data", "4,300 digits"],
    ),
    "huge --limit": (
        ["list", "--limit", "99999999999999999999"],
        ["--limit must be a whole number from 1 to 10,000", "99999999999999999999"],
    ),
    "5000-digit --limit": (["list", "--limit", DIGITS_5000], ["--limit", "(5,001 characters)"]),
    "zero --limit": (["list", "--limit", "0"], ["--limit must be a whole number"]),
    "negative --limit": (["list", "--limit=-5"], ["--limit must be a whole number"]),
    "huge dead-letters --limit": (
        ["dead-letters", "--limit", "99999999999999999999"],
        ["--limit must be a whole number from 1 to 10,000"],
    ),
    "huge --processes": (
        ["worker", "--burst", "--processes", "99999999999"],
        ["--processes must be a whole number from 1 to 256"],
    ),
    "zero --notify-threads": (
        ["worker", "--burst", "--notify-threads", "0"],
        ["--notify-threads must be a whole number from 1 to 1,024", "'0'"],
    ),
    "huge --notify-threads": (
        ["worker", "--burst", "--notify-threads", "4096"],
        ["--notify-threads must be a whole number from 1 to 1,024"],
    ),
}


@pytest.mark.parametrize(("args", "fragments"), CASES.values(), ids=list(CASES))
def test_hostile_arguments_are_user_errors_and_write_nothing(
    env: Env, redis_url: str, args: list[str], fragments: list[str]
) -> None:
    assert run_cli("list", env=env).returncode == 0  # the deployment exists before
    before = snapshot(redis_url)
    line = refused(*args, env=env)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert snapshot(redis_url) == before


def test_a_large_limit_within_the_bound_works(env: Env) -> None:
    result = run_cli("list", "--limit", "10000", env=env)
    assert (result.returncode, result.stdout) == (0, "no instances\n"), result.stderr
    result = run_cli("dead-letters", "--limit", "10000", env=env)
    assert (result.returncode, result.stdout) == (0, "no dead letters\n"), result.stderr


def test_an_emoji_is_valid_text(env: Env) -> None:
    result = run_cli("start", "counter", "--input", '{"who": "\\ud83d\\ude00 \U0001f600"}', env=env)
    assert result.returncode == 0, result.stderr


def test_input_from_dev_zero_is_refused_at_once(env: Env, redis_url: str) -> None:
    before = snapshot(redis_url)
    started = time.monotonic()
    line = refused("start", "counter", "--input", "@/dev/zero", env=env)
    assert time.monotonic() - started < 20
    assert "--input in /dev/zero is more than 262,144 bytes of text" in line
    line = refused("emit", "tick", "--workflow", "x", "--data", "@/dev/zero", env=env)
    assert "--data in /dev/zero is more than" in line
    assert snapshot(redis_url) == before


def test_oversized_standard_input_is_refused(env: Env, redis_url: str) -> None:
    before = snapshot(redis_url)
    line = refused("start", "counter", "--input", "@-", env=env, input_text="{" * 3_000_000)
    assert "--input on standard input is more than 262,144 bytes" in line
    assert snapshot(redis_url) == before


def test_a_file_with_a_huge_integer_is_a_user_error(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "big-int.json"
    path.write_text('{"n": ' + DIGITS_5000 + "}")
    line = refused("start", "counter", "--input", f"@{path}", env=env)
    assert f"--input in {path} holds a number of more than 4,300 digits" in line


def test_a_pretty_printed_file_within_the_limit_is_read(env: Env, tmp_path: Path) -> None:
    """The bound on text is looser than on data: indentation is not counted as data."""
    path = tmp_path / "pretty.json"
    path.write_text('{\n  "blob": "' + "x" * 60_000 + '"' + " " * 100_000 + "\n}")
    result = run_cli("start", "counter", "--input", f"@{path}", env=env)
    assert result.returncode == 0, result.stderr
