"""Shell completion (issue #14, point 9): `--install-completion` and `--show-completion`
exist, and the completion script's protocol completes commands and subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONSOLE = str(Path(sys.executable).with_name("orchestrator"))


def complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_ORCHESTRATOR_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    result = subprocess.run(
        [CONSOLE], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("orchestrator li", ["list"]),
        ("orchestrator dead-letters re", ["replay"]),
        ("orchestrator redis st", ["start", "status", "stop"]),
    ],
)
def test_commands_complete(words: str, expected: list[str]) -> None:
    assert sorted(complete(words)) == expected


def test_the_completion_script_is_offered_for_bash() -> None:
    shown = subprocess.run(
        [CONSOLE, "--show-completion", "bash"], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert "_orchestrator_completion" in shown.stdout
    helped = subprocess.run([CONSOLE, "--help"], capture_output=True, text=True, timeout=30)
    assert "--install-completion" in helped.stdout
