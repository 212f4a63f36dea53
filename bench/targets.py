"""The targets (issue #18's for the flows, notifications and start-up rows; #15's fan-out,
#17's publishing, #16's metrics), and the one table: each system's figure, target, met.

A workload module returns rows {"workload", "system", "value", "note"}, and
may add "unit", and "target" and "met" when it judges its own figure (the
memory, scale and start-up workloads do). For the others, whose targets
compare systems measured in the same run, the rules below judge the row
from all systems' values: the first rule whose words the workload's label
contains.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SYSTEMS = ("orchestrator", "RQ", "Celery", "Dramatiq")
PEERS = ("Celery", "Dramatiq")
_BY_LOWER = {name.lower(): name for name in SYSTEMS}
NUMBERED = re.compile(r"\d+\. ")  # a label that starts with its workload's number

Values = dict[str, Any]  # system -> value
PUBLISHING = "publishing:"  # the labels of issue #17's lines (bench.flows.run)
PUBLISHING_SYSTEM = "orchestrator-publishing"  # their column: the engine, publishing
METRICS = "metrics:"  # the labels of issue #16's lines (bench.flows.run)
CATCH_UP = 2.0  # s after the last workflow finished, its subscriber has consumed everything


@dataclass(frozen=True)
class Rule:
    number: str
    words: str  # lower case, found in the workload's label
    target: str
    check: Callable[[Values], tuple[bool | None, str]]  # met, and why when it matters


def _at_least(threshold: float) -> Callable[[Values], tuple[bool | None, str]]:
    def check(values: Values) -> tuple[bool | None, str]:
        ours = _number(values.get("orchestrator"))
        return (None, "") if ours is None else (ours >= threshold, "")

    return check


def _workflows(times: float) -> Callable[[Values], tuple[bool | None, str]]:
    """>= `times` the fastest peer measured in the same run, and >= 4x raw RQ."""

    def check(values: Values) -> tuple[bool | None, str]:
        ours = _number(values.get("orchestrator"))
        if ours is None:
            return None, ""
        peers = {p: v for p in PEERS if (v := _number(values.get(p))) is not None}
        rq = _number(values.get("RQ"))
        met = True
        why = []
        if peers:
            fastest = max(peers, key=lambda p: peers[p])
            met &= ours >= times * peers[fastest]
            why.append(f"{ours / peers[fastest]:.2f}x {fastest}")
        else:
            why.append("no peer measured")
        if rq is not None:
            met &= ours >= 4 * rq
            why.append(f"{ours / rq:.1f}x RQ" if rq else "RQ 0")
        else:
            why.append("RQ not measured")
        return met, ", ".join(why)

    return check


def _fastest_peer(values: Values) -> tuple[bool | None, str]:
    """>= the fastest peer measured in the same run; no verdict when none was."""
    ours = _number(values.get("orchestrator"))
    peers = {p: v for p in PEERS if (v := _number(values.get(p))) is not None}
    if ours is None or not peers:
        return None, "" if ours is None else "no peer measured"
    fastest = max(peers, key=lambda p: peers[p])
    return ours >= peers[fastest], f"{ours / peers[fastest]:.2f}x {fastest}"


def _percentiles(value: Any) -> tuple[float, float] | None:
    """A latency row's [p50, p99], or None when it was not measured."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    low, high = _number(value[0]), _number(value[1])
    return None if low is None or high is None else (low, high)


def _light_latency(values: Values) -> tuple[bool | None, str]:
    """p50 <= Celery's (when it was measured), p99 <= twice our own p50."""
    ours = _percentiles(values.get("orchestrator"))
    if ours is None:
        return None, ""
    met = ours[1] <= 2 * ours[0]
    why = [f"p99 {ours[1] / ours[0]:.1f}x p50" if ours[0] else "p50 0"]
    celery = _percentiles(values.get("Celery"))
    if celery is None:
        why.append("Celery not measured")
    else:
        met &= ours[0] <= celery[0]
        why.append(f"p50 {ours[0] / celery[0]:.2f}x Celery's" if celery[0] else "Celery p50 0")
    return met, ", ".join(why)


def _p99_at_most(peers: tuple[str, ...]) -> Callable[[Values], tuple[bool | None, str]]:
    """p99 <= the lowest p99 of `peers` measured in the same run; no verdict when none was."""

    def check(values: Values) -> tuple[bool | None, str]:
        ours = _percentiles(values.get("orchestrator"))
        theirs = {p: v[1] for p in peers if (v := _percentiles(values.get(p))) is not None}
        if ours is None or not theirs:
            return None, "" if ours is None else f"{' or '.join(peers)} not measured"
        best = min(theirs, key=lambda p: theirs[p])
        ratio = f"{ours[1] / theirs[best]:.2f}x {best}'s p99" if theirs[best] else f"{best} 0"
        return ours[1] <= theirs[best], ratio

    return check


def _at_most_trips(threshold: float) -> Callable[[Values], tuple[bool | None, str]]:
    """<= threshold; why: how it compares with RQ measured in the same run."""

    def check(values: Values) -> tuple[bool | None, str]:
        ours = _number(values.get("orchestrator"))
        if ours is None:
            return None, ""
        rq = _number(values.get("RQ"))
        why = f"RQ {rq:.1f} per step ({rq / ours:.0f}x as many)" if rq and ours else ""
        return ours <= threshold, why

    return check


def _caught_up(values: Values) -> tuple[bool | None, str]:
    """[lag at the last finish, seconds until the subscriber had consumed everything]; the
    seconds are a text ("> 30") when it had not caught up by the time it was waited for."""
    found = values.get(PUBLISHING_SYSTEM)
    if not isinstance(found, list | tuple) or len(found) != 2:
        return None, ""
    seconds = _number(found[1])
    if seconds is None:
        return False, f"not caught up: {found[1]} s"
    return seconds <= CATCH_UP, ""


UNDER_LOAD = "under load:"  # the labels of the flows rows run beside a busy core

RULES = (  # the first whose words the label holds: the rows under load first
    Rule("2", f"{UNDER_LOAD} 3-step workflows/s", ">= fastest peer, >= 4x RQ", _workflows(1.0)),
    Rule("3", f"{UNDER_LOAD} latency", "p99 <= fastest peer's", _p99_at_most(PEERS)),
    Rule("2", "workflows/s", ">= 1.5x fastest peer, >= 4x RQ", _workflows(1.5)),
    Rule("2", "round trips per workflow step", "<= 3", _at_most_trips(3)),
    Rule("3", "at 50/s", "p50 <= Celery's, p99 <= 2x p50", _light_latency),
    Rule("3", "at 500/s", "p99 <= Dramatiq's", _p99_at_most(("Dramatiq",))),
    Rule("4", "notifications/s", ">= 1,000/s", _at_least(1000)),
    Rule("7", "fan-outs/s", ">= fastest peer", _fastest_peer),
    Rule("2", f"{PUBLISHING} subscriber's lag", f"caught up <= {CATCH_UP:g} s", _caught_up),
)


@dataclass
class Line:
    """One line of the table."""

    workload: str
    values: Values = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    why: str = ""


def lines(rows: list[dict[str, Any]], number: str) -> list[Line]:
    """The rows of one workload module, one line per workload label, in order."""
    found: dict[str, Line] = {}
    for row in rows:
        label = str(row["workload"])
        line = found.setdefault(label, Line(label))
        system = _BY_LOWER.get(str(row["system"]).lower(), str(row["system"]))
        line.values[system] = row.get("value")
        if row.get("unit"):
            line.units[system] = str(row["unit"])
        if row.get("note"):
            line.notes[system] = str(row["note"])
        if "target" in row:
            line.target = str(row["target"])
        if "met" in row:
            line.met = row["met"]
    for line in found.values():
        rule = next((r for r in RULES if r.words in line.workload.lower()), None)
        prefix = rule.number if rule else number
        if not NUMBERED.match(line.workload):
            line.workload = f"{prefix}. {line.workload}"
        if rule and not line.target:
            line.target = rule.target
            line.met, line.why = rule.check(line.values)
    return list(found.values())


def not_run(number: str, title: str, reason: str) -> Line:
    return Line(f"{number}. {title}", {"orchestrator": None}, notes={"orchestrator": reason})


def show(value: Any, unit: str = "") -> str:
    if value is None:
        return "not run"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " / ".join(show(v) for v in value) + (f" {unit}" if unit else "")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            text = "n/a"
        elif abs(number) >= 100:
            text = f"{number:,.0f}"
        elif abs(number) >= 1:
            text = f"{number:.2f}".rstrip("0").rstrip(".") if number % 1 else f"{number:.0f}"
        else:
            text = f"{number:.3g}"
        return f"{text} {unit}" if unit else text
    return str(value)


def met_text(line: Line) -> str:
    if line.met is None:
        return "-" if line.target or line.values.get("orchestrator") is None else ""
    return "yes" if line.met else "NO"


def as_dict(line: Line) -> dict[str, Any]:
    return {
        "workload": line.workload,
        "values": line.values,
        "units": line.units,
        "target": line.target or None,
        "met": line.met,
        "why": line.why or None,
        "notes": line.notes,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
