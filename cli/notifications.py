"""Commands about notifications: recipients, templates, a one-off send, an instance's sends.

Thin on purpose: the logic is in orchestrator.entry.notifications. `notify send` uses the
channel settings read at start-up (`settings.channels`); nothing here reads the environment.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import typer

from cli.common import app_of, json_argument, print_json, table, when

if TYPE_CHECKING:
    from orchestrator.entry.bootstrap import App
    from orchestrator.runtime.notify.recipients import Recipients

commands = typer.Typer()
recipients = typer.Typer(
    help="Who notifications go to: addresses, push subscriptions and preferences.",
    no_args_is_help=True,
)
templates = typer.Typer(help="The workflows' message templates.", no_args_is_help=True)
notify = typer.Typer(help="Send a notification by hand.", no_args_is_help=True)

EMAIL = typer.Option(None, "--email", help="Email address ('' removes it).")
PHONE = typer.Option(None, "--phone", help="Phone number for SMS, E.164 ('' removes it).")
WEBHOOK = typer.Option(None, "--webhook", help="Webhook URL ('' removes it).")
PUSH = typer.Option(
    None, "--push", help="A Web Push subscription as JSON or @file.json (repeatable)."
)
OPT_OUT = typer.Option(None, "--opt-out", help="A channel never to use (repeatable).")
QUIET = typer.Option(None, "--quiet-hours", help="e.g. 22:00-07:00, in the recipient's zone.")
ZONE = typer.Option(None, "--timezone", help="IANA time zone, e.g. Europe/Paris (default UTC).")
LOCALE = typer.Option(None, "--locale", help="Template variant, e.g. fr or pt-BR ('' removes).")
AS_JSON = typer.Option(False, "--json", help="Print JSON.")


def _recipients(app: App) -> Recipients:
    from orchestrator.runtime.notify.recipients import Recipients

    return Recipients(app.redis, app.keys)


def _pushes(values: list[str] | None) -> list[dict[str, Any]]:
    return [json_argument(value, "--push") for value in values or []]


def _show(recipient: dict[str, Any]) -> None:
    typer.echo(recipient["id"])
    for channel, address in recipient["addresses"].items():
        typer.echo(f"  {channel + ':':<13}{address}")
    for endpoint in recipient["push"]:
        typer.echo(f"  {'push:':<13}{endpoint}")
    if recipient["opted_out"]:
        typer.echo(f"  {'opted out:':<13}{', '.join(recipient['opted_out'])}")
    quiet = recipient["quiet_hours"] or "none"
    typer.echo(f"  {'quiet hours:':<13}{quiet} ({recipient['timezone']})")
    typer.echo(f"  {'locale:':<13}{recipient['locale'] or 'default'}")


@recipients.command("add")
def add(
    ctx: typer.Context,
    recipient_id: str = typer.Argument(..., help="Recipient id, as a workflow's `to` names it."),
    email: str | None = EMAIL,
    phone: str | None = PHONE,
    webhook: str | None = WEBHOOK,
    push: list[str] | None = PUSH,
    opt_out: list[str] | None = OPT_OUT,
    quiet_hours: str | None = QUIET,
    timezone: str | None = ZONE,
    locale: str | None = LOCALE,
    as_json: bool = AS_JSON,
) -> None:
    """Add a recipient (an id that exists already is an error: use set)."""
    from orchestrator.entry.notifications import RecipientChange, add_recipient, recipient_view

    app = app_of(ctx)
    change = RecipientChange(
        email=email,
        phone=phone,
        webhook=webhook,
        push=_pushes(push),
        opt_out=opt_out or [],
        quiet_hours=quiet_hours,
        timezone=timezone,
        locale=locale,
    )
    view = recipient_view(add_recipient(_recipients(app), recipient_id, change))
    print_json(view) if as_json else _show(view)


@recipients.command("set")
def set_(
    ctx: typer.Context,
    recipient_id: str = typer.Argument(..., help="Recipient id."),
    email: str | None = EMAIL,
    phone: str | None = PHONE,
    webhook: str | None = WEBHOOK,
    push: list[str] | None = PUSH,
    clear_push: bool = typer.Option(False, "--clear-push", help="Forget every subscription."),
    opt_out: list[str] | None = OPT_OUT,
    opt_in: list[str] | None = typer.Option(
        None, "--opt-in", help="A channel to use again (repeatable)."
    ),
    quiet_hours: str | None = QUIET,
    clear_quiet_hours: bool = typer.Option(False, "--clear-quiet-hours", help="No quiet hours."),
    timezone: str | None = ZONE,
    locale: str | None = LOCALE,
    as_json: bool = AS_JSON,
) -> None:
    """Change a recipient; what is not given stays as it is."""
    from orchestrator.entry.notifications import RecipientChange, recipient_view, update_recipient

    app = app_of(ctx)
    change = RecipientChange(
        email=email,
        phone=phone,
        webhook=webhook,
        push=_pushes(push),
        clear_push=clear_push,
        opt_out=opt_out or [],
        opt_in=opt_in or [],
        quiet_hours=quiet_hours,
        clear_quiet_hours=clear_quiet_hours,
        timezone=timezone,
        locale=locale,
    )
    updated = update_recipient(_recipients(app), recipient_id, change)
    view = recipient_view(updated)
    print_json(view) if as_json else _show(view)


@recipients.command("show")
def show(
    ctx: typer.Context,
    recipient_id: str = typer.Argument(..., help="Recipient id."),
    as_json: bool = AS_JSON,
) -> None:
    """Show a recipient (push subscription keys are never shown)."""
    from orchestrator.entry.notifications import recipient_view

    view = recipient_view(_recipients(app_of(ctx)).require(recipient_id))
    print_json(view) if as_json else _show(view)


@recipients.command("remove")
def remove(
    ctx: typer.Context,
    recipient_id: str = typer.Argument(..., help="Recipient id."),
    as_json: bool = AS_JSON,
) -> None:
    """Forget a recipient."""
    if not _recipients(app_of(ctx)).remove(recipient_id):
        from orchestrator.core.errors import UnknownInstance

        raise UnknownInstance(f"no recipient with id {recipient_id!r}")
    print_json({"removed": recipient_id}) if as_json else typer.echo(f"removed {recipient_id}")


@recipients.command("list")
def list_recipients(ctx: typer.Context, as_json: bool = AS_JSON) -> None:
    """List the recipients."""
    from orchestrator.entry.notifications import recipient_view

    store = _recipients(app_of(ctx))
    found = [store.get(rid) for rid in store.ids()]
    views = [recipient_view(r) for r in found if r is not None]
    if as_json:
        print_json(views)
        return
    if not views:
        typer.echo("no recipients")
        return
    rows: list[list[str]] = []
    for v in views:
        channels = [*v["addresses"], *(["push"] if v["push"] else [])]
        rows.append(
            [
                v["id"],
                ", ".join(channels) or "-",
                ", ".join(v["opted_out"]) or "-",
                v["quiet_hours"] or "-",
                v["timezone"],
                v["locale"] or "-",
            ]
        )
    table(["ID", "CHANNELS", "OPTED OUT", "QUIET HOURS", "ZONE", "LOCALE"], rows)


@templates.command("check")
def check(ctx: typer.Context, as_json: bool = AS_JSON) -> None:
    """Compile and render every template with its sample; check the names workflows use."""
    from orchestrator.entry.notifications import check_templates

    report = check_templates(app_of(ctx).registry)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "templates": report.templates,
                "folders": report.folders,
                "problems": [
                    {"file": p.file, "line": p.line, "message": p.message} for p in report.problems
                ],
                "notify_problems": [vars(p) for p in report.notify_problems],
            }
        )
    else:
        for problem in [*report.problems, *report.notify_problems]:
            typer.echo(str(problem))
        count = len(report.problems) + len(report.notify_problems)
        summary = f"{report.templates} template(s) in {len(report.folders)} folder(s)"
        typer.echo(f"{count} problem(s) in {summary}" if count else f"checked {summary}: all good")
    if not report.ok:
        raise typer.Exit(1)


@notify.command("send")
def send(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="email, sms, push, webhook or console."),
    to: str = typer.Option(..., "--to", help="An address, or a recipient id."),
    template: str = typer.Option(..., "--template", help="Template name."),
    workflow: str | None = typer.Option(
        None, "--workflow", help="The workflow whose templates hold it (default: the only one)."
    ),
    data: str | None = typer.Option(None, "--data", help="Template context: JSON or @file.json."),
    urgent: bool = typer.Option(False, "--urgent", help="Send even in quiet hours."),
    console: bool = typer.Option(
        False,
        "--console",
        help="When the channel is not configured, print the message on the console instead "
        "of failing.",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Send one notification now, through the real channel, without an instance.

    A channel that is not configured is an error (exit 1) naming the variable to set,
    unless --console. --json says which provider sent it ("console" when it stood in)."""
    from notifiers.redact import redact
    from orchestrator.entry.notifications import send_one, template_module

    app = app_of(ctx)
    module = template_module(app.registry, template, workflow)
    context = json_argument(data, "--data")
    # With --json, stdout is the JSON alone: the console channel prints to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        outcome, payload = send_one(
            app.redis,
            app.keys,
            app.settings.channels,
            channel=channel,
            to=to,
            template=template,
            module=module,
            context=context,
            urgent=urgent,
            console=console,
        )
    facts = outcome.data
    result: dict[str, Any] = {
        "status": outcome.status,
        "key": payload["key"],
        "channel": channel,
        "provider": facts.get("provider"),
        "to": redact(to),
        "template": template,
        "provider_id": facts.get("provider_id"),
        "reason": facts.get("reason"),
        "code": facts.get("code"),
        "warnings": facts.get("warnings") or [],
        "later": outcome.later,
    }
    failed = outcome.status in ("failed", "skipped")
    if as_json:
        print_json(result)
    elif failed:
        typer.echo(f"error: notification {outcome.status}: {result['reason']}", err=True)
    elif outcome.later is not None:
        zone = _zone_of(app, to)
        typer.echo(
            f"{outcome.status} until {when(outcome.later, zone)}: a running worker sends it then"
        )
    else:
        # a warning (the console standing in) was logged to stderr when the channel was built
        typer.echo(f"{outcome.status}: provider id {result['provider_id']}")
    if failed:
        raise typer.Exit(1)


def _zone_of(app: App, recipient_id: str | None) -> str | None:
    """The time zone of a recipient (quiet hours are theirs), or None: not a known recipient."""
    if not recipient_id:
        return None
    found = _recipients(app).get(recipient_id)
    return found.timezone if found is not None else None


@commands.command("notifications")
def notifications(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    as_json: bool = AS_JSON,
) -> None:
    """Every notification of an instance: channel, recipient, template, outcome."""
    from orchestrator.entry.notifications import notification_view
    from orchestrator.runtime.notify.ledger import Ledger

    app = app_of(ctx)
    app.client.status(instance_id)  # an unknown instance is an error, not an empty list
    rows = [notification_view(r) for r in Ledger(app.redis, app.keys).of_instance(instance_id)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no notifications")
        return
    lines: list[list[str]] = []
    for r in rows:
        tries = f"{r['attempts']} tr{'y' if r['attempts'] == 1 else 'ies'}"
        details = [
            f"{label.replace('_', ' ')}: {r[label]}"
            for label in ("reason", "last_error")
            if r[label]
        ]
        details += [f"warning: {warning}" for warning in r["warnings"]]
        if r["status"] in ("delayed", "retrying") and (r["until"] or r["next_try"]):
            # a quiet-hours delay ends in the recipient's zone
            zone = _zone_of(app, r["to"]) if r["until"] else None
            details.append(f"next try: {when(r['until'] or r['next_try'], zone)}")
        lines.append(
            [
                r["channel"],
                r["to"] or "-",
                r["template"],
                r["status"],
                tries,
                r["provider_id"] or "-",
                when(r["updated_at"]),
                "\n".join(details),
            ]
        )
    table(
        ["CHANNEL", "TO", "TEMPLATE", "STATUS", "TRIES", "PROVIDER ID", "UPDATED", "DETAILS"], lines
    )
