"""Issue #17's flows variant runs end to end on tiny sizes (no timings asserted): the engine
publishing its business events and a subscriber process that counts every one of them
exactly once; and again with the lifecycle events, nothing subscribed.

It starts its own redis-server and real worker processes, as test_bench_flows does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.flows.flow3_published import PER_WORKFLOW, TYPES, WITH_LIFECYCLE
from bench.flows.run import (
    PUBLISHING_EVENTS,
    PUBLISHING_LAG,
    PUBLISHING_RATIO,
    PUBLISHING_UNREAD,
    Preset,
    run_flows,
)
from bench.flows.subscriber import Board
from bench.targets import PUBLISHING_SYSTEM, lines

WORKFLOWS = 6
# no overhead rounds: tests/bench/test_bench_flows.py runs those on their own
TINY = Preset(preloaded=WORKFLOWS, rates=(), drain=60.0, drain_preloaded=60.0, overhead_rounds=0)


@pytest.mark.slow
def test_the_subscriber_consumes_every_published_event_once() -> None:
    result = run_flows(["orchestrator"], TINY)  # the publishing variant comes alongside

    systems = result["details"]["systems"]
    assert list(systems) == ["orchestrator", PUBLISHING_SYSTEM]
    found = systems[PUBLISHING_SYSTEM]
    assert "error" not in found, found
    assert found["throughput"]["finished"] == WORKFLOWS
    assert found["throughput"]["left_at_end"]["instances completed"] == WORKFLOWS
    unread = found["throughput_unread"]  # the same publishing, no subscriber
    assert unread["finished"] == WORKFLOWS
    assert unread["left_at_end"]["events published"] == WITH_LIFECYCLE * WORKFLOWS
    seen = found["subscriber"]
    assert "error" not in seen, seen
    expected = PER_WORKFLOW * WORKFLOWS
    assert seen["published"] == seen["consumed"] == seen["distinct_ids"] == expected
    assert seen["by_type"] == dict.fromkeys(TYPES, WORKFLOWS)
    assert seen["instances"] == seen["workflows"] == WORKFLOWS
    assert seen["events_per_workflow"] == PER_WORKFLOW == 4
    assert WITH_LIFECYCLE == 9
    assert seen["caught_up"] and seen["caught_up_seconds"] is not None
    assert 0 <= seen["lag_at_last_finish"] <= seen["published_by_last_finish"] <= expected
    # the subscriber's requests were counted in its process and left out of the engine's
    # (whose applier acknowledges its inbox entries: at most one XACK per inbox event)
    # one XACK per read: as many as the events when each read brings one (a slow machine),
    # fewer when reads bring several; never more
    assert 0 < seen["requests"]["commands"]["xack"] <= expected
    assert found["throughput"]["redis"]["commands"].get("xack", 0) <= 4 * WORKFLOWS

    rows = {row["workload"]: row for row in result["rows"] if row["system"] == PUBLISHING_SYSTEM}
    assert set(rows) == {
        PUBLISHING_RATIO.format(WORKFLOWS),
        PUBLISHING_UNREAD.format(WORKFLOWS),
        PUBLISHING_LAG,
        PUBLISHING_EVENTS,
        "3-step workflows/s, 2 workers, W=6",
    }
    assert rows[PUBLISHING_EVENTS]["met"] is True
    assert rows[PUBLISHING_EVENTS]["value"] == [PER_WORKFLOW, PER_WORKFLOW]
    judged = {line.workload: line for line in lines(result["rows"], "2")}
    # one run each: figures only; bench.flows.overhead judges the cost over paired rounds
    assert judged[f"2. {PUBLISHING_RATIO.format(WORKFLOWS)}"].target == "figures only"
    assert judged[f"2. {PUBLISHING_LAG}"].target == "caught up <= 2 s"


def test_the_subscriber_lag_line_is_judged() -> None:
    rows: list[dict[str, Any]] = [
        {"workload": PUBLISHING_LAG, "system": PUBLISHING_SYSTEM, "value": [1200, 0.4]},
    ]
    (lag,) = lines(rows, "2")
    assert lag.met is True
    rows[0]["value"] = [9000, "> 30"]
    (lag,) = lines(rows, "2")
    assert lag.met is False


def test_the_board_counts_across_processes_views(tmp_path: Path) -> None:
    writer = Board.create(tmp_path / "board")
    reader = Board(tmp_path / "board")
    try:
        writer.sent([b"*1\r\n", b"$4\r\nPING\r\n"])
        writer.command(("XACK", "s", "g", "1-0"))
        writer.command(("SOMETHING",))
        writer.consumed_one(12.5)
        assert reader.requests() == (1, 14, {"xack": 1, "other": 1})
        assert (reader.consumed, reader.last_consumed_at) == (1, 12.5)
        assert not writer.stopped()
        reader.stop()
        assert writer.stopped()
    finally:
        writer.close()
        reader.close()
