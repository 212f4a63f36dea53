"""Start-up (issue #18): help and completion build the Typer app and import nothing of the
engine. A command module imports the engine inside its functions (cli/__init__.py); these
tests fail when an import of the engine, a driver or a renderer comes back to the top of
one. Each runs in a fresh interpreter, since this one has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What no help needs: the engine and the notification library, the Redis and RQ clients,
# templates, tables, and the libraries the channels and webhooks use.
ENGINE = (
    "orchestrator",
    "notifiers",
    "workflows",
    "redis",
    "rq",
    "jinja2",
    "rich",
    "cloudevents",
    "standardwebhooks",
    "email_validator",
    "requests",
    "cronsim",
)

# Run the console script's entry point as `orchestrator ARGS...`, then print the names of
# the modules loaded, as JSON on the last line of standard error.
LAUNCHER = """
import json, sys
from cli.main import run
sys.argv[0] = "orchestrator"
try:
    run()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """Standard output of `orchestrator ARGS...`, and the top-level packages it loaded."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ORCHESTRATOR_"))}
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = json.loads(done.stderr.splitlines()[-1])
    return done.stdout, {name.split(".")[0] for name in modules}


def test_help_builds_the_app_and_imports_nothing_of_the_engine() -> None:
    shown, loaded = loaded_by("--help")
    assert "Usage:" in shown and "status" in shown
    # pydantic too: nothing parses a value of an option before the help is shown
    assert loaded.isdisjoint((*ENGINE, "pydantic")), sorted(loaded & {*ENGINE, "pydantic"})


@pytest.mark.parametrize(
    "command",
    [
        "status",
        "start",
        "list",
        "worker",
        "schemas list",
        "events tail",
        "recipients add",
        "notify send",
        "schedules add",
        "subscriptions add",
        "dead-letters replay",
        "redis start",
    ],
)
def test_a_command_help_imports_nothing_of_the_engine(command: str) -> None:
    # The root callback runs before a command's --help: it keeps the options, and the App
    # is built only when a command asks for it. (Typer itself loads pydantic there, to
    # parse the root's options.)
    shown, loaded = loaded_by(*command.split(), "--help", env={"REDIS_URL": "redis://nowhere"})
    assert "Usage:" in shown
    assert loaded.isdisjoint(ENGINE), sorted(loaded & set(ENGINE))


def test_completion_imports_nothing_of_the_engine() -> None:
    completion = {
        "_ORCHESTRATOR_COMPLETE": "complete_bash",
        "COMP_WORDS": "orchestrator schedules sh",
        "COMP_CWORD": "2",
    }
    shown, loaded = loaded_by(env=completion)
    assert shown.split() == ["show"]
    assert loaded.isdisjoint(ENGINE), sorted(loaded & set(ENGINE))


def test_a_command_that_runs_builds_the_app_then() -> None:
    # the other side: the App is there when a command needs it (no Redis: `graph`)
    shown, loaded = loaded_by("graph", "order", env={"ORCHESTRATOR_WORKFLOWS": "workflows"})
    assert "stateDiagram" in shown
    assert "orchestrator" in loaded


def test_the_schemas_help_names_the_engine_default_folder() -> None:
    from cli.schemas import DEFAULT_DIR_SHOWN
    from orchestrator.entry.schema_registry import DEFAULT_DIR

    assert Path(DEFAULT_DIR_SHOWN) == DEFAULT_DIR


def test_status_imports_only_what_reading_an_instance_needs(redis_url: str) -> None:
    # Given an instance started with the bundled workflows
    from orchestrator.entry.client import Orchestrator
    from orchestrator.entry.settings import Settings

    env = {"REDIS_URL": redis_url, "ORCHESTRATOR_WORKFLOWS": "workflows"}
    settings = Settings.from_env({**os.environ, **env})
    instance = Orchestrator.connect(settings).start("order", {"order_id": "o-lazy"})
    # When `orchestrator status ID` runs
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "status", instance],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Then it shows the instance, and loaded none of the parts other commands use
    assert instance in done.stdout
    modules = set(json.loads(done.stderr.splitlines()[-1]))
    others = {
        "orchestrator.entry.subscriptions",  # webhook subscriptions, and their relay
        "orchestrator.runtime.relay",
        "orchestrator.entry.schedules",
        "orchestrator.entry.subscriber",  # published events
        "orchestrator.core.replay",
        "orchestrator.runtime.applier",  # the worker's
        "rq",
        "workflows",  # the deployment's workflow modules: reading an instance needs none
        "orchestrator.runtime.registry",
        "orchestrator.core.definition",
        "opentelemetry.sdk.metrics",  # redis-py's import of it is held back (cli.common)
    }
    assert modules.isdisjoint(others), sorted(modules & others)


def test_the_metrics_sdk_held_back_from_redis_imports_again_afterwards() -> None:
    # redis-py imports without it, and then it imports as usual (a traced command, the
    # server's metrics) and redis-py works
    check = (
        "import sys\n"
        "from cli.common import import_redis_without_its_metrics_sdk\n"
        "import_redis_without_its_metrics_sdk()\n"
        "assert 'redis' in sys.modules, 'redis not imported'\n"
        "assert 'opentelemetry.sdk.metrics' not in sys.modules, 'the SDK came in'\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "import redis\n"
        "print(MeterProvider.__name__, redis.Redis.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MeterProvider", "Redis"]
