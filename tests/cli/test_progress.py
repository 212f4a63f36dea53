"""Long operations show a progress bar at a terminal, and nothing else anywhere else."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator.core.errors import UnknownInstance
from orchestrator.entry.bootstrap import App
from orchestrator.store.deadletters import REPLAY_CHUNK, dead_letter
from tests.conftest import cli_env, run_cli

LETTERS = 2 * REPLAY_CHUNK + 7  # three transactions


def plant_letters(app: App, count: int) -> list[str]:
    """Dead letters holding valid events, as the applier leaves them."""
    pipe = app.redis.pipeline()
    for n in range(count):
        event = {"id": f"e{n}", "type": "go", "instance": f"i{n}", "at": time.time(), "data": {}}
        pipe.xadd(
            app.keys.deadletters,
            dead_letter("inbox", "inbox:0", f"{n}-0", json.dumps(event), "planted"),
        )
    return [entry.decode() for entry in pipe.execute()]


def inbox_length(app: App) -> int:
    return sum(int(app.redis.xlen(app.keys.inbox(p))) for p in range(app.keys.partitions))


def test_replay_goes_back_in_chunks_and_reports_each(app: App) -> None:
    plant_letters(app, LETTERS)
    seen: list[tuple[int, int]] = []
    replayed = app.client.dead_letters.replay(None, progress=lambda *done: seen.append(done))
    assert len(replayed) == LETTERS
    assert seen == [(REPLAY_CHUNK, LETTERS), (2 * REPLAY_CHUNK, LETTERS), (LETTERS, LETTERS)]
    assert inbox_length(app) == LETTERS
    assert app.client.dead_letters.read() == []


def test_an_unknown_letter_among_many_writes_nothing(app: App) -> None:
    ids = plant_letters(app, LETTERS)
    with pytest.raises(UnknownInstance, match="no-such"):
        app.client.dead_letters.replay([*ids, "no-such"])
    assert inbox_length(app) == 0
    assert len(app.client.dead_letters.read(limit=10_000)) == LETTERS


def test_the_cli_draws_a_bar_at_a_terminal(app: App, settings_url: str, tmp_path: Path) -> None:
    plant_letters(app, LETTERS)
    env = cli_env(settings_url, tmp_path, TTY_COMPATIBLE="1", COLUMNS="100")
    result = run_cli("dead-letters", "replay", "--all", env=env)
    assert result.returncode == 0, result.stderr
    # the result alone on stdout, the bar with its count on stderr
    assert result.stdout.strip() == f"{LETTERS} dead letter(s) put back"
    assert "putting back" in result.stderr and f"{LETTERS}/{LETTERS}" in result.stderr
    assert inbox_length(app) == LETTERS


@pytest.mark.parametrize(
    ("letters", "terminal", "extra"),
    [(LETTERS, "0", []), (LETTERS, "1", ["--json"]), (3, "1", [])],
    ids=["piped", "json", "quick"],
)
def test_no_bar_in_a_pipe_with_json_or_for_quick_work(
    app: App, settings_url: str, tmp_path: Path, letters: int, terminal: str, extra: list[str]
) -> None:
    plant_letters(app, letters)
    env = cli_env(settings_url, tmp_path, TTY_COMPATIBLE=terminal)
    result = run_cli("dead-letters", "replay", "--all", *extra, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert inbox_length(app) == letters
    if extra:
        assert len(json.loads(result.stdout)["replayed"]) == letters


@pytest.fixture
def settings_url(app: App) -> str:
    url = app.settings.redis_url
    assert url
    return url
