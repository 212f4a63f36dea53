"""forge-poison: forged jobs and poison entries while workers are killed.

Why: anyone who can write to Redis can push an RQ job or write an entry the
engine reads back. The kill-workers workload runs (orders, notes, a SIGKILL
every few seconds) while, at the start and after every kill, the harness

- forges jobs, each of which would leave a marker if it ran: `os.system`
  touching a file, in the `tasks` and in the `notifications` queue;
  `orchestrator.runtime.tasks.run_task` (and `run_tasks`) for a live order whose task
  is `subprocess:run` with the context `{"touch": 1, MARKER: 1}`;
  `send_notification` of a template module that no loaded workflow is
  (`workflows.order`) to `forged-N@example.com` (its marker: a message at
  the SMTP server);
- plants poison (tests/runtime/test_poison.py has each kind): inbox entries that are
  not UTF-8, whose `instance` is a number, nested too deeply, and a cancel of
  a live order in a partition not its own; a due timer whose event is not
  UTF-8; a due notify-later entry that is not JSON; a watchdog record that is
  not JSON; an instance hash whose context is corrupt, with an event for it
  (a decoy, not indexed: no order of the run is corrupted).

Pass: the common figures (the planted dead letters aside: those are matched
one by one and must all be there), 0 forged runs (no marker file, no forged
message), every forged job refused or cut by a kill, no order cancelled by
the misrouted cancel, 0 inbox partitions left with entries pending, and no
traceback in the workers' logs but those of the refused jobs (RQ logs each
failed job's).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.chaos.checker import check
from bench.chaos.cluster import Cluster, Shape, cluster
from bench.chaos.collect import load
from bench.chaos.model import Report, Snapshot
from bench.chaos.providers import prism_receipts
from bench.chaos.runner import Batch, Chaos, Run, say, unexpected_tracebacks
from bench.chaos.scenarios import (
    Outcome,
    Row,
    _folder,
    common_rows,
    fault_row,
    settle_for,
)
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.dispatch import (
    NOTIFICATION_QUEUE,
    RUN_TASK,
    RUN_TASKS,
    SEND_NOTIFICATION,
    TASK_QUEUE,
    carrier_id,
)
from orchestrator.store.keys import INBOX_GROUP

SIZES = {  # orders, over seconds, chaos lasts seconds, notes within seconds of a start
    "full": (100, 40.0, 45.0, 8.0),
    "quick": (40, 25.0, 30.0, 8.0),
    "ci": (12, 8.0, 12.0, 3.0),
}
FORGED_MAIL = re.compile(r"forged-\d+@example\.com")


@dataclass
class Planted:
    """What one round planted, to be found again among the dead letters."""

    entries: set[tuple[str, str]] = field(default_factory=set)  # (key, entry id)
    raws: set[bytes] = field(default_factory=set)  # exact bytes of a letter's entry
    decoys: set[str] = field(default_factory=set)  # instances whose hash is corrupt
    timers: set[tuple[int, str]] = field(default_factory=set)  # (partition, timer id)
    count: int = 0  # letters expected


class Forger:
    """Forges jobs and plants poison in one cluster's Redis; remembers what it did."""

    def __init__(self, app: App, folder: Path, rng: random.Random) -> None:
        self.app = app
        self.markers = folder / "markers"
        self.markers.mkdir(exist_ok=True)
        self.rng = rng
        self.rounds = 0
        self.jobs: list[str] = []  # forged RQ job ids
        self.planted = Planted()
        self.misrouted: list[str] = []  # orders a misrouted cancel was aimed at
        self.queues = {
            name: Queue(name, connection=app.redis, serializer=JSONSerializer)
            for name in (TASK_QUEUE, NOTIFICATION_QUEUE)
        }

    def round(self, live: list[str]) -> None:
        n, self.rounds = self.rounds, self.rounds + 1
        self.forge(n, live)
        self.poison(n, live)

    # -- forged jobs ------------------------------------------------------------------

    def _marker(self, name: str) -> str:
        return str(self.markers / name)

    def forge(self, n: int, live: list[str]) -> None:
        for queue in self.queues.values():
            job = queue.enqueue("os.system", f"touch {self._marker(f'system-{queue.name}-{n}')}")
            self.jobs.append(job.id)
        if live:
            victim = self.rng.choice(live)
            task = self.task_payload(victim, n, self._marker(f"subprocess-{n}"))
            self._push(TASK_QUEUE, RUN_TASK, task, task["job"])
            packed = self.task_payload(victim, n + 100_000, self._marker(f"packed-{n}"))
            self._push(TASK_QUEUE, RUN_TASKS, {"items": [packed]}, carrier_id([packed["job"]]))
        note = self.note_payload(n)
        self._push(NOTIFICATION_QUEUE, SEND_NOTIFICATION, note, note["key"])

    def task_payload(self, instance: str, n: int, marker: str) -> dict[str, Any]:
        """A run_task payload as the dispatcher writes one, but for `subprocess:run`."""
        keys = self.app.keys
        partition = keys.partition_of(instance)
        job = f"{instance}-forged-{n}"
        return {
            "instance": instance,
            "workflow": "chaos_order",
            "version": 1,
            "task": "subprocess:run",
            "kind": "task",
            "state": "reserve",
            "attempt": 1,
            "entered_seq": 1,
            "context": {"touch": 1, marker: 1},  # subprocess.run's argument: touch MARKER
            "job": job,
            "timeout": 30,
            "namespace": keys.namespace,
            "partitions": keys.partitions,
            "partition": partition,
        }

    def note_payload(self, n: int) -> dict[str, Any]:
        """A send with no instance, of a workflow's templates that this deployment does not
        load; if it ran, forged-N@example.com would get a message."""
        keys = self.app.keys
        key = f"cli-forged-{n}"
        partition = keys.partition_of(key)
        return {
            "instance": None,
            "channel": "email",
            "to": f"forged-{n}@example.com",
            "template": "order_shipped",
            "templates": "workflows.order",
            "urgent": True,
            "context": {"order_id": f"forged-{n}"},
            "key": key,
            "kind": "notification",
            "partition": partition,
            "namespace": keys.namespace,
            "partitions": keys.partitions,
        }

    def _push(self, queue: str, func: str, payload: dict[str, Any], job_id: str) -> None:
        job = self.queues[queue].enqueue_call(func, kwargs={"payload": payload}, job_id=job_id)
        self.jobs.append(job.id)

    # -- poison -----------------------------------------------------------------------

    def poison(self, n: int, live: list[str]) -> None:
        keys, client, planted = self.app.keys, self.app.redis, self.planted
        partition = self.rng.randrange(keys.partitions)
        inbox = keys.inbox(partition)
        bad_event = {"id": f"poison-{n}", "type": "task.completed", "instance": n, "at": 1.0}
        for raw in (
            b"\xff\xfe poison " + str(n).encode(),
            json.dumps(bad_event).encode(),
            b"[" * 50_000 + str(n).encode(),
        ):
            self._inbox(inbox, raw)
        if live:  # a cancel for a live order, in a partition that is not its own
            victim = self.rng.choice(live)
            wrong = (keys.partition_of(victim) + 1) % keys.partitions
            cancel = {"id": f"misrouted-{n}", "type": "workflow.cancel", "instance": victim}
            self._inbox(keys.inbox(wrong), json.dumps({**cancel, "at": time.time()}).encode())
            self.misrouted.append(victim)
        timer = b"\x80 timer poison " + str(n).encode()
        client.hset(keys.timer_events(partition), f"poison-timer-{n}", timer)
        client.zadd(keys.timers(partition), {f"poison-timer-{n}": 0})
        planted.raws.add(timer)
        planted.timers.add((partition, f"poison-timer-{n}"))
        later = b"{not json " + str(n).encode()
        client.zadd(keys.notify_later, {later: 0})
        planted.raws.add(later)
        job = f"poison-job-{n}"
        client.hset(keys.outstanding_jobs(partition), job, b"{not json")
        client.zadd(keys.outstanding(partition), {job: 0})
        planted.entries.add((keys.outstanding_jobs(partition), job))
        planted.count += 3  # the timer's event, the notify-later entry, the record
        self._decoy(n)

    def _inbox(self, key: str, raw: bytes) -> None:
        entry: Any = self.app.redis.xadd(key, {"e": raw})
        self.planted.entries.add((key, entry.decode()))
        self.planted.count += 1

    def _decoy(self, n: int) -> None:
        """An instance hash with a corrupt context, and an event for it: written by hand, in
        no index, so the run's checks never count it among the orders."""
        keys, decoy = self.app.keys, f"decoy-{n}"
        now = time.time()
        self.app.redis.hset(
            keys.instance(decoy),
            mapping={
                "id": decoy,
                "workflow": "chaos_order",
                "version": "1",
                "state": "charge",
                "status": "running",
                "seq": "2",
                "context": "{corrupt",
                "created_at": repr(now),
            },
        )
        event = {"id": f"decoy-note-{n}", "type": "chaos.note", "instance": decoy, "at": now}
        self.app.redis.xadd(keys.inbox(keys.partition_of(decoy)), {"e": json.dumps(event)})
        self.planted.decoys.add(decoy)
        self.planted.count += 1

    # -- after the run ----------------------------------------------------------------

    def leftovers(self) -> int:
        """Remove the planted entries still where they were planted; returns how many. None
        should be (the engine moves each to the dead letters); the harness's own reader
        (collect.pending_work) parses the inboxes and the notify-later set, and must not
        fail on them when the engine did not do its job, so that the run reports it."""
        keys, client, left = self.app.keys, self.app.redis, 0
        for key, entry in self.planted.entries:
            if key.endswith(":inbox") and client.xrange(key, entry, entry):
                # still in the stream (trimming keeps the last acknowledged entry): left
                # only if it was never read, or read and never acknowledged
                client.xdel(key, entry)
                left += int(not _acknowledged(self.app, key, entry))
            elif not key.endswith(":inbox") and client.hexists(key, entry):
                partition = int(key.split("{p", 1)[1].split("}", 1)[0])
                client.zrem(keys.outstanding(partition), entry)
                left += client.hdel(key, entry)
        for raw in self.planted.raws:
            left += client.zrem(keys.notify_later, raw)
        for partition in range(keys.partitions):  # timers' events the timers fired
            inbox = keys.inbox(partition)
            entries: Any = client.xrange(inbox)
            for entry_id, fields in entries:
                if fields.get(b"e") in self.planted.raws:
                    client.xdel(inbox, entry_id)
                    left += int(not _acknowledged(self.app, inbox, entry_id.decode()))
        for partition, timer in self.planted.timers:
            client.hdel(keys.timer_events(partition), timer)
            left += client.zrem(keys.timers(partition), timer)
        return left

    def markers_made(self) -> list[str]:
        return sorted(p.name for p in self.markers.iterdir())

    def refused(self) -> tuple[int, int]:
        """(refused, cut by a kill): forged jobs that failed naming RefusedJob; the others."""
        refused = 0
        for job_id in self.jobs:
            try:
                job = Job.fetch(job_id, connection=self.app.redis, serializer=JSONSerializer)
                result = job.latest_result()
            except Exception:  # gone: nothing says it was refused
                continue
            if result is not None and "RefusedJob" in (result.exc_string or ""):
                refused += 1
        return refused, len(self.jobs) - refused

    def sort_letters(self, letters: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        """(planted letters found, the other letters): a planted one is matched by where it
        was, by its exact bytes, or by the decoy its event was for."""
        found, others = 0, []
        for letter in letters:
            raw = base64.b64decode(letter["raw"]) if "raw" in letter else None
            raw = raw if raw is not None else str(letter.get("event", "")).encode()
            where = (letter.get("key", ""), letter.get("entry", ""))
            try:
                instance = json.loads(letter.get("event", "")).get("instance")
            except (ValueError, RecursionError, AttributeError):
                instance = None
            if (
                where in self.planted.entries
                or raw in self.planted.raws
                or instance in self.planted.decoys
            ):
                found += 1
            else:
                others.append(letter)
        return found, others


class ForgeRun(Run):
    """A Run that forges and poisons at every kill, and keeps its planted letters apart."""

    def __init__(self, c: Cluster, seed: int) -> None:
        super().__init__(c, seed)
        self.forger = Forger(c.app, c.folder, random.Random(seed + 1))
        self.planted_found = 0
        self.refused_tracebacks = 0
        self.left = 0  # planted entries found where they were planted, after the run

    def _kill(self, chaos: Chaos) -> int:
        kills = super()._kill(chaos)
        self.forger.round(self.ids[-20:])
        return kills

    def collect(self) -> tuple[Snapshot, Report]:
        """As Run.collect, with the planted dead letters matched and set apart before the
        check, and the tracebacks of refused jobs counted apart."""
        self.cluster.pool.stop()
        self.left = self.forger.leftovers()
        self.unexpected = list(self.cluster.pool.unexpected)
        for log in sorted(self.cluster.folder.glob("worker-*.log")):
            text = log.read_text(errors="replace")
            refused = unexpected_tracebacks(text, only="RefusedJob")
            self.refused_tracebacks += refused
            self.tracebacks += unexpected_tracebacks(text) - refused
        self.journal.close()
        c = self.cluster
        receipts = c.smtp.receipts() + prism_receipts(c.prism_log)
        snapshot = load(c.app, c.folder, receipts, self.ids)
        self.planted_found, snapshot.dead_letters = self.forger.sort_letters(snapshot.dead_letters)
        dump = json.dumps(dataclasses.asdict(snapshot), separators=(",", ":"))
        (c.folder / "snapshot.json").write_text(dump)
        return snapshot, check(snapshot, c.app.registry.get)


def _acknowledged(app: App, inbox: str, entry: str) -> bool:
    groups: Any = app.redis.xinfo_groups(inbox)
    group = next((g for g in groups if g["name"] in (INBOX_GROUP, INBOX_GROUP.encode())), None)
    if group is None or _stream_id(group["last-delivered-id"]) < _stream_id(entry):
        return False
    pending: Any = app.redis.xpending_range(inbox, INBOX_GROUP, min=entry, max=entry, count=1)
    return not pending


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def stuck_partitions(app: App) -> int:
    """Inbox partitions with an entry read and never acknowledged, or never read."""
    stuck = 0
    for partition in range(app.keys.partitions):
        inbox = app.keys.inbox(partition)
        groups: Any = app.redis.xinfo_groups(inbox) if app.redis.exists(inbox) else []
        stream: Any = app.redis.xinfo_stream(inbox) if groups else {}
        for group in groups:
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            behind = group["last-delivered-id"] != stream.get("last-generated-id")
            if name == INBOX_GROUP and (group["pending"] or behind):
                stuck += 1
    return stuck


def forge_poison(size: str) -> Outcome:
    count, over, lasts, notes = SIZES[size]
    folder, began = _folder("forge-poison"), time.monotonic()
    with cluster(folder, Shape()) as c:
        run = ForgeRun(c, seed=23)
        run.forger.round([])  # before the first order, and after every kill
        batch = Batch("fp", count, over, work=0.3, undo_work=0.3, note_within=notes)
        run.drive([batch], Chaos(every=(1.5, 3.5), lasts=lasts))
        run.settle(settle_for(size))
        stuck = stuck_partitions(c.app)
        snapshot, report = run.collect()
        refused, cut = run.forger.refused()  # read while Redis still runs
    forger = run.forger
    made = forger.markers_made()
    mails = [r for r in snapshot.provider if FORGED_MAIL.search(str(r.get("to", "")))]
    cancelled = [i for i in forger.misrouted if snapshot.instances[i]["status"] == "cancelled"]
    say(f"  {forger.rounds} rounds: {len(forger.jobs)} forged jobs, {forger.planted.count} poison")
    rows = [
        *common_rows(report, budget=size != "ci"),
        Row(
            "worker exits nobody caused, tracebacks",
            f"{len(run.unexpected)}, {run.tracebacks} (+{run.refused_tracebacks} refused jobs)",
            "0, 0",
            not run.unexpected and not run.tracebacks,
        ),
        Row(
            "forged jobs run (markers, forged mails)",
            f"{len(made) + len(mails)} of {len(forger.jobs)} ({len(made)}, {len(mails)})",
            "0",
            not made and not mails,
        ),
        Row(
            "forged jobs refused (info: the rest cut by a kill)",
            f"{refused} refused, {cut} cut",
            "-",
            True,
        ),
        Row(
            "poison set aside in the dead letters",
            f"{run.planted_found} of {forger.planted.count}, {run.left} left in place",
            "all, 0",
            run.planted_found == forger.planted.count and not run.left,
        ),
        Row(
            "orders cancelled by a misrouted cancel, stuck partitions",
            f"{len(cancelled)} of {len(forger.misrouted)}, {stuck}",
            "0, 0",
            not cancelled and not stuck,
        ),
        fault_row(report, snapshot),
    ]
    return Outcome("forge-poison", rows, report, time.monotonic() - began, folder)
