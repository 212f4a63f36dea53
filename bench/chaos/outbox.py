"""The published events against the histories: the transactional outbox (issue #17).

The applier writes a step's published events in the MULTI/EXEC that records the
step in the history (orchestrator.runtime.dispatch), each with the id
`<instance>-<seq>-<index>` (its step, its place among the step's effects), so
whatever the kills, every step has its events once and no event is without its
step. The collector reads every partition's stream (`entry`, in stream order);
this module checks them, per instance, against its history and definition.

What is expected, keyed by (seq, type, detail), from the history's entries (those
of one seq grouped: a step that passed through parked states shows one entry per
state, Store.history):

  a start          (its `from` is none) one `orchestrator.workflow.started`, detail
                   its first state (`data.state`)
  a transition     (`from` != `to`) one `orchestrator.workflow.transitioned`, detail
                   (from, to, the event's type) as its data has them
  a state entry    (every `to` != `from` of the step) one event of each type the
                   entered state names (`State(publish=[...])`), from the definition
  the rest         what the history entry lists itself (`publish TYPE` among its
                   effects, written in the same commit): the rows' events
                   (`On(..., publish=[...])`) and the engine's other lifecycle events
                   (compensated, completed/failed/cancelled, notification outcomes);
                   a type the two sources both expect counts the larger number

An event's seq is read from its id. A re-entry of a state by a non-internal row to
itself (`from` == `to`) is expected only through the history's own list; the
chaos workflows have none.

  published_duplicate  an id twice in the streams, or more events (of distinct ids)
                       than expected for one (seq, type, detail)
  published_missing    fewer events than expected for one (seq, type, detail)
  published_orphan     an event nothing expects: of no known instance, with an id not
                       `<subject>-<seq>-<index>`, whose history has no such step, whose
                       effect at that index is not its publish, or a step that expects
                       no such event (a transition the history does not show)
  published_order      an instance's events, in stream order, not in the history's
                       order (seq, then effect index), or spread over two partitions
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench.chaos.model import Definitions, Report, Snapshot
from orchestrator.core.machine import PASSED
from orchestrator.core.publishing import LIFECYCLE_PREFIX, STARTED, TRANSITIONED

Key = tuple[int, str, tuple[str, ...]]  # seq, type, detail
PUBLISH = "publish "  # orchestrator.core.effects.describe of a PublishEvent
FIGURES = (
    "published",
    "published_expected",
    "published_transitions",
    "published_business",
    "published_lifecycle_other",
    "published_duplicates",
    "published_missing",
    "published_orphans",
    "published_out_of_order",
)


def entry(partition: int, entry_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """One published event as the snapshot keeps it: where it is, and the CloudEvents
    attributes the checks read (store.published.Published has the whole document)."""
    return {
        "partition": partition,
        "entry": entry_id,
        "id": str(event.get("id", "")),
        "type": str(event.get("type", "")),
        "subject": str(event.get("subject", "")),
        "data": event.get("data"),
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def detail(event_type: str, data: Any) -> tuple[str, ...]:
    """What must match besides the step and the type: a start's first state, a
    transition's from, to and event."""
    fields = data if isinstance(data, dict) else {}
    if event_type == STARTED:
        return (_text(fields.get("state")),)
    if event_type == TRANSITIONED:
        return (_text(fields.get("from")), _text(fields.get("to")), _text(fields.get("event")))
    return ()


def expected(
    history: list[dict[str, Any]], entered_publishes: dict[str, tuple[str, ...]] | None
) -> Counter[Key]:
    """The events one history must have published (see the module's docstring).
    `entered_publishes`: each state's `publish` (None: the definition is unknown, only
    the history's own list counts)."""
    steps: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in history:
        steps[int(item["seq"])].append(item)
    want: Counter[Key] = Counter()
    for seq, entries in steps.items():
        mine: Counter[Key] = Counter()
        before, after = entries[0]["from"], entries[-1]["to"]
        event_type = _text(entries[-1]["event"].get("type"))
        if before is None and after is not None:
            mine[(seq, STARTED, (_text(after),))] += 1
        elif before != after:
            mine[(seq, TRANSITIONED, (_text(before), _text(after), event_type))] += 1
        for step in entries:
            if step["to"] is not None and step["to"] != step["from"] and entered_publishes:
                for kind in entered_publishes.get(str(step["to"]), ()):
                    mine[(seq, kind, ())] += 1
        listed: Counter[Key] = Counter()
        for step in entries:
            if step["outcome"] == PASSED:
                continue
            for effect in step.get("effects") or []:
                text = str(effect)
                if text.startswith(PUBLISH) and text[len(PUBLISH) :] not in (STARTED, TRANSITIONED):
                    listed[(seq, text[len(PUBLISH) :], ())] += 1
        want.update(mine | listed)  # the larger count of the two sources
    return want


def _step_of(subject: str, event_id: str) -> tuple[int, int] | None:
    """(seq, effect index) from `<subject>-<seq>-<index>`; None when it is not that."""
    if not event_id.startswith(f"{subject}-"):
        return None
    seq, _, index = event_id[len(subject) + 1 :].partition("-")
    if not (seq.isdigit() and index.isdigit()):
        return None
    return int(seq), int(index)


def _describe(key: Key) -> str:
    seq, kind, shown = key
    if kind == TRANSITIONED:
        return f"{kind} {shown[0]} -> {shown[1]} on {shown[2]} (seq {seq})"
    if kind == STARTED:
        return f"{kind} in {shown[0]} (seq {seq})"
    return f"{kind} (seq {seq})"


def check_published(report: Report, snapshot: Snapshot, definitions: Definitions) -> None:
    """The published_* checks; nothing when the snapshot has no published events read."""
    if snapshot.published is None:
        return
    for figure in FIGURES:
        report.figures[figure] = 0
    report.figures["published"] = len(snapshot.published)
    of: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in snapshot.published:
        of[item["subject"]].append(item)
    for subject in sorted(set(of) - set(snapshot.instances)):
        for item in of[subject]:
            report.add("published_orphans")
            report.flag(
                "published_orphan",
                f"{subject or '(no subject)'}: {item['type']} {item['id']} of no known instance",
            )
    for instance_id in sorted(snapshot.instances):
        _instance(report, snapshot, definitions, instance_id, of.get(instance_id, []))


def _instance(
    report: Report,
    snapshot: Snapshot,
    definitions: Definitions,
    instance_id: str,
    found: list[dict[str, Any]],
) -> None:
    history = snapshot.histories.get(instance_id, [])
    fields = snapshot.instances[instance_id]
    try:
        definition = definitions(fields["workflow"], int(fields["version"]))
        publishes: dict[str, tuple[str, ...]] | None = {
            name: state.publish for name, state in definition.states.items()
        }
    except Exception:  # the replay check names it
        publishes = None
    want = expected(history, publishes)
    report.add("published_expected", sum(want.values()))
    for (_, kind, _), count in want.items():
        if kind in (STARTED, TRANSITIONED):
            report.add("published_transitions", count)
        elif kind.startswith(LIFECYCLE_PREFIX):
            report.add("published_lifecycle_other", count)
        else:
            report.add("published_business", count)
    effects = {int(e["seq"]): e.get("effects") or [] for e in history if e["outcome"] != PASSED}
    copies = Counter(item["id"] for item in found)
    for event_id, count in sorted(copies.items()):
        if count > 1:
            report.add("published_duplicates", count - 1)
            report.flag(
                "published_duplicate", f"{instance_id}: event id {event_id} published {count} times"
            )
    got: defaultdict[Key, list[str]] = defaultdict(list)
    placed: list[tuple[tuple[int, int], dict[str, Any]]] = []
    seen: set[str] = set()
    for item in found:
        if item["id"] in seen:
            continue
        seen.add(item["id"])
        step = _step_of(instance_id, item["id"])
        listed = effects.get(step[0], []) if step else []
        why = ""
        if step is None:
            why = "its id is not <instance>-<seq>-<index>"
        elif step[0] not in effects:
            why = f"the history has no seq {step[0]}"
        elif step[1] >= len(listed) or str(listed[step[1]]) != f"{PUBLISH}{item['type']}":
            shown = listed[step[1]] if step[1] < len(listed) else "nothing"
            why = f"the step's effect {step[1]} is {shown!r}"
        if why:
            report.add("published_orphans")
            report.flag("published_orphan", f"{instance_id}: {item['type']} {item['id']}: {why}")
            continue
        assert step is not None
        placed.append((step, item))
        got[(step[0], item["type"], detail(item["type"], item["data"]))].append(item["id"])
    for key in sorted(set(want) | set(got), key=lambda k: (k[0], k[1], k[2])):
        ids, count = got.get(key, []), want.get(key, 0)
        if count == 0:
            report.add("published_orphans", len(ids))
            report.flag(
                "published_orphan",
                f"{instance_id}: {_describe(key)} published ({', '.join(ids)}), "
                "no such step in the history",
            )
        elif len(ids) > count:
            report.add("published_duplicates", len(ids) - count)
            report.flag(
                "published_duplicate",
                f"{instance_id}: {_describe(key)} published {len(ids)} times "
                f"({', '.join(ids)}), expected {count}",
            )
        elif len(ids) < count:
            report.add("published_missing", count - len(ids))
            report.flag(
                "published_missing",
                f"{instance_id}: {_describe(key)} missing: {count - len(ids)} of {count} "
                "not published",
            )
    _order(report, instance_id, found, placed)


def _order(
    report: Report,
    instance_id: str,
    found: list[dict[str, Any]],
    placed: list[tuple[tuple[int, int], dict[str, Any]]],
) -> None:
    partitions = sorted({item["partition"] for item in found})
    if len(partitions) > 1:
        report.add("published_out_of_order")
        report.flag(
            "published_order", f"{instance_id}: published in partitions {partitions}, not one"
        )
    last: tuple[tuple[int, int], dict[str, Any]] | None = None
    for step, item in placed:  # stream order
        if last is not None and step <= last[0]:
            report.add("published_out_of_order")
            report.flag(
                "published_order",
                f"{instance_id}: {item['type']} {item['id']} (seq {step[0]}) published after "
                f"{last[1]['type']} {last[1]['id']} (seq {last[0][0]}): not the history's order",
            )
        if last is None or step > last[0]:
            last = (step, item)
