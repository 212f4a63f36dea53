"""`orchestrator demo`: a short, self-contained run of the three bundled workflows.

It starts a private embedded Redis in a temporary folder (or uses the Redis
URL given), starts `orchestrator worker` as a real subprocess, and plays a
script per scenario: orders that ship or fail and are compensated; users who
verify their email, verify after a reminder, never verify, or fail profile
creation; sensor alerts that resolve, are acknowledged, escalate, or take
repeated readings. Day-long and minute-long timeouts are played by emitting
the timeout event, as an operator could. A subscriber (a consumer group, as another
service would run) receives the business events the workflows publish. Then it
prints what happened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.client import Orchestrator
from orchestrator.entry.demo_smtp import DemoSmtpServer
from orchestrator.entry.settings import Settings
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.store import embedded
from orchestrator.store.published import Published

Step = tuple[str, str, dict[str, Any]]
BOB = Recipient(  # the next person on call: escalations reach him by push and email
    id="bob",
    addresses={"email": "bob@example.com"},
    push=[{"endpoint": "https://push.example.invalid/bob", "keys": {"p256dh": "-", "auth": "-"}}],
)  # ("emit", type, data) or ("wait", state, {})


@dataclass
class Scenario:
    workflow: str
    label: str
    start: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    key: tuple[str, str] | None = None
    instance: str = ""
    started_at: float = 0.0

    def begin(self, client: Orchestrator) -> None:
        self.started_at = time.time()
        if self.workflow == "order":
            self.instance = client.start("order", self.start)
        else:
            event = "user.registered" if self.workflow == "registration" else "sensor.reading"
            self.instance = client.emit(event, self.start).instance_id

    def advance(self, client: Orchestrator) -> None:
        """Play the steps whose turn has come; a wait holds until its state is reached."""
        while self.steps:
            kind, name, data = self.steps[0]
            if kind == "wait":
                if client.status(self.instance).state != name:
                    return
            else:
                client.emit(name, data, key=self.key)
            self.steps.pop(0)

    def done(self, client: Orchestrator) -> bool:
        return not self.steps and client.status(self.instance).finished


def _order(n: int, tag: str, label: str, **data: Any) -> Scenario:
    order = {
        "order_id": f"D{tag}-{n}",
        "email": f"customer{n}@example.com",
        "amount": 10.0 * n,
        "work_seconds": 0.05,
        **data,
    }
    return Scenario("order", label, order)


def _user(n: int, tag: str, label: str, steps: list[Step], **data: Any) -> Scenario:
    user_id = f"U{tag}-{n}"
    start = {"user_id": user_id, "email": f"user{n}@example.com", "name": "Ann Lee", **data}
    return Scenario("registration", label, start, steps, key=("user_id", user_id))


def _sensor(n: int, tag: str, label: str, steps: list[Step]) -> Scenario:
    sensor_id = f"T{tag}-{n}"
    start = {
        "sensor_id": sensor_id,
        "value": 95.0,
        "threshold": 80.0,
        "oncall_phone": "+14155550100",
        "escalation_push": "bob",
        "escalation_email": "bob",
    }
    return Scenario("sensor_alert", label, start, steps, key=("sensor_id", sensor_id))


def scenarios(tag: str) -> list[Scenario]:
    waiting: Step = ("wait", "awaiting_verification", {})
    reminded: Step = ("wait", "reminded", {})
    verified: Step = ("emit", "email.verified", {})
    overdue: Step = ("emit", "verification.overdue", {})
    paging: Step = ("wait", "paging", {})
    normal: Step = ("emit", "sensor.reading", {"value": 60.0})
    return [
        _order(1, tag, "ships", items=2),
        _order(2, tag, "ships", items=1),
        _order(3, tag, "card declined", card="declined"),
        _order(4, tag, "out of stock", items=40),
        _order(5, tag, "undeliverable", address="nowhere"),
        _order(6, tag, "payment times out", card="slow", slow_seconds=3.5),
        _user(1, tag, "verifies", [waiting, verified]),
        _user(2, tag, "verifies after a reminder", [waiting, overdue, reminded, verified]),
        _user(3, tag, "never verifies", [waiting, overdue, reminded, overdue]),
        _user(4, tag, "profile fails", [waiting, verified], name="R2-D2"),
        _sensor(1, tag, "back to normal", [paging, normal]),
        _sensor(
            2,
            tag,
            "acknowledged",
            [paging, ("emit", "alert.acknowledged", {}), ("wait", "acknowledged", {}), normal],
        ),
        _sensor(
            3,
            tag,
            "escalated",
            [paging, ("emit", "alert.unacknowledged", {}), ("wait", "escalated", {}), normal],
        ),
        _sensor(
            4,
            tag,
            "repeated readings",
            [
                paging,
                ("emit", "sensor.reading", {"value": 97.0}),
                ("emit", "sensor.reading", {"value": 99.0}),
                normal,
            ],
        ),
    ]


def run_demo(settings: Settings, timeout: float = 60.0) -> int:
    console = Console()
    scratch = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    private = settings.redis_url is None
    url = embedded.ensure_running(scratch) if private else settings.redis_url
    assert url is not None
    log_path = scratch / "worker.log"
    with DemoSmtpServer() as mailbox, open(log_path, "w") as log:
        # the worker is a process of its own, which reads its settings when it starts: it is
        # handed this process's environment (PATH, PYTHONPATH...), pointed at the demo's parts
        env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_WORKFLOWS": "workflows", **mailbox.env}
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--processes", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            console.print(
                f"[bold]Demo[/bold] on {'a private embedded Redis' if private else url}, "
                f"worker pid {worker.pid}, emails to a local SMTP server on port {mailbox.port}"
            )
            app = bootstrap(replace(settings, redis_url=url, workflows=("workflows",)))
            Recipients(app.redis, app.keys).save(BOB)
            subscriber = Subscriber(app.client)
            plays = _play(console, app.client, timeout)
            ignored = app.client.emit(
                "sensor.reading", {"sensor_id": "T-quiet", "value": 20.0, "threshold": 80.0}
            )
            code = _report(console, app.client, plays, ignored.note, log_path, mailbox)
            subscriber.report(console)
            return code
        finally:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
            if private:
                embedded.stop(scratch)
                shutil.rmtree(scratch, ignore_errors=True)


class Subscriber:
    """What another service would run: a consumer group reading the published events
    from now on (orchestrator.entry.subscriber), on a thread of its own."""

    GROUP = "demo"

    def __init__(self, client: Orchestrator) -> None:
        self.client = client
        self.received: list[Published] = []
        self._stop = threading.Event()
        feed = client.subscribe(self.GROUP, start=time.time(), block=0.2, stop=self._stop.is_set)
        self._thread = threading.Thread(target=self._consume, args=(feed,), daemon=True)
        self._thread.start()

    def _consume(self, feed: Any) -> None:
        for event in feed:
            self.received.append(event)

    def report(self, console: Console) -> None:
        published = len(self.client.published(time.time() - 3600))
        deadline = time.monotonic() + 3
        while len(self.received) < published and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(2)
        counts = Counter(event.type for event in self.received)
        console.print(
            f"Events published by the workflows, received by a subscriber (consumer group "
            f"{self.GROUP!r}): {len(self.received)} of {published}: "
            + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())),
            markup=False,
            highlight=False,
            soft_wrap=True,  # one line, whatever the terminal's width: scripts read it
        )
        for event in self.received[:3]:
            console.print(
                f"  {event.type} {event.subject} {event.data}",
                markup=False,
                highlight=False,
                overflow="ellipsis",
                no_wrap=True,
            )


def _play(console: Console, client: Orchestrator, timeout: float) -> list[Scenario]:
    started = time.time()
    plays = scenarios(f"{int(started) % 100000:05d}")
    for play in plays:
        play.begin(client)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} finished"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("workflows", total=len(plays))
        while time.time() - started < timeout:
            for play in plays:
                play.advance(client)
            finished = sum(play.done(client) for play in plays)
            progress.update(bar, completed=finished)
            if finished == len(plays):
                break
            time.sleep(0.1)
    return plays


def _report(
    console: Console,
    client: Orchestrator,
    plays: list[Scenario],
    note: str,
    log_path: Path,
    mailbox: DemoSmtpServer,
) -> int:
    table = Table(title="What happened")
    for column in (
        "workflow",
        "scenario",
        "final state",
        "status",
        "tasks",
        "undone",
        "notified",
        "time",
    ):
        table.add_column(column)
    unfinished = 0
    for play in plays:
        instance = client.status(play.instance)
        unfinished += not instance.finished
        effects = [e for h in client.history(play.instance) for e in h["effects"]]
        table.add_row(
            play.workflow,
            play.label,
            instance.state or "-",
            instance.status,
            str(sum(e.startswith("run task") for e in effects)),
            str(sum(e.startswith("run compensation") for e in effects)),
            str(sum(e.startswith("notify") for e in effects)),
            f"{instance.updated_at - play.started_at:.1f}s",
        )
    console.print(table)
    console.print(f"A reading under its threshold with no alert open: {note}")
    time.sleep(0.5)  # the last notifications of the finished instances are on their way
    console.print(
        f"Emails received by the local SMTP server ({len(mailbox.messages)}), the first five:"
    )
    for message in mailbox.messages[:5]:
        console.print(
            f"  to {message['To']}: {message['Subject']}",
            markup=False,
            highlight=False,
            overflow="ellipsis",
            no_wrap=True,
        )
    printed = [line for line in log_path.read_text().splitlines() if line.startswith("[")]
    console.print(
        f"SMS and push, printed to the console as no provider is configured "
        f"({len(printed)}), the first three:"
    )
    for line in printed[:3]:
        console.print(f"  {line}", markup=False, highlight=False, overflow="ellipsis", no_wrap=True)
    if unfinished:
        console.print(f"[red]{unfinished} scenario(s) did not finish[/red]; worker log: {log_path}")
        return 1
    took = max(client.status(p.instance).updated_at - p.started_at for p in plays)
    console.print(f"All {len(plays)} scenarios finished in {took:.1f}s.")
    return 0
