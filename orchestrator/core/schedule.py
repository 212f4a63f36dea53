"""Schedules: start a workflow on a cron expression or every interval, and the pure
arithmetic of which ticks to start now.

    class Report(Workflow):
        schedules = [Schedule(cron="0 9 * * MON-FRI", timezone="Europe/Paris")]

A schedule is declared on a workflow class (its name defaults to the workflow's) or
added at run time (`orchestrator schedules add`); both become a `ScheduleSpec`. Which
ticks to start is decided here, without I/O, from the spec, the last tick started and
the time: the applier (orchestrator.runtime.scheduler) stores and starts.

Cron expressions are read by `cronsim` (the library healthchecks.io maintains): in a
named zone it follows Debian cron's rules at daylight-saving changes, which are what
people expect (a job at 02:30 runs at 03:00 when 02:30 does not exist, and once, not
twice, when 02:30 happens twice); croniter, checked beside it, starts such a job twice
on the autumn change. Intervals are anchored at the Unix epoch, so `every="15m"` ticks
at :00, :15, :30 and :45 wherever and whenever it was added (as Temporal's intervals).

Ticks missed while no applier ran (older than ON_TIME when seen) follow the schedule's
catch-up policy, and only within its `catch_up_window` (as Temporal's catch-up window):
"skip" starts none of them, "one" the latest, "all" each in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from orchestrator.core.durations import seconds, show_duration
from orchestrator.core.errors import ConfigurationError, InputError
from orchestrator.core.limits import check_data

CatchUp = Literal["skip", "one", "all"]
Overlap = Literal["skip", "allow"]
CATCH_UPS: tuple[CatchUp, ...] = ("skip", "one", "all")
OVERLAPS: tuple[Overlap, ...] = ("skip", "allow")
ON_TIME = 60.0  # seconds: a tick seen this late is still on time, later it was missed
MIN_EVERY = 1.0  # seconds: the shortest interval (intervals are whole seconds)
MAX_WINDOW = 366 * 86400.0  # the longest catch-up window
MAX_PER_ROUND = 100  # ticks started by one round of the scheduler; the rest in the next
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Schedule:
    """When to start a workflow: `cron` (five fields, in `timezone`) or `every` (seconds,
    or "90s", "15m", "12h", "1d"), one of the two.

    `input` is the context each start gets, plus `scheduled_at`, the tick it is for
    (ISO 8601, UTC). `catch_up` says what happens to ticks missed while no worker ran:
    "skip" none, "one" (the default) the latest, "all" each, oldest first, within
    `catch_up_window` (default 1 day). `overlap="skip"` (the default, as Temporal's)
    starts nothing while the schedule's previous instance still runs (and at most one
    instance a round); "allow" starts every tick, and is what "all" needs. `name`
    (letters, digits, "_" and "-") defaults to the workflow's name; a workflow declaring
    several schedules names each.
    """

    cron: str | None = None
    every: float | str | None = None
    timezone: str = "UTC"
    input: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    catch_up: CatchUp = "one"
    catch_up_window: float | str = "1d"
    overlap: Overlap = "skip"


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked schedule of one workflow, as stored and as the scheduler reads it."""

    name: str
    workflow: str
    cron: str | None
    every: float | None
    timezone: str
    input: dict[str, Any]
    catch_up: CatchUp
    catch_up_window: float
    overlap: Overlap
    declared: bool  # on the workflow class (changed by deploying), or added at run time

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ScheduleSpec:
        """Read a stored spec back, checking it as anything read from Redis is checked."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            return check(
                Schedule(
                    cron=raw.get("cron"),
                    every=raw.get("every"),
                    timezone=raw.get("timezone", "UTC"),
                    input=raw.get("input") or {},
                    name=raw["name"],
                    catch_up=raw.get("catch_up", "one"),
                    catch_up_window=raw.get("catch_up_window", 86400.0),
                    overlap=raw.get("overlap", "skip"),
                ),
                str(raw["workflow"]),
                declared=bool(raw.get("declared")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"stored schedule is unreadable: {exc}") from None

    def describe(self) -> str:
        """What people read: "At 09:00 on Monday through Friday (Europe/Paris)"."""
        if self.cron is not None:
            try:
                said = CronSim(self.cron, datetime.now(UTC)).explain()
            except Exception:  # explain() covers less than the parser: say it as written
                said = f"cron {self.cron}"
            return f"{said} ({self.timezone})"
        assert self.every is not None
        return f"every {show_duration(self.every)}"

    def after(self, moment: float, count: int = 1) -> list[float]:
        """The next `count` ticks strictly after `moment` (Unix seconds)."""
        return list(islice(self.ticks(moment), count))

    def ticks(self, moment: float) -> Iterator[float]:
        """The ticks strictly after `moment`, in order, without end.

        Intervals are whole seconds, so each tick is an exact multiple. A cron tick is
        checked to be after `moment`: in the repeated hour of an autumn change, cronsim,
        asked from the second 02:15, answers the first 02:30, which is already past."""
        if self.every is not None:
            every = int(self.every)
            index = int(moment // every) + 1
            while True:
                yield float(index * every)
                index += 1
        assert self.cron is not None
        for found in CronSim(self.cron, datetime.fromtimestamp(moment, ZoneInfo(self.timezone))):
            tick = found.timestamp()
            if tick > moment:
                yield tick

    def latest_until(self, moment: float) -> float | None:
        """The last tick at or before `moment`, if there is one."""
        if self.every is not None:
            every = int(self.every)
            return float(int(moment // every) * every)
        assert self.cron is not None
        start = datetime.fromtimestamp(moment + 1, ZoneInfo(self.timezone))
        for found in CronSim(self.cron, start, reverse=True):
            if found.timestamp() <= moment:
                return found.timestamp()
        return None


@dataclass(frozen=True)
class Plan:
    """What one round of the scheduler does for a schedule."""

    start: list[float]  # ticks to start now, oldest first
    missed: bool  # ticks came and went unseen (the policy started some, or none)
    last: float  # where the schedule stands once these are started
    next: float  # when the next round is due


def plan(spec: ScheduleSpec, last: float, now: float) -> Plan:
    """The ticks to start at `now`, given where the schedule stood (its last round, or
    when it was added or resumed): every tick up to ON_TIME late, and the missed ones
    within the catch-up window as the policy says."""
    on_time_from = now - ON_TIME
    missed_any = spec.after(last)[0] <= on_time_from
    missed: list[float] = []
    if missed_any and spec.catch_up != "skip":
        window_from = max(last, now - spec.catch_up_window)
        if spec.catch_up == "one":
            latest = spec.latest_until(on_time_from)
            missed = [latest] if latest is not None and latest > window_from else []
        else:
            missed = _between(spec, window_from, on_time_from, MAX_PER_ROUND + 1)
    ticks = missed + _between(spec, max(last, on_time_from), now, MAX_PER_ROUND + 1)
    if len(ticks) > MAX_PER_ROUND:  # the rest in the next round, from the last started
        start = ticks[:MAX_PER_ROUND]
        return Plan(start, missed_any, start[-1], now)
    return Plan(ticks, missed_any, now, spec.after(now)[0])


def _between(spec: ScheduleSpec, after: float, until: float, limit: int) -> list[float]:
    """The first `limit` ticks in (after, until], oldest first."""
    ticks: list[float] = []
    if until <= after:
        return ticks
    for tick in spec.ticks(after):
        if tick > until or len(ticks) >= limit:
            break
        ticks.append(tick)
    return ticks


def check(schedule: Schedule, workflow: str, *, declared: bool) -> ScheduleSpec:
    """Check what a user wrote (on a class, in the CLI, through the client); InputError
    names the field. Whether the workflow exists and takes the input is the caller's."""
    name = schedule.name or workflow
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"schedule name {name!r} must be 1 to 64 letters, digits, '_' or '-'")
    where = f"schedule {name}"
    if (schedule.cron is None) == (schedule.every is None):
        raise InputError(f"{where}: give cron or every, one of the two")
    every: float | None = None
    if schedule.every is not None:
        every = _seconds(schedule.every, f"{where}: every")
        if not MIN_EVERY <= every <= MAX_WINDOW or every != int(every):
            raise InputError(
                f"{where}: every must be whole seconds from {MIN_EVERY:g} to "
                f"{show_duration(MAX_WINDOW)}, not {schedule.every!r}"
            )
    try:
        zone = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InputError(
            f"{where}: unknown time zone {schedule.timezone!r} (an IANA name such as "
            "Europe/Paris, America/New_York or UTC)"
        ) from None
    if schedule.cron is not None:
        if not isinstance(schedule.cron, str):
            raise InputError(f"{where}: cron must be text such as '0 9 * * MON-FRI'")
        try:
            CronSim(schedule.cron, datetime.now(zone))
        except CronSimError as exc:
            raise InputError(
                f"{where}: cron {schedule.cron!r} is not valid: {exc} (five fields: minute "
                "hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI')"
            ) from None
    if schedule.catch_up not in CATCH_UPS:
        raise InputError(
            f"{where}: catch_up must be one of {', '.join(CATCH_UPS)}, not {schedule.catch_up!r}"
        )
    if schedule.overlap not in OVERLAPS:
        raise InputError(
            f"{where}: overlap must be one of {', '.join(OVERLAPS)}, not {schedule.overlap!r}"
        )
    if schedule.catch_up == "all" and schedule.overlap == "skip":
        raise InputError(
            f"{where}: catch_up='all' starts each missed tick, side by side: it needs "
            "overlap='allow' (with overlap='skip', use catch_up='one')"
        )
    window = _seconds(schedule.catch_up_window, f"{where}: catch_up_window", zero_ok=True)
    if window > MAX_WINDOW:
        raise InputError(f"{where}: catch_up_window is at most {show_duration(MAX_WINDOW)}")
    if not isinstance(schedule.input, Mapping):
        raise InputError(f"{where}: input must be a JSON object")
    data = dict(schedule.input)
    check_data(data, f"the input of {where}")
    return ScheduleSpec(
        name=name,
        workflow=workflow,
        cron=schedule.cron,
        every=every,
        timezone=schedule.timezone,
        input=data,
        catch_up=schedule.catch_up,
        catch_up_window=window,
        overlap=schedule.overlap,
        declared=declared,
    )


def _seconds(value: object, what: str, *, zero_ok: bool = False) -> float:
    try:
        return seconds(value, what, zero_ok=zero_ok)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None


def tick_id(name: str, tick: float) -> str:
    """The id of the instance a tick starts: the same whoever starts it, so a tick is
    started once whatever the number of appliers (the door refuses a second create)."""
    return f"{name}-{datetime.fromtimestamp(tick, UTC):%Y%m%dT%H%M%SZ}"


def tick_text(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
