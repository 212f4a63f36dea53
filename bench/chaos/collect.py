"""Loading a finished run into a checker Snapshot, and telling when a run has gone quiet.

Everything is read after the workers have stopped, so nothing moves while it
is read: instances and histories through the engine's Store, ledger records
through orchestrator.runtime.notify.ledger.Ledger, the sink lists (calls, and calls that
returned), the journal and fault log files, the providers' receipts, and every
published event (each partition's stream, in its order: outbox.py checks them
against the histories). Each receipt is given the ledger key it
delivers: an email by its Message-ID (the email channel derives it from the
key: the first 32 hex digits of its SHA-256), an SMS by the instance its body
names and its recipient.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from bench.chaos.effects import notify_keys
from bench.chaos.journal import read_lines
from bench.chaos.model import SENT, Snapshot, is_final
from bench.chaos.outbox import entry
from bench.chaos.workload import DONE, SINK
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE
from orchestrator.runtime.notify.ledger import Ledger
from orchestrator.store.instances import decode_hash
from orchestrator.store.keys import INBOX_GROUP, Keys
from orchestrator.store.published import parse


def load(
    app: App, folder: Path, receipts: list[dict[str, Any]], instance_ids: list[str]
) -> Snapshot:
    keys, client = app.keys, app.redis
    known: list[bytes] = client.zrange(keys.all_instances, 0, -1)  # type: ignore[assignment]
    ids = sorted(set(instance_ids) | {k.decode() for k in known})
    instances: dict[str, dict[str, str]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    ledger = Ledger(client, keys)
    records: dict[str, list[dict[str, str]]] = {}
    for instance_id in ids:
        raw: dict[bytes, bytes] = client.hgetall(keys.instance(instance_id))  # type: ignore[assignment]
        if not raw:
            continue
        instances[instance_id] = decode_hash(raw)
        histories[instance_id] = app.client.store.history(instance_id)
        records[instance_id] = ledger.of_instance(instance_id)
    sink: list[bytes] = client.lrange(SINK, 0, -1)  # type: ignore[assignment]
    done: list[bytes] = client.lrange(DONE, 0, -1)  # type: ignore[assignment]
    letters: Any = client.xrange(keys.deadletters)
    return Snapshot(
        instances=instances,
        histories=histories,
        journal=read_lines(folder / "journal.jsonl"),
        ledger=records,
        provider=attribute(receipts, histories, records),
        sink=[json.loads(line) for line in sink],
        completions=[json.loads(line) for line in done],
        faults=read_lines(folder / "faults.jsonl"),
        pending=pending_work(app, [i for i, f in instances.items() if not is_final(f)]),
        dead_letters=[decode_hash(fields) for _, fields in letters],
        published=published(client, keys),
    )


def published(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every event in the published streams, partition by partition, each in its order."""
    pipe = client.pipeline(transaction=False)
    for stream in keys.all_published():
        pipe.xrange(stream)
    found: list[dict[str, Any]] = []
    for partition, entries in enumerate(pipe.execute()):
        for entry_id, fields in entries:
            for item in parse(partition, entry_id, fields):
                found.append(entry(partition, item.entry_id, item.event))
    return found


def attribute(
    receipts: list[dict[str, Any]],
    histories: dict[str, list[dict[str, Any]]],
    records: dict[str, list[dict[str, str]]],
) -> list[dict[str, Any]]:
    """Each receipt with the ledger key it delivers (None when nothing asked for it)."""
    by_digest: dict[str, str] = {}
    by_instance: dict[tuple[str, str, str], str] = {}
    for instance_id, history in histories.items():
        wanted = notify_keys(instance_id, history)
        wanted += [(r["key"], r.get("channel", ""), r.get("to", "")) for r in records[instance_id]]
        for key, channel, to in wanted:
            by_digest[hashlib.sha256(key.encode()).hexdigest()[:32]] = key
            by_instance.setdefault((instance_id, channel, to), key)
    out: list[dict[str, Any]] = []
    for receipt in receipts:
        found: str | None
        if receipt["channel"] == "email":
            digest = str(receipt.get("message_id", "")).strip("<>").split("@")[0]
            found = by_digest.get(digest)
        else:
            found = by_instance.get((str(receipt.get("ref")), receipt["channel"], receipt["to"]))
        out.append({**receipt, "key": found})
    return out


def pending_work(app: App, instance_ids: list[str]) -> dict[str, list[str]]:
    """What could still move each instance: queued jobs, outstanding entries (a job the
    watchdog follows, running or not), armed timers, notification jobs due later, inbox
    events not yet applied. RQ's started registry is not read: its entry of a killed
    worker's job moves nothing, and reading its count would run RQ's cleanup."""
    if not instance_ids:
        return {}
    keys, client = app.keys, app.redis
    owed: dict[str, list[str]] = {i: [] for i in instance_ids}

    def owe(item_id: str, what: str) -> None:
        for instance_id in instance_ids:
            if item_id.startswith(f"{instance_id}-") or item_id == instance_id:
                owed[instance_id].append(what)

    for name in (TASK_QUEUE, NOTIFICATION_QUEUE):
        queue = Queue(name, connection=client)
        for key, what in ((queue.key, "queued"), (queue.intermediate_queue_key, "dequeued")):
            listed: list[bytes] = client.lrange(key, 0, -1)  # type: ignore[assignment]
            for job in (j.decode() for j in listed):
                owe(job, f"{name} job {job} {what}")
    later: list[bytes] = client.zrange(keys.notify_later, 0, -1)  # type: ignore[assignment]
    for member in later:
        try:  # a planted poison entry is the engine's to dead-letter, not the checker's
            entry = json.loads(member)
        except ValueError:
            continue
        if isinstance(entry, dict):
            owe(str(entry.get("instance")), "notification due later")
    for partition in range(keys.partitions):
        watched: dict[bytes, bytes] = client.hgetall(keys.outstanding_jobs(partition))  # type: ignore[assignment]
        for raw in (r.decode(errors="replace") for r in watched):
            owe(raw, f"outstanding {raw}")
        timers: list[bytes] = client.zrange(keys.timers(partition), 0, -1)  # type: ignore[assignment]
        for timer in (t.decode(errors="replace") for t in timers):
            owe(timer, f"timer {timer}")
        entries: Any = client.xrange(keys.inbox(partition))
        for _, fields in entries:
            try:  # poison again: the engine's to dead-letter
                event = json.loads(fields.get(b"e", b""))
                instance, event_id = str(event["instance"]), str(event["id"])
            except (ValueError, KeyError, TypeError):
                continue
            if not client.sismember(keys.applied(instance), event_id):
                owe(instance, f"inbox event {event.get('type')} {event_id}")
    return owed


def quiet(app: App, instance_ids: list[str]) -> bool:
    return unsettled(app, instance_ids) is None


def unsettled(app: App, instance_ids: list[str]) -> str | None:
    """What is left to do, or None when nothing is: every instance final, every
    notification settled, no job, no outstanding entry, no notification due later,
    every inbox entry applied."""
    keys, client = app.keys, app.redis
    pipe = client.pipeline(transaction=False)
    for instance_id in instance_ids:
        pipe.hmget(keys.instance(instance_id), "status", "compensating_to")
    for instance_id, (status, compensating_to) in zip(instance_ids, pipe.execute(), strict=True):
        fields = {"status": (status or b"").decode(), "compensating_to": compensating_to or ""}
        if not is_final(fields):
            return f"{instance_id} is {fields['status'] or 'missing'}"
    if later := client.zcard(keys.notify_later):
        return f"{later} notifications due later"
    for name in (TASK_QUEUE, NOTIFICATION_QUEUE):
        if queued := client.llen(Queue(name, connection=client).key):
            return f"{queued} {name} jobs queued"
    for partition in range(keys.partitions):
        if watched := client.hlen(keys.outstanding_jobs(partition)):
            return f"{watched} outstanding jobs in partition {partition}"
        if not _inbox_drained(client, keys.inbox(partition)):
            return f"inbox {partition} not drained"
    ledger = Ledger(client, keys)
    for instance_id in instance_ids:
        for record in ledger.of_instance(instance_id):
            if record.get("status") not in SENT | {"failed", "skipped"}:
                return f"notification {record.get('key')} is {record.get('status')}"
    return None


def _inbox_drained(client: redis.Redis, inbox: str) -> bool:
    try:
        groups: Any = client.xinfo_groups(inbox)
        stream: Any = client.xinfo_stream(inbox)
    except redis.ResponseError:  # no stream yet: nothing was ever sent there
        return True
    last = stream.get("last-generated-id")
    for group in groups:
        name = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) != INBOX_GROUP:
            continue
        return int(group.get("pending", 0)) == 0 and bool(group.get("last-delivered-id") == last)
    return int(stream.get("length", 0)) == 0
