"""The layering is a contract, checked by import-linter (pyproject.toml).

Run on the tree as it is, every contract holds. Run on a copy of the tree with
one violation planted, the contract it breaks fails by name: the check would
catch a real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("orchestrator", "notifiers", "cli", "workflows")
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run(
        [LINT, "--no-cache", str(folder / "pyproject.toml")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the product's packages and its contracts, to plant violations in."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plant(path: Path, line: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    assert sep, f"{path} has no __future__ import to plant after"
    path.write_text(f"{head}{sep}{line}\n{rest}")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert " broken" not in result.stdout.replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "orchestrator/core/events.py",
            "import redis  # noqa",
            "The pure core does no I/O: no engine layer below it, no driver, no framework",
        ),
        (
            "orchestrator/store/keys.py",
            "import orchestrator.runtime.applier  # noqa",
            "The engine in layers: nothing below imports upward",
        ),
        (
            "notifiers/base.py",
            "import orchestrator.core.events  # noqa",
            "notifiers is a library of channels: it imports nothing of the engine",
        ),
        (
            "orchestrator/core/effects.py",
            "import orchestrator.core.machine  # noqa",
            "No import cycles between the sibling modules of any package",
        ),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    plant(tree / module, line)
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
