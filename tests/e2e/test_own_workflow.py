"""A user's own workflow, exactly as the README writes it (issue #14, point 2).

The README's example module is written to `myapp/workflows.py` in an empty
folder, and the README's own commands run from that folder through the real
`orchestrator` console script, with nothing on PYTHONPATH: the folder a command
runs from is importable, as with `python -m`, uvicorn or celery.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env

README = (ROOT / "README.md").read_text()
CONSOLE = str(Path(sys.executable).with_name("orchestrator"))


def readme_module() -> str:
    found = re.search(r"```python\n(# myapp/workflows\.py\n.*?)```", README, re.S)
    assert found, "the README's own-workflow example (# myapp/workflows.py) is gone"
    return found.group(1)


def readme_commands() -> list[list[str]]:
    """The commands the README gives right after the example, as written."""
    found = re.search(r"Run it with `([^`]+)`, and\nfeed it: `([^`]+)`,\nlater `([^`]+)`", README)
    assert found, "the README's commands for its example changed: update this test"
    return [shlex.split(command) for command in found.groups()]


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    (folder / "myapp").mkdir(parents=True)
    (folder / "myapp" / "__init__.py").write_text("")
    (folder / "myapp" / "workflows.py").write_text(readme_module())
    return folder


def run(command: list[str], folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assignments = dict(part.split("=", 1) for part in command if re.match(r"^[A-Z_]+=", part))
    argv = [part for part in command if part not in {f"{k}={v}" for k, v in assignments.items()}]
    assert argv[0] == "orchestrator", argv
    return subprocess.run(
        [CONSOLE, *argv[1:]],
        cwd=folder,
        env={**env, **assignments},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_readme_workflow_runs_from_its_folder_as_written(
    app_folder: Path, redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path)
    del env["PYTHONPATH"]  # only the folder the command runs from
    env.pop("ORCHESTRATOR_WORKFLOWS")
    worker, placed, paid = readme_commands()
    assert worker[-2:] == ["orchestrator", "worker"]
    burst = [*worker, "--burst"]  # the README's worker, for one burst instead of for ever
    env["ORCHESTRATOR_WORKFLOWS"] = dict(p.split("=", 1) for p in worker if "=" in p)[
        "ORCHESTRATOR_WORKFLOWS"
    ]

    started = run(placed, app_folder, env)
    assert started.returncode == 0, started.stderr
    for _ in range(3):  # reserve, then charge
        done = run(burst, app_folder, env)
        assert done.returncode == 0, done.stderr
    answered = run(paid, app_folder, env)
    assert answered.returncode == 0, answered.stderr
    assert run(burst, app_folder, env).returncode == 0

    listed = run(["orchestrator", "list", "--json"], app_folder, env)
    assert listed.returncode == 0, listed.stderr
    (order,) = json.loads(listed.stdout)
    assert (order["workflow"], order["state"], order["status"]) == (
        "shop_order",
        "done",
        "completed",
    ), order


def test_a_module_that_cannot_be_found_names_itself_and_the_fix(
    app_folder: Path, redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="myapp.workflows")
    del env["PYTHONPATH"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(["orchestrator", "workflows"], elsewhere, env)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "cannot import workflow module 'myapp.workflows'" in line
    assert "No module named 'myapp'" in line
    assert "run the command from the folder that holds 'myapp'" in line
    assert os.linesep not in line  # one line
    found = run(["orchestrator", "workflows"], app_folder, env)
    assert found.returncode == 0, found.stderr
    assert "shop_order v1" in found.stdout
