"""Schedules: what check() refuses, the tick arithmetic and plan(), without I/O or a clock.

Every moment here is a fixed timestamp: 2026 dates, Europe/Paris and America/New_York
across their daylight-saving changes (Paris springs forward on 29 March 2026 at 02:00
and falls back on 25 October 2026 at 03:00; New York on 8 March and 1 November). The
Hypothesis test at the end calls plan() round after round, as the scheduler does, and
checks that every interval tick is started exactly once, in order.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from fractions import Fraction
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.definition import On, Schedule, ScheduleSpec, State, Workflow
from orchestrator.core.errors import DefinitionError, InputError
from orchestrator.core.limits import MAX_DATA_BYTES
from orchestrator.core.schedule import (
    MAX_PER_ROUND,
    MAX_WINDOW,
    ON_TIME,
    check,
    plan,
    tick_id,
    tick_text,
)
from orchestrator.store.inbox import check_id

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def spec(**fields: Any) -> ScheduleSpec:
    return check(Schedule(**fields), "report", declared=False)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).timestamp()


def shown(ticks: list[float], zone: ZoneInfo) -> list[str]:
    return [datetime.fromtimestamp(t, zone).isoformat() for t in ticks]


def refusal(fields: dict[str, Any], workflow: str = "report") -> str:
    with pytest.raises(InputError) as err:
        check(Schedule(**fields), workflow, declared=False)
    message = str(err.value)
    assert "\n" not in message
    return message


def run_rounds(sp: ScheduleSpec, last: float, nows: list[float]) -> list[float]:
    """plan() round after round, feeding `last` back in, then rounds at the final `now`
    until nothing is left over (the scheduler runs again at once when next == now)."""
    started: list[float] = []
    now = last
    for now in nows:
        result = plan(sp, last, now)
        started += result.start
        last = result.last
    for _ in range(1000):
        result = plan(sp, last, now)
        started += result.start
        last = result.last
        if result.next > now:
            return started
    raise AssertionError("plan() never caught up")


# ---- check(): what is refused, naming the field -----------------------------


@pytest.mark.parametrize(
    ("fields", "workflow", "parts"),
    [
        ({"every": 60, "name": "bad name!"}, "report", ["schedule name 'bad name!'", "1 to 64"]),
        ({"every": 60, "name": "x" * 65}, "report", ["schedule name 'xxx", "1 to 64"]),
        ({"every": 60, "name": "dot.ted"}, "report", ["schedule name 'dot.ted'"]),
        ({"every": 60}, "has.dot", ["schedule name 'has.dot'"]),  # the workflow's name
    ],
)
def test_a_bad_schedule_name_is_refused_naming_it(
    fields: dict[str, Any], workflow: str, parts: list[str]
) -> None:
    message = refusal(fields, workflow)
    for part in parts:
        assert part in message, message


def test_a_name_of_64_allowed_characters_is_accepted() -> None:
    name = "A-z_09" + "x" * 58
    assert check(Schedule(every=60, name=name), "report", declared=False).name == name


@pytest.mark.parametrize(
    "fields",
    [{}, {"cron": "* * * * *", "every": 60}, {"timezone": "Europe/Paris"}],
)
def test_cron_and_every_are_one_of_the_two(fields: dict[str, Any]) -> None:
    message = refusal(fields)
    assert message.startswith("schedule report: give cron or every, one of the two"), message


@pytest.mark.parametrize("every", [0.5, "0.5s", "0.9", 0.999])
def test_every_under_one_second_is_refused(every: float | str) -> None:
    message = refusal({"every": every})
    assert message.startswith("schedule report: every must be whole seconds from 1"), message


@pytest.mark.parametrize("every", [0, -60, "0", "-5m", "soon", "15x", "", float("nan")])
def test_every_that_is_no_positive_duration_is_refused(every: float | str) -> None:
    message = refusal({"every": every})
    assert message.startswith("schedule report: every"), message
    assert "positive duration" in message, message


@pytest.mark.parametrize("every", [True, [60], {"m": 15}])
def test_every_of_another_type_is_refused(every: Any) -> None:
    message = refusal({"every": every})
    assert message.startswith("schedule report: every must be seconds or a duration"), message


@pytest.mark.parametrize(
    ("cron", "field"),
    [
        ("61 * * * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 30 2 *", "day-of-month"),  # 30 February never comes
        ("0 0 * 13 *", "month"),
        ("0 9 * * MON-FUN", "day-of-week"),
        ("* * * *", "fields"),
        ("every day", ""),
    ],
)
def test_a_bad_cron_is_refused_naming_it(cron: str, field: str) -> None:
    message = refusal({"cron": cron})
    assert message.startswith(f"schedule report: cron {cron!r} is not valid"), message
    assert field.lower() in message.lower(), message
    assert "minute hour day-of-month month day-of-week" in message


def test_a_cron_that_is_not_text_is_refused() -> None:
    message = refusal({"cron": 5})
    assert message.startswith("schedule report: cron must be text"), message


@pytest.mark.parametrize("zone", ["Mars/Olympus", "paris", "../../etc/passwd", "", 5])
def test_an_unknown_timezone_is_refused(zone: Any) -> None:
    message = refusal({"cron": "0 9 * * *", "timezone": zone})
    assert message.startswith(f"schedule report: unknown time zone {zone!r}"), message
    assert "Europe/Paris" in message  # an example of what is wanted


@pytest.mark.parametrize("catch_up", ["some", "ALL", "", None])
def test_a_bad_catch_up_is_refused(catch_up: Any) -> None:
    message = refusal({"every": 60, "catch_up": catch_up})
    assert message.startswith("schedule report: catch_up must be one of skip, one, all"), message
    assert repr(catch_up) in message


@pytest.mark.parametrize("overlap", ["queue", "Allow", None])
def test_a_bad_overlap_is_refused(overlap: Any) -> None:
    message = refusal({"every": 60, "overlap": overlap})
    assert message.startswith("schedule report: overlap must be one of skip, allow"), message


def test_catch_up_all_with_overlap_skip_is_refused() -> None:
    message = refusal({"every": 60, "catch_up": "all"})  # overlap="skip" is the default
    assert message.startswith("schedule report: catch_up='all'"), message
    assert "overlap='allow'" in message
    assert spec(every=60, catch_up="all", overlap="allow").catch_up == "all"


@pytest.mark.parametrize("window", ["367d", MAX_WINDOW + 1, "8785h"])
def test_a_catch_up_window_over_366_days_is_refused(window: float | str) -> None:
    message = refusal({"every": 60, "catch_up_window": window})
    assert message == "schedule report: catch_up_window is at most 366d", message


def test_a_catch_up_window_of_366_days_is_accepted() -> None:
    assert spec(every=60, catch_up_window="366d").catch_up_window == MAX_WINDOW


@pytest.mark.parametrize("window", [-1, "-1m", "later", None])
def test_a_catch_up_window_that_is_no_duration_is_refused(window: Any) -> None:
    message = refusal({"every": 60, "catch_up_window": window})
    assert message.startswith("schedule report: catch_up_window"), message


@pytest.mark.parametrize("given_input", [[1, 2], "a=1", 5, None])
def test_an_input_that_is_not_a_mapping_is_refused(given_input: Any) -> None:
    message = refusal({"every": 60, "input": given_input})
    assert message == "schedule report: input must be a JSON object", message


def test_an_input_over_the_data_limit_is_refused() -> None:
    message = refusal({"every": 60, "input": {"blob": "x" * MAX_DATA_BYTES}})
    assert message.startswith("the input of schedule report is "), message
    assert f"the limit is {MAX_DATA_BYTES:,}" in message


def test_an_input_that_is_not_json_data_is_refused() -> None:
    message = refusal({"every": 60, "input": {"n": float("nan")}})
    assert message.startswith("the input of schedule report is not JSON data"), message


def test_an_input_just_under_the_data_limit_is_accepted() -> None:
    blob = "x" * (MAX_DATA_BYTES - len(json.dumps({"blob": ""})))
    assert spec(every=60, input={"blob": blob}).input == {"blob": blob}


@pytest.mark.parametrize(
    ("every", "seconds"),
    [("15m", 900.0), ("90s", 90.0), ("90", 90.0), ("12h", 43200.0), ("1d", 86400.0),
     ("1.5h", 5400.0), (90, 90.0), (1, 1.0), (2.0, 2.0)],
)  # fmt: skip
def test_every_is_read_as_text_or_seconds(every: float | str, seconds: float) -> None:
    checked = spec(every=every)
    assert checked.every == seconds
    assert isinstance(checked.every, float)


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("1d", 86400.0), ("2h", 7200.0), (3600, 3600.0), ("0", 0.0), ("0s", 0.0), (0, 0.0),
     (0.0, 0.0), (" 0 ", 0.0)],
)  # fmt: skip
def test_the_catch_up_window_is_read_as_text_or_seconds_and_may_be_zero(
    window: float | str, seconds: float
) -> None:
    assert spec(every=60, catch_up_window=window).catch_up_window == seconds


def test_a_checked_schedule_has_the_defaults_and_names_its_workflow() -> None:
    checked = check(Schedule(cron="0 9 * * MON-FRI"), "report", declared=True)
    assert checked == ScheduleSpec(
        name="report",
        workflow="report",
        cron="0 9 * * MON-FRI",
        every=None,
        timezone="UTC",
        input={},
        catch_up="one",
        catch_up_window=86400.0,
        overlap="skip",
        declared=True,
    )


def test_a_checked_schedule_keeps_its_own_name_and_a_copy_of_its_input() -> None:
    given_input = MappingProxyType({"region": "eu"})
    checked = check(Schedule(every="1h", name="eu", input=given_input), "report", declared=False)
    assert checked.name == "eu"
    assert checked.workflow == "report"
    assert checked.declared is False
    assert type(checked.input) is dict
    assert checked.input == {"region": "eu"}


# ---- stored form: to_json / from_json ----------------------------------------


@pytest.mark.parametrize(
    "checked",
    [
        check(
            Schedule(
                cron="0 9 * * MON-FRI",
                timezone="Europe/Paris",
                input={"region": "eu", "n": [1, 2.5, None, True], "nested": {"a": "é"}},
                name="weekday-9",
                catch_up="all",
                catch_up_window="3d",
                overlap="allow",
            ),
            "report",
            declared=True,
        ),
        check(
            Schedule(every="15m", catch_up="skip", catch_up_window="0"), "report", declared=False
        ),
        check(Schedule(every=3, catch_up="one", catch_up_window=90), "w", declared=False),
    ],
)
def test_a_spec_reads_back_equal_from_its_json(checked: ScheduleSpec) -> None:
    text = checked.to_json()
    assert ScheduleSpec.from_json(text) == checked
    assert ScheduleSpec.from_json(text.encode()) == checked
    assert ScheduleSpec.from_json(text).to_json() == text
    assert json.loads(text)["declared"] is checked.declared


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        b"\xff\xfe",
        "",
        "[1, 2]",
        '"report"',
        "null",
        '{"workflow": "report", "every": 60}',  # no name
        '{"name": "report", "every": 60}',  # no workflow
    ],
)
def test_reading_a_garbled_spec_raises_input_error(text: str | bytes) -> None:
    with pytest.raises(InputError, match="stored schedule is unreadable"):
        ScheduleSpec.from_json(text)


@pytest.mark.parametrize(
    ("fields", "part"),
    [
        ({"cron": "61 * * * *"}, "cron '61 * * * *' is not valid"),
        ({"cron": "0 9 * * *", "every": 60}, "give cron or every"),
        ({"every": 0.5}, "every must be whole seconds from 1"),
        ({"every": 60, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 60, "catch_up": "all", "overlap": "skip"}, "catch_up='all'"),
        ({"every": 60, "input": [1]}, "input must be a JSON object"),
        ({"every": 60, "name": "bad name"}, "schedule name 'bad name'"),
        ({"every": 60, "catch_up_window": 10**9}, "catch_up_window is at most"),
    ],
)
def test_reading_a_spec_checks_it_again(fields: dict[str, Any], part: str) -> None:
    raw = {"name": "report", "workflow": "report", **fields}
    with pytest.raises(InputError) as err:
        ScheduleSpec.from_json(json.dumps(raw))
    assert part in str(err.value), str(err.value)


# ---- after() / latest_until(): intervals -------------------------------------


def test_intervals_are_anchored_at_the_unix_epoch() -> None:
    quarter = spec(every="15m")
    moment = utc(2026, 3, 1, 10, 7, 12)
    assert quarter.after(moment, 4) == [
        utc(2026, 3, 1, 10, 15),
        utc(2026, 3, 1, 10, 30),
        utc(2026, 3, 1, 10, 45),
        utc(2026, 3, 1, 11, 0),
    ]
    assert quarter.latest_until(moment) == utc(2026, 3, 1, 10, 0)


def test_interval_neighbours_are_strictly_after_and_before_a_tick() -> None:
    quarter = spec(every="15m")
    tick = utc(2026, 3, 1, 10, 15)
    assert quarter.after(tick) == [utc(2026, 3, 1, 10, 30)]
    assert quarter.latest_until(tick - 0.001) == utc(2026, 3, 1, 10, 0)
    assert quarter.after(tick - 0.001) == [tick]
    assert quarter.latest_until(tick) == tick  # at or before


def test_an_interval_ignores_the_timezone() -> None:
    utc_quarter = spec(every="15m")
    paris_quarter = spec(every="15m", timezone="Europe/Paris")
    moment = local(PARIS, 2026, 10, 25, 2, 20, fold=1)
    assert utc_quarter.after(moment, 3) == paris_quarter.after(moment, 3)
    assert utc_quarter.after(moment) == [utc(2026, 10, 25, 1, 30)]


def test_an_interval_that_does_not_divide_an_hour_still_counts_from_the_epoch() -> None:
    seven = spec(every="7m")
    ticks = seven.after(utc(2026, 3, 1), 3)
    assert all(t % 420 == 0 for t in ticks)
    assert ticks[1] - ticks[0] == 420
    assert utc(2026, 3, 1) < ticks[0] <= utc(2026, 3, 1) + 420


# ---- after() / latest_until(): cron ------------------------------------------


def test_cron_ticks_in_utc_by_default() -> None:
    weekdays = spec(cron="0 9 * * MON-FRI")
    friday_noon = utc(2026, 3, 6, 12)
    assert weekdays.after(friday_noon, 2) == [utc(2026, 3, 9, 9), utc(2026, 3, 10, 9)]
    assert weekdays.latest_until(friday_noon) == utc(2026, 3, 6, 9)
    assert weekdays.latest_until(utc(2026, 3, 9, 9)) == utc(2026, 3, 9, 9)  # at or before
    assert weekdays.latest_until(utc(2026, 3, 9, 9) - 1) == utc(2026, 3, 6, 9)
    assert weekdays.after(utc(2026, 3, 9, 9)) == [utc(2026, 3, 10, 9)]  # strictly after


def test_cron_follows_its_timezone_in_winter_and_summer() -> None:
    nine = spec(cron="0 9 * * *", timezone="Europe/Paris")
    assert nine.after(utc(2026, 3, 1, 12)) == [utc(2026, 3, 2, 8)]  # CET, +01:00
    assert nine.after(utc(2026, 4, 1, 12)) == [utc(2026, 4, 2, 7)]  # CEST, +02:00


def test_a_daily_cron_ticks_once_on_the_spring_forward_day_at_three() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = daily.after(local(PARIS, 2026, 3, 28, 12), 3)
    assert shown(ticks, PARIS) == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert daily.latest_until(local(PARIS, 2026, 3, 29, 12)) == ticks[0]
    assert daily.latest_until(ticks[0] - 1) == local(PARIS, 2026, 3, 28, 2, 30)


def test_a_daily_cron_ticks_once_on_the_fall_back_day() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = daily.after(local(PARIS, 2026, 10, 24, 12), 3)
    assert shown(ticks, PARIS) == [
        "2026-10-25T02:30:00+02:00",  # 02:30 happens twice: the first only
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    day = [t for t in ticks if local(PARIS, 2026, 10, 25) <= t < local(PARIS, 2026, 10, 26)]
    assert len(day) == 1
    assert daily.latest_until(local(PARIS, 2026, 10, 25, 12)) == ticks[0]
    assert daily.latest_until(ticks[1] - 1) == ticks[0]


def test_a_half_hourly_cron_ticks_in_both_passes_of_the_repeated_hour() -> None:
    half_hourly = spec(cron="*/30 * * * *", timezone="Europe/Paris")
    ticks = half_hourly.after(local(PARIS, 2026, 10, 25, 1, 50), 5)
    assert shown(ticks, PARIS) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    assert ticks == [utc(2026, 10, 25, 0, 0) + n * 1800 for n in range(5)]  # no gap in UTC
    assert half_hourly.latest_until(ticks[4] - 1) == ticks[3]
    assert half_hourly.latest_until(ticks[3] - 1) == ticks[2]
    assert half_hourly.latest_until(ticks[2] - 1) == ticks[1]


def test_a_half_hourly_cron_skips_the_missing_hour_in_spring() -> None:
    half_hourly = spec(cron="*/30 * * * *", timezone="Europe/Paris")
    ticks = half_hourly.after(local(PARIS, 2026, 3, 29, 1, 20), 3)
    assert shown(ticks, PARIS) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    assert ticks[1] - ticks[0] == 1800  # one real half hour


def test_a_daily_cron_in_new_york_ticks_once_when_the_clocks_go_forward() -> None:
    daily = spec(cron="30 2 * * *", timezone="America/New_York")
    ticks = daily.after(local(NEW_YORK, 2026, 3, 7, 12), 3)
    assert shown(ticks, NEW_YORK) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    autumn = spec(cron="30 1 * * *", timezone="America/New_York")
    ticks = autumn.after(local(NEW_YORK, 2026, 10, 31, 12), 3)
    assert shown(ticks, NEW_YORK) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_after_is_strictly_after_in_the_second_pass_of_the_repeated_hour() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    moment = local(PARIS, 2026, 10, 25, 2, 10, fold=1)  # 02:10+01:00, after 02:30+02:00
    assert shown(daily.after(moment), PARIS) == ["2026-10-26T02:30:00+01:00"]


# ---- plan() -------------------------------------------------------------------

QUARTER = utc(2026, 3, 1, 10, 0)  # a tick of every="15m"
M15 = 900.0


def test_an_on_time_tick_starts() -> None:
    quarter = spec(every="15m")
    result = plan(quarter, QUARTER - 10, QUARTER + 30)
    assert result.start == [QUARTER]
    assert result.missed is False
    assert result.last == QUARTER + 30
    assert result.next == QUARTER + M15


def test_nothing_starts_between_ticks() -> None:
    quarter = spec(every="15m")
    result = plan(quarter, QUARTER + 1, QUARTER + 100)
    assert result.start == []
    assert result.missed is False
    assert result.last == QUARTER + 100
    assert result.next == QUARTER + M15


def test_a_tick_already_started_does_not_start_again() -> None:
    quarter = spec(every="15m")
    first = plan(quarter, QUARTER - 10, QUARTER + 5)
    again = plan(quarter, first.last, QUARTER + 20)
    assert first.start == [QUARTER]
    assert again.start == []


@pytest.mark.parametrize("catch_up", ["skip", "one", "all"])
@pytest.mark.parametrize("window", ["0", "1d"])
def test_a_tick_up_to_on_time_late_always_starts(catch_up: str, window: str) -> None:
    quarter = spec(every="15m", catch_up=catch_up, catch_up_window=window, overlap="allow")
    late = plan(quarter, QUARTER - 10, QUARTER + ON_TIME - 0.5)
    assert late.start == [QUARTER]
    assert late.missed is False


def test_a_tick_more_than_on_time_late_was_missed() -> None:
    quarter = spec(every="15m", catch_up="skip")
    result = plan(quarter, QUARTER - 10, QUARTER + ON_TIME + 0.5)
    assert result.start == []
    assert result.missed is True
    assert result.last == QUARTER + ON_TIME + 0.5
    assert result.next == QUARTER + M15


# three ticks missed (10:00, 10:15, 10:30) and one on time (10:45, 30 s late)
LAST = QUARTER - 10
NOW = QUARTER + 3 * M15 + 30


@pytest.mark.parametrize(
    ("catch_up", "window", "started"),
    [
        ("skip", "1d", [3]),
        ("one", "1d", [2, 3]),
        ("all", "1d", [0, 1, 2, 3]),
        ("one", "20m", [2, 3]),  # 10:30 is within 20 minutes of 10:45:30
        ("all", "20m", [2, 3]),  # 10:15 is not
        ("one", "10m", [3]),  # nor is 10:30 within 10 minutes
        ("all", "10m", [3]),
        ("all", "0", [3]),
        ("one", "0", [3]),
    ],
)
def test_missed_ticks_follow_the_catch_up_policy_within_the_window(
    catch_up: str, window: str, started: list[int]
) -> None:
    quarter = spec(every="15m", catch_up=catch_up, catch_up_window=window, overlap="allow")
    result = plan(quarter, LAST, NOW)
    assert result.start == [QUARTER + n * M15 for n in started]
    assert result.missed is True
    assert result.last == NOW
    assert result.next == QUARTER + 4 * M15


@pytest.mark.parametrize(("catch_up", "started"), [("skip", []), ("one", [1]), ("all", [0, 1])])
def test_missed_ticks_with_none_on_time(catch_up: str, started: list[int]) -> None:
    quarter = spec(every="15m", catch_up=catch_up, overlap="allow")
    now = QUARTER + M15 + 100  # 10:00 and 10:15 missed, 10:30 to come
    result = plan(quarter, LAST, now)
    assert result.start == [QUARTER + n * M15 for n in started]
    assert result.missed is True
    assert result.last == now
    assert result.next == QUARTER + 2 * M15


def test_ticks_older_than_the_window_never_start() -> None:
    quarter = spec(every="15m", catch_up="all", overlap="allow", catch_up_window="1d")
    now = QUARTER + 30
    result = plan(quarter, QUARTER - 10 * 86400, now)  # ten days away
    assert len(result.start) == 96  # one day of quarters, 10:15 yesterday to 10:00 today
    assert result.start[0] == QUARTER - 86400 + M15
    assert result.start[-1] == QUARTER
    assert all(t > now - 86400 for t in result.start)
    assert result.missed is True
    one = plan(spec(every="15m", catch_up_window="1h"), QUARTER - 10 * 86400, QUARTER + 3599)
    assert one.start == [QUARTER + 3 * M15]  # the latest missed (11:00 is not yet)
    assert one.missed is True
    assert one.next == QUARTER + 4 * M15


def test_a_missed_tick_the_schedule_stood_past_does_not_start() -> None:
    # added (or resumed) at 10:05: 10:00 is before it, whatever the window
    quarter = spec(every="15m", catch_up="all", overlap="allow")
    result = plan(quarter, QUARTER + 300, QUARTER + 2 * M15 + 30)
    assert result.start == [QUARTER + M15, QUARTER + 2 * M15]


def test_cron_missed_ticks_follow_the_policy() -> None:
    weekdays = "0 9 * * MON-FRI"
    last = utc(2026, 3, 5, 12)  # Thursday noon; now Monday 09:00:20
    now = utc(2026, 3, 9, 9, 0, 20)
    for catch_up, started in [
        ("skip", [utc(2026, 3, 9, 9)]),
        ("one", [utc(2026, 3, 6, 9), utc(2026, 3, 9, 9)]),
        ("all", [utc(2026, 3, 6, 9), utc(2026, 3, 9, 9)]),
    ]:
        cron = spec(cron=weekdays, catch_up=catch_up, overlap="allow", catch_up_window="7d")
        result = plan(cron, last, now)
        assert result.start == started, catch_up
        assert result.missed is True
        assert result.next == utc(2026, 3, 10, 9)
    short = spec(cron=weekdays, catch_up="one", catch_up_window="1d")
    assert plan(short, last, now).start == [utc(2026, 3, 9, 9)]  # Friday is 3 days old


def test_cron_plan_starts_both_passes_of_the_repeated_hour_once() -> None:
    half_hourly = spec(cron="*/30 * * * *", timezone="Europe/Paris")
    start = local(PARIS, 2026, 10, 25, 1, 45)
    nows = [start + 30 * n for n in range(1, 4 * 120)]  # a round every 30 s for 4 hours
    started = run_rounds(half_hourly, start, nows)
    assert started == [utc(2026, 10, 25, 0, 0) + n * 1800 for n in range(8)]
    assert shown(started[:4], PARIS) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]


def test_cron_plan_starts_the_fall_back_daily_tick_once() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    start = local(PARIS, 2026, 10, 25, 2, 0)
    nows = [start + 30 * n for n in range(1, 241)]  # a round every 30 s for 2 hours
    started = run_rounds(daily, start, nows)
    assert shown(started, PARIS) == ["2026-10-25T02:30:00+02:00"]


def test_catch_up_one_never_starts_an_on_time_tick_twice() -> None:
    minute = spec(every=60, catch_up="one")
    base = utc(2026, 3, 1)
    result = plan(minute, base, base + 180 - 0.0005)  # 01:00 missed, 02:00 59.9995 s late
    assert result.start == [base + 60, base + 120]


def test_more_than_max_per_round_ticks_start_over_several_rounds() -> None:
    minute = spec(every=60, catch_up="all", overlap="allow")
    base = utc(2026, 3, 1)
    now = base + 250 * 60 + 5
    every_tick = [base + 60 * n for n in range(1, 251)]

    first = plan(minute, base, now)
    assert first.start == every_tick[:MAX_PER_ROUND]
    assert first.last == every_tick[MAX_PER_ROUND - 1]  # the last started
    assert first.next == now  # the next round is due at once
    assert first.missed is True

    second = plan(minute, first.last, now)
    assert second.start == every_tick[MAX_PER_ROUND : 2 * MAX_PER_ROUND]
    assert second.next == now

    third = plan(minute, second.last, now)
    assert third.start == every_tick[2 * MAX_PER_ROUND :]
    assert third.last == now
    assert third.next == base + 251 * 60


@pytest.mark.parametrize(
    "fields",
    [
        {"every": 60},
        {"every": 1},
        {"cron": "* * * * *"},
        {"cron": "*/5 * * * *", "timezone": "Europe/Paris"},
    ],
)
def test_rounds_over_a_backlog_start_each_tick_once_without_gaps(fields: dict[str, Any]) -> None:
    sp = spec(catch_up="all", overlap="allow", catch_up_window="2d", **fields)
    last = local(PARIS, 2026, 10, 24, 12)  # the backlog spans the fall-back change
    now = last + 86400 + 0.5
    expected: list[float] = []
    cursor = last
    while True:
        (tick,) = sp.after(cursor)
        if tick > now:
            break
        expected.append(tick)
        cursor = tick
    assert len(expected) > MAX_PER_ROUND
    rounds = 0
    started: list[float] = []
    while True:
        result = plan(sp, last, now)
        rounds += 1
        assert len(result.start) <= MAX_PER_ROUND
        started += result.start
        last = result.last
        if result.next > now:
            break
        assert result.next == now
    assert started == expected
    assert rounds == math.ceil(len(expected) / MAX_PER_ROUND)


# ---- intervals are whole seconds ---------------------------------------------


@pytest.mark.parametrize("every", [1.1, 2.5, "1.5s", float("inf"), "inf", 400 * 86400])
def test_an_interval_is_whole_seconds_within_bounds(every: object) -> None:
    with pytest.raises(InputError, match="every must be whole seconds"):
        check(Schedule(every=every, name="s"), "w", declared=False)  # type: ignore[arg-type]


# ---- the property: rounds at random times start every tick once, in order -----


@settings(max_examples=200, deadline=None)
@given(
    every=st.one_of(st.integers(1, 120), st.sampled_from([300, 900, 3600, 7, 59, 61])),
    first=st.floats(1_700_000_000, 1_900_000_000, allow_nan=False, allow_infinity=False),
    gaps=st.lists(st.floats(0.1, 300, allow_nan=False), min_size=1, max_size=30),
    drain_each_round=st.booleans(),
)
def test_rounds_at_increasing_times_start_every_interval_tick_once_in_order(
    every: int, first: float, gaps: list[float], drain_each_round: bool
) -> None:
    sp = spec(every=every, catch_up="all", overlap="allow", catch_up_window="1d")
    nows: list[float] = []
    now = first
    for gap in gaps:
        now += gap
        nows.append(now)
    assert now - first < sp.catch_up_window  # all within the window

    started: list[float] = []
    last = first
    for now in nows:
        while True:
            result = plan(sp, last, now)
            assert result.start == sorted(result.start)
            assert all(last < t <= now for t in result.start)
            started += result.start
            last = result.last
            if result.next > now:
                assert result.next == (Fraction(now) // every + 1) * every
                break
            assert result.next == now
            assert len(result.start) == MAX_PER_ROUND
            if not drain_each_round:
                break  # the next round comes later: the backlog grows
    while True:  # the rounds left over at the final time
        result = plan(sp, last, now)
        started += result.start
        last = result.last
        if result.next > now:
            break

    low = math.floor(Fraction(first) / every) + 1
    high = math.floor(Fraction(now) / every)
    assert started == [float(k * every) for k in range(low, high + 1)]


# ---- tick ids -----------------------------------------------------------------


def test_a_tick_id_is_the_schedule_name_and_the_tick_in_utc() -> None:
    assert tick_id("report", utc(2026, 3, 1, 9)) == "report-20260301T090000Z"
    assert tick_id("report", utc(2026, 3, 1, 9)) == tick_id("report", utc(2026, 3, 1, 9))
    assert tick_id("report", utc(2026, 3, 1, 9)) != tick_id("other", utc(2026, 3, 1, 9))
    assert tick_text(utc(2026, 3, 1, 9)) == "2026-03-01T09:00:00Z"


def test_a_tick_id_does_not_depend_on_the_machine_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tick = utc(2026, 10, 25, 1, 30)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert tick_id("report", tick) == "report-20261025T013000Z"
        assert tick_text(tick) == "2026-10-25T01:30:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_two_half_past_twos_of_the_fall_back_night_have_two_ids() -> None:
    half_hourly = spec(cron="*/30 * * * *", timezone="Europe/Paris")
    ticks = half_hourly.after(local(PARIS, 2026, 10, 25, 2, 10), 3)
    assert shown([ticks[0], ticks[2]], PARIS) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    ]
    first, second = tick_id("report", ticks[0]), tick_id("report", ticks[2])
    assert first == "report-20261025T003000Z"
    assert second == "report-20261025T013000Z"
    assert tick_text(ticks[2]) == "2026-10-25T01:30:00Z"


def test_a_tick_id_of_the_longest_name_is_a_valid_instance_id() -> None:
    longest = spec(every=1, name="N" * 64)
    for tick in longest.after(utc(2026, 12, 31, 23, 59, 58), 3):
        made = tick_id(longest.name, tick)
        assert check_id(made, "instance id") == made
        assert len(made) <= 100
    with pytest.raises(InputError):
        check_id(tick_id(longest.name, 0.0) + "+", "instance id")  # check_id does refuse


# ---- declared on a workflow class ---------------------------------------------


def test_a_declared_schedule_compiles_named_after_the_workflow() -> None:
    class NightlyReport(Workflow):
        start = State(initial=True)
        end = State(final=True)
        transitions = [On("go", source=start, target=end)]
        schedules = [Schedule(cron="0 3 * * *", timezone="Europe/Paris", input={"n": 1})]

    (declared,) = NightlyReport.definition.schedules
    assert declared == ScheduleSpec(
        name="nightly_report",
        workflow="nightly_report",
        cron="0 3 * * *",
        every=None,
        timezone="Europe/Paris",
        input={"n": 1},
        catch_up="one",
        catch_up_window=86400.0,
        overlap="skip",
        declared=True,
    )


def test_several_named_schedules_compile_in_order_under_the_workflow_name() -> None:
    class Several(Workflow):
        name = "reports"
        correlate_by = "region"
        start = State(initial=True)
        end = State(final=True)
        transitions = [On("go", source=start, target=end)]
        schedules = [
            Schedule(every="1h", name="eu", input={"region": "eu"}),
            Schedule(cron="0 9 * * *", name="us", input={"region": "us"}),
        ]

    specs = Several.definition.schedules
    assert [s.name for s in specs] == ["eu", "us"]
    assert {s.workflow for s in specs} == {"reports"}
    assert all(s.declared for s in specs)
    assert specs[0].every == 3600.0


def test_a_workflow_without_schedules_has_none() -> None:
    class Plain(Workflow):
        start = State(initial=True)
        end = State(final=True)
        transitions = [On("go", source=start, target=end)]

    assert Plain.definition.schedules == ()


def assert_refused(err: pytest.ExceptionInfo[DefinitionError], cls: str, part: str) -> None:
    message = str(err.value)
    assert message.startswith(f"workflow {cls}: "), message
    assert part in message, message


def test_two_unnamed_schedules_are_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class TwoUnnamed(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = [Schedule(every="1h"), Schedule(cron="0 9 * * *", name="morning")]

    assert_refused(err, "TwoUnnamed", "declares several schedules: give each a name")


def test_two_schedules_of_one_name_are_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class SameName(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = [Schedule(every="1h", name="a"), Schedule(every="2h", name="a")]

    assert_refused(err, "SameName", "two schedules are named 'a'")


@pytest.mark.parametrize(
    ("declared", "part"),
    [
        (Schedule(every="1h"), "schedules must be a list of Schedule(...)"),
        (None, "schedules must be a list of Schedule(...)"),
        (42, "schedules must be a list of Schedule(...)"),
        ([{"every": "1h"}], "schedules entries must be Schedule(...), not {'every': '1h'}"),
        ([Schedule(every="1h", name="a"), "0 9 * * *"], "schedules entries must be Schedule(...)"),
        ("0 9 * * *", "Schedule(...)"),
    ],
)
def test_schedules_that_are_not_a_list_of_schedule_are_refused(declared: Any, part: str) -> None:
    with pytest.raises(DefinitionError) as err:

        class NotAList(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = declared

    assert_refused(err, "NotAList", part)


def test_a_bad_cron_on_a_class_is_refused_naming_the_class() -> None:
    with pytest.raises(DefinitionError) as err:

        class BadCron(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = [Schedule(cron="61 * * * *")]

    assert_refused(err, "BadCron", "schedule bad_cron: cron '61 * * * *' is not valid")


def test_a_bad_field_on_a_class_is_refused_naming_the_schedule() -> None:
    with pytest.raises(DefinitionError) as err:

        class BadWindow(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = [Schedule(every="1h", name="hourly", catch_up_window="400d")]

    assert_refused(err, "BadWindow", "schedule hourly: catch_up_window is at most 366d")


def test_a_schedule_lacking_the_correlation_key_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Correlated(Workflow):
            correlate_by = "order_id"
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]
            schedules = [Schedule(every="1h", input={"region": "eu"})]

    assert_refused(err, "Correlated", "schedule correlated: the workflow correlates by 'order_id'")


def test_describe_says_an_interval_and_a_cron_with_its_zone() -> None:
    assert spec(every="15m").describe() == "every 15m"
    assert spec(every=90).describe() == "every 90s"
    said = spec(cron="0 9 * * MON-FRI", timezone="Europe/Paris").describe()
    assert said.endswith(" (Europe/Paris)"), said
    assert "09:00" in said, said
