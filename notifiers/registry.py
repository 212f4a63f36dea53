"""Routing a notification to its channel, after rendering its template.

Templates render in Jinja2's sandbox with undefined variables as errors; a
template that cannot render fails the notification with the reason.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from notifiers.console import ConsoleNotifier

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def render(template: str, context: dict[str, Any]) -> tuple[str, str]:
    """A template is "Subject line | body"; without a '|', all of it is the body."""
    subject, sep, body = template.partition("|")
    if not sep:
        subject, body = "", template
    return _env.from_string(subject.strip()).render(context), _env.from_string(body.strip()).render(
        context
    )


def deliver(channel: str, to: str | None, template: str, context: dict[str, Any]) -> dict[str, Any]:
    if not to:
        return {"ok": False, "reason": "no recipient address in the context"}
    try:
        subject, body = render(template, context)
    except TemplateError as exc:
        return {"ok": False, "reason": f"template error: {exc}"}
    return ConsoleNotifier().send(channel, to, subject, body)
