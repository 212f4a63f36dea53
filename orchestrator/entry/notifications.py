"""What the notification commands of the CLI do, kept out of the CLI.

Recipients are edited by a `RecipientChange` (the options of `recipients add`
and `recipients set`); templates are checked across every loaded workflow,
both the files themselves and the names the workflows' `Notify` give; a
one-off notification goes through the same delivery flow as the workers',
without an instance. Every view meant for printing hides secrets: push
subscription keys are never shown, and URL passwords are masked.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from notifiers.errors import ChannelConfigError
from notifiers.redact import redact
from notifiers.registry import CHANNELS, Notifiers, notifier_class
from notifiers.templates import TemplateProblem, check, folder_of
from orchestrator.core.errors import InputError, InstanceExists
from orchestrator.runtime.notify.delivery import Deliverer, Outcome
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.recipients import CHANNELS as RECIPIENT_CHANNELS
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.runtime.payloads import NotificationPayload, notification_payload
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# The files a channel cannot do without, at the template's top level (locales fall back to it).
NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject.txt",), ("body.txt",)),
    "sms": (("sms.txt", "body.txt"),),
    "push": (("push.txt", "body.txt"),),
}


@dataclass
class RecipientChange:
    """The options of `recipients add/set`; None leaves a field as it is."""

    email: str | None = None
    phone: str | None = None
    webhook: str | None = None
    push: list[dict[str, Any]] = field(default_factory=list)
    clear_push: bool = False
    opt_out: list[str] = field(default_factory=list)
    opt_in: list[str] = field(default_factory=list)
    quiet_hours: str | None = None
    clear_quiet_hours: bool = False
    timezone: str | None = None
    locale: str | None = None

    def apply(self, recipient: Recipient) -> Recipient:
        for channel in [*self.opt_out, *self.opt_in]:
            if channel not in RECIPIENT_CHANNELS:
                known = ", ".join(RECIPIENT_CHANNELS)
                raise InputError(f"unknown channel {channel!r} (channels: {known})")
        both = sorted(set(self.opt_out) & set(self.opt_in))
        if both:
            raise InputError(f"cannot opt both out of and in to {', '.join(both)}")
        if self.quiet_hours is not None and self.clear_quiet_hours:
            raise InputError("give --quiet-hours or --clear-quiet-hours, not both")
        for channel, value in (
            ("email", self.email),
            ("sms", self.phone),
            ("webhook", self.webhook),
        ):
            if value == "":  # an empty value removes the address
                recipient.addresses.pop(channel, None)
            elif value is not None:
                recipient.addresses[channel] = _address(channel, value)
        if self.clear_push:
            recipient.push = []
        for subscription in self.push:
            _check_subscription(subscription)
            endpoint = subscription["endpoint"]
            recipient.push = [s for s in recipient.push if s.get("endpoint") != endpoint]
            recipient.push.append(subscription)
        opted = [c for c in recipient.opted_out if c not in self.opt_in]
        recipient.opted_out = [*opted, *(c for c in self.opt_out if c not in opted)]
        if self.clear_quiet_hours:
            recipient.quiet_hours = None
        elif self.quiet_hours is not None:
            recipient.quiet_hours = self.quiet_hours
        if self.timezone is not None:
            recipient.timezone = self.timezone
        if self.locale is not None:
            if self.locale and not LOCALE.match(self.locale):
                raise InputError(f"a locale looks like fr or pt-BR, not {self.locale!r}")
            recipient.locale = self.locale or None
        recipient.check()
        quiet = recipient.quiet_hours
        if quiet and quiet[:5] == quiet[6:]:
            # quiet all day: a notification delayed until the end would wait forever
            raise InputError(f"quiet hours {quiet!r} start and end at the same time")
        return recipient


def _address(channel: str, value: str) -> str:
    if channel == "email" and not EMAIL.match(value):
        raise InputError(f"--email must be an email address, not {value!r}")
    if channel == "sms" and not PHONE.match(value):
        raise InputError(f"--phone must be an E.164 number such as +15550101, not {value!r}")
    if channel == "webhook" and not value.startswith(("https://", "http://")):
        raise InputError(f"--webhook must be an http(s) URL, not {redact(value)!r}")
    return value


def _check_subscription(subscription: dict[str, Any]) -> None:
    keys = subscription.get("keys")
    endpoint = subscription.get("endpoint")
    if (
        not isinstance(endpoint, str)
        or not endpoint.startswith("https://")
        or not isinstance(keys, dict)
        or not all(isinstance(keys.get(k), str) and keys[k] for k in ("p256dh", "auth"))
    ):
        raise InputError(
            "a push subscription is the browser's JSON: an https endpoint and keys p256dh and auth"
        )


def add_recipient(recipients: Recipients, recipient_id: str, change: RecipientChange) -> Recipient:
    if not recipient_id.strip():
        raise InputError("a recipient id cannot be empty")
    if recipients.get(recipient_id) is not None:
        raise InstanceExists(f"recipient {recipient_id!r} exists already; change it with set")
    recipient = change.apply(Recipient(recipient_id))
    recipients.save(recipient)
    return recipient


def update_recipient(
    recipients: Recipients, recipient_id: str, change: RecipientChange
) -> Recipient:
    recipient = change.apply(recipients.require(recipient_id))
    recipients.save(recipient)
    return recipient


def recipient_view(recipient: Recipient) -> dict[str, Any]:
    """The recipient fit to print: push keys hidden, URL passwords masked."""
    return {
        "id": recipient.id,
        "addresses": {k: redact(v) for k, v in sorted(recipient.addresses.items())},
        "push": [redact(str(s.get("endpoint", ""))) for s in recipient.push],
        "opted_out": list(recipient.opted_out),
        "quiet_hours": recipient.quiet_hours,
        "timezone": recipient.timezone,
        "locale": recipient.locale,
    }


@dataclass(frozen=True)
class NotifyProblem:
    """A workflow's Notify naming a template that is missing or unfit for its channel."""

    workflow: str
    version: int
    state: str
    channel: str
    template: str
    message: str

    def __str__(self) -> str:
        return (
            f"workflow {self.workflow} v{self.version}, state {self.state}: "
            f"notify {self.channel} with {self.template!r}: {self.message}"
        )


@dataclass
class CheckReport:
    folders: list[str] = field(default_factory=list)
    templates: int = 0
    problems: list[TemplateProblem] = field(default_factory=list)
    notify_problems: list[NotifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.notify_problems


def template_names(folder: str | None) -> list[str]:
    if not folder:
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir())


def check_templates(registry: Registry) -> CheckReport:
    """Every template folder of every loaded workflow, and every template a Notify names."""
    report = CheckReport()
    definitions = [registry.get(n, v) for n in registry.names() for v in registry.versions(n)]
    for definition in definitions:
        folder = folder_of(definition.templates)
        if folder and folder not in report.folders:
            report.folders.append(folder)
            report.templates += len(template_names(folder))
            try:
                report.problems.extend(check(Path(folder)))
            except Exception as exc:  # check() lets non-Jinja errors ({{ "a" + 1 }}) escape
                fault = f"a template failed to render: {type(exc).__name__}: {exc}"
                report.problems.append(TemplateProblem(folder, None, fault))
        for state in definition.states.values():
            for spec in state.notify:
                message = _notify_fault(folder, spec.channel, spec.template)
                if message:
                    report.notify_problems.append(
                        NotifyProblem(
                            definition.name,
                            definition.version,
                            state.name,
                            spec.channel,
                            spec.template,
                            message,
                        )
                    )
    return report


def _notify_fault(folder: str | None, channel: str, template: str) -> str | None:
    if channel not in CHANNELS:
        return f"unknown channel (channels: {', '.join(sorted(CHANNELS))})"
    if not folder:
        return "the workflow has no templates/ folder beside its module"
    if not TEMPLATE_NAME.match(template) or not Path(folder, template).is_dir():
        known = ", ".join(template_names(folder)) or "none"
        return f"no such template in {folder} (templates: {known})"
    for choices in NEEDS.get(channel, (("body.txt",),)):
        if not any(Path(folder, template, name).is_file() for name in choices):
            return f"a {channel} needs {' or '.join(choices)} in {Path(folder, template)}"
    return None


def template_module(registry: Registry, name: str, workflow: str | None = None) -> str:
    """The module whose templates/ holds NAME: the given workflow's, or the only one that has it."""
    definitions = [registry.get(workflow)] if workflow else registry.latest()
    holders: dict[str, tuple[str, list[str]]] = {}  # folder -> (module, workflows)
    known: set[str] = set()
    for definition in definitions:
        folder = folder_of(definition.templates)
        names = template_names(folder)
        known.update(names)
        if folder and definition.templates and TEMPLATE_NAME.match(name) and name in names:
            holders.setdefault(folder, (definition.templates, []))[1].append(definition.name)
    if not holders:
        where = f"workflow {workflow!r}" if workflow else "no loaded workflow"
        has = "has no" if workflow else "has a"
        raise InputError(f"{where} {has} template {name!r} (templates: {', '.join(sorted(known))})")
    if len(holders) > 1:
        found = ", ".join(sorted(w for _, workflows in holders.values() for w in workflows))
        raise InputError(
            f"template {name!r} is in several workflows ({found}); choose one with --workflow"
        )
    return next(iter(holders.values()))[0]


def send_one(
    client: redis.Redis,
    keys: Keys,
    channels: Mapping[str, str],
    *,
    channel: str,
    to: str,
    template: str,
    module: str,
    context: dict[str, Any],
    urgent: bool = False,
    console: bool = False,
) -> tuple[Outcome, NotificationPayload]:
    """Deliver one notification now, without an instance, through the workers' flow.

    A fresh ledger key each time, so sending again is a new notification. When
    the flow defers it (quiet hours, a transient failure) it is scheduled the
    way a worker schedules it, for the next running worker to send. `channels`: the
    channel settings the process started with (Settings.channels).

    A channel that is not configured is a ChannelConfigError naming what to set, unless
    `console`: then the console stands in for it, as it does for a worker. (Only this
    command refuses: a worker's fallback to the console is the registry's, unchanged.)
    """
    if channel not in CHANNELS:
        raise InputError(f"unknown channel {channel!r} (channels: {', '.join(sorted(CHANNELS))})")
    if not to.strip():
        raise InputError("--to needs an address or a recipient id")
    problem = channel_problem(channels, channel)
    if problem is not None and not console:
        raise ChannelConfigError(
            f"the {channel} channel is not configured: {problem}; set it, "
            "or pass --console to print the message on the console instead"
        )
    payload = notification_payload(
        keys,
        key=f"cli-{uuid.uuid4().hex}",
        instance=None,
        workflow=None,
        version=None,
        channel=channel,
        to=to,
        template=template,
        templates=module,
        urgent=urgent,
        context=context,
    )
    notifiers = Notifiers(channels)
    try:
        outcome = Deliverer(client, keys, channels, notifiers).deliver(payload, payload["key"])
    finally:
        notifiers.close()
    # which notifier served it: the channel's own, or the console standing in for it
    outcome = replace(outcome, data={**outcome.data, "provider": "console" if problem else channel})
    if outcome.later is not None:
        Later(client, keys).add({**payload, "attempt": 2}, outcome.later)
    return outcome, payload


def channel_problem(channels: Mapping[str, str], channel: str) -> str | None:
    """Why `channel` cannot send with these settings (naming what to set), or None."""
    try:
        notifier_class(channel).from_env(channels).close()
    except ChannelConfigError as exc:
        return str(exc)
    return None


_JSON_FIELDS = ("urgent", "attempts", "resends", "warnings", "refused", "gone")
_TIMES = ("created_at", "updated_at", "next_try", "until")
# fmt: off
VIEW_FIELDS = (
    "key", "channel", "to", "template", "urgent", "status", "attempts", "resends", "provider_id",
    "reason", "code", "last_error", "warnings", "refused", "gone", "next_try", "until",
    "created_at", "updated_at",
)
# fmt: on


def notification_view(record: Mapping[str, str]) -> dict[str, Any]:
    """A ledger record fit to print: known fields only, JSON decoded, addresses masked."""
    view: dict[str, Any] = {}
    for name in VIEW_FIELDS:
        raw = record.get(name)
        value: Any = raw
        if raw is not None and name in _JSON_FIELDS:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        elif raw is not None and name in _TIMES:
            try:
                value = float(raw)
            except ValueError:
                value = None
        view[name] = value
    if view["to"]:
        view["to"] = redact(str(view["to"]))
    view["attempts"] = int(view["attempts"] or 0)
    view["warnings"] = list(view["warnings"] or [])
    return view
