"""The public surface, pinned: what `import orchestrator` exports and the CLI's commands.

Both are promises to users. Changing either must be deliberate: edit the list
here in the same change, and say so in its message.
"""

from __future__ import annotations

import typer

import orchestrator
from cli.main import app

PUBLIC_API = [
    "ANY",
    "Branch",
    "Child",
    "Map",
    "NonRetryable",
    "Notify",
    "On",
    "Orchestrator",
    "OrchestratorError",
    "Publish",
    "Schedule",
    "Settings",
    "State",
    "Task",
    "TaskInfo",
    "Workflow",
    "task_info",
]

CLI_COMMANDS = [
    "cancel",
    "dead-letters",
    "dead-letters replay",
    "demo",
    "emit",
    "events",
    "events groups",
    "events tail",
    "graph",
    "history",
    "list",
    "notifications",
    "notify",
    "notify send",
    "recipients",
    "recipients add",
    "recipients list",
    "recipients remove",
    "recipients set",
    "recipients show",
    "redis",
    "redis info",
    "redis start",
    "redis status",
    "redis stop",
    "replay",
    "retry",
    "schedules",
    "schedules add",
    "schedules pause",
    "schedules remove",
    "schedules resume",
    "schedules show",
    "schemas",
    "schemas check",
    "schemas list",
    "schemas show",
    "serve",
    "server",  # the former name of `redis`, hidden
    "server info",
    "server start",
    "server status",
    "server stop",
    "start",
    "status",
    "subscriptions",
    "subscriptions add",
    "subscriptions dead-letters",
    "subscriptions list",
    "subscriptions new-secret",
    "subscriptions redeliver",
    "subscriptions remove",
    "templates",
    "templates check",
    "tokens",
    "tokens create",
    "tokens list",
    "tokens revoke",
    "worker",
    "workflows",
]


def command_names(typer_app: typer.Typer, prefix: str = "") -> list[str]:
    """Every command and group of a Typer app, groups' commands as "group command"."""
    names: list[str] = []
    for command in typer_app.registered_commands:
        callback = command.callback.__name__ if command.callback is not None else ""
        names.append(prefix + (command.name or callback.lower().replace("_", "-")))
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        assert sub is not None, group
        name = group.name or sub.info.name
        assert isinstance(name, str), group
        names.append(prefix + name)
        names += command_names(sub, f"{prefix}{name} ")
    return names


def test_the_public_api_is_exactly_the_pinned_names() -> None:
    assert orchestrator.__all__ == PUBLIC_API  # sorted, as the pinned list is
    for name in PUBLIC_API:
        assert getattr(orchestrator, name) is not None, name


def test_the_cli_commands_are_exactly_the_pinned_names() -> None:
    found = command_names(app)
    assert len(found) == len(set(found)), found  # no name registered twice
    assert sorted(found) == CLI_COMMANDS
