"""Parallel states and maps in the pure transition function (issue #15): branches with
their own tries, fan-in by a documented rule, failure policies, tolerance, and
compensation of exactly the branches that completed, newest first."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Branch, Map, On, State, Workflow
from orchestrator.core import events as ev
from orchestrator.core.effects import RunTask, StartTimer
from orchestrator.core.errors import DefinitionError
from orchestrator.core.graph import dot, mermaid
from orchestrator.core.instance import Instance
from tests.core.test_machine import Run, of_type
from tests.fan_workflows import Checkout, Doubling, PatientCheckout, Unhandled, charge


def tries(run: Run, index: int = -1) -> dict[str, RunTask]:
    return {t.state: t for t in of_type(run.results[index].effects, RunTask)}


def answer(run: Run, task: RunTask, result: Any = None, error: str | None = None) -> Any:
    data: dict[str, Any] = {
        "state": task.state,
        "attempt": task.attempt,
        "entered_seq": task.entered_seq,
    }
    if task.kind == "compensation":
        kind = ev.COMPENSATION_FAILED if error else ev.COMPENSATION_COMPLETED
    else:
        kind = ev.TASK_FAILED if error else ev.TASK_COMPLETED
    if error:
        data.update(error_type=error, message=f"{error} raised", retryable=False)
    else:
        data["result"] = result
    return run.send(kind, data)


def test_a_parallel_state_starts_every_branch_at_once() -> None:
    run = Run(Checkout, {"order": 1})
    started = tries(run)
    assert sorted(started) == ["preparing/charge", "preparing/label", "preparing/reserve"]
    assert all(t.attempt == 1 and t.context == {"order": 1} for t in started.values())
    assert run.inst.attempt == 0 and run.inst.fan is not None
    # branches that name a compensation are followed in flight
    assert {s for _, _, s in run.inst.inflight} == {"preparing/charge", "preparing/reserve"}


def test_the_state_is_left_when_all_complete_merged_in_declaration_order() -> None:
    run = Run(Checkout)
    started = tries(run)
    answer(run, started["preparing/label"], "L1")
    first = answer(run, started["preparing/reserve"], {"reserved": True, "who": "reserve"})
    assert first.outcome == "branch" and run.inst.state == "preparing"
    last = answer(run, started["preparing/charge"], {"charged": True, "who": "charge"})
    assert last.outcome == "transition" and run.inst.state == "done"
    # declaration order: charge, reserve, label; a later branch's keys win
    assert run.inst.context == {"charged": True, "reserved": True, "who": "reserve", "label": "L1"}
    assert run.inst.compensations == ()  # the instance ended: nothing left to undo
    assert run.inst.fan is None


def test_a_failed_branch_compensates_only_the_completed_ones_newest_first() -> None:
    run = Run(Checkout)
    started = tries(run)
    answer(run, started["preparing/label"], "L1")
    answer(run, started["preparing/charge"], {"charged": True})
    failed = answer(run, started["preparing/reserve"], error="OutOfStock")
    assert run.inst.status == "compensating"
    (undo,) = of_type(failed.effects, RunTask)
    assert (undo.kind, undo.state) == ("compensation", "preparing/charge")
    assert undo.task.endswith(":refund")
    answer(run, undo, {"refunded": True})
    assert (run.inst.state, run.inst.status) == ("failed", "failed")


def test_fail_fast_stops_waiting_and_a_late_branch_is_still_undone() -> None:
    run = Run(Checkout)
    started = tries(run)
    failed = answer(run, started["preparing/reserve"], error="OutOfStock")
    # the charge is still in flight: the compensation run waits for it
    assert run.inst.status == "compensating" and of_type(failed.effects, RunTask) == []
    assert "preparing/charge" in failed.note
    late = answer(run, started["preparing/charge"], {"charged": True})
    assert late.outcome == "late"
    (undo,) = of_type(late.effects, RunTask)
    assert undo.state == "preparing/charge" and undo.kind == "compensation"
    answer(run, undo)
    assert run.inst.state == "failed"


def test_wait_all_awaits_the_other_branches_before_failing() -> None:
    run = Run(PatientCheckout)
    started = tries(run)
    first = answer(run, started["preparing/reserve"], error="OutOfStock")
    assert first.outcome == "branch" and run.inst.status == "running"
    last = answer(run, started["preparing/charge"], {"charged": True})
    assert run.inst.status == "compensating"
    (undo,) = of_type(last.effects, RunTask)
    assert undo.state == "preparing/charge"


def test_each_branch_retries_under_its_own_budget() -> None:
    run = Run(Checkout)
    started = tries(run)
    data = {"state": "preparing/charge", "attempt": 1, "entered_seq": 1}
    failed = run.send(ev.TASK_FAILED, {**data, "error_type": "Declined", "message": "try again"})
    assert failed.outcome == "retry" and "charge" in failed.note
    (timer,) = of_type(failed.effects, StartTimer)
    assert timer.data["branch"] == "charge" and timer.data["attempt"] == 2
    # a second report of the same try changes nothing
    again = run.send(ev.TASK_FAILED, {**data, "error_type": "Declined", "message": "try again"})
    assert again.outcome == "ignored" and of_type(again.effects, StartTimer) == []
    retried = run.fire_timer(timer)
    (second,) = of_type(retried.effects, RunTask)
    assert (second.state, second.attempt) == ("preparing/charge", 2)
    # the other branches ran on, unaffected
    answer(run, started["preparing/reserve"])
    answer(run, started["preparing/label"])
    stale = answer(run, started["preparing/charge"], {"charged": "first try"})
    assert "stale" in stale.note and run.inst.state == "preparing"
    answer(run, second, {"charged": True})
    assert run.inst.state == "done"


def test_duplicated_and_stale_branch_answers_change_nothing() -> None:
    run = Run(Checkout)
    started = tries(run)
    answer(run, started["preparing/label"], "L1")
    before = run.inst
    dup = answer(run, started["preparing/label"], "L2")
    assert dup.outcome == "ignored" and "stale" in dup.note
    assert run.inst.fan == before.fan and run.inst.context == before.context
    unknown = run.send(
        ev.TASK_COMPLETED, {"state": "preparing/nope", "attempt": 1, "entered_seq": 1}
    )
    assert "stale" in unknown.note and run.inst.fan == before.fan


def test_cancel_while_branches_run_waits_for_them_and_undoes_what_completed() -> None:
    run = Run(Checkout)
    started = tries(run)
    answer(run, started["preparing/charge"], {"charged": True})
    cancelled = run.send(ev.CANCEL, {"reason": "customer"})
    assert run.inst.status == "compensating" and "preparing/reserve" in cancelled.note
    late = answer(run, started["preparing/reserve"], {"reserved": True})
    undone = [t.state for t in of_type(late.effects, RunTask)]
    assert undone == ["preparing/reserve"]  # newest first: the reserve completed last
    second = answer(run, of_type(late.effects, RunTask)[0])
    assert [t.state for t in of_type(second.effects, RunTask)] == ["preparing/charge"]
    answer(run, of_type(second.effects, RunTask)[0])
    assert run.inst.status == "cancelled"


def test_an_unhandled_failure_halts_and_retry_runs_only_what_did_not_complete() -> None:
    run = Run(Unhandled)
    started = tries(run)
    answer(run, started["preparing/charge"], {"charged": True})
    failed = answer(run, started["preparing/reserve"], error="OutOfStock")
    assert failed.outcome == "failed" and run.inst.halted
    assert "branch reserve failed" in (run.inst.reason or "")
    resumed = run.send(ev.RESUME)
    assert [t.state for t in of_type(resumed.effects, RunTask)] == ["preparing/reserve"]
    (again,) = of_type(resumed.effects, RunTask)
    answer(run, again, {"reserved": True})
    assert run.inst.state == "done"
    assert run.inst.context == {"charged": True, "reserved": True}
    assert run.inst.compensations == ()


# ---- maps ---------------------------------------------------------------------


def test_a_map_starts_items_up_to_its_concurrency_and_gathers_in_order() -> None:
    run = Run(Doubling, {"items": [1, 2, 3, 4, 5], "customer": "c"})
    first = tries(run)
    assert sorted(first) == ["doubling/0", "doubling/1", "doubling/2"]
    assert first["doubling/1"].context == {"customer": "c", "item": 2, "index": 1}
    # item 2 completes first: one more starts, and so on
    more = answer(run, first["doubling/2"], 6)
    assert sorted(tries(run)) == ["doubling/3"] and more.outcome == "branch"
    answer(run, first["doubling/0"], 2)
    fourth = tries(run)["doubling/4"]
    third = of_type(run.results[-2].effects, RunTask)[0]
    answer(run, fourth, 10)
    answer(run, third, 8)
    assert run.inst.state == "doubling"
    answer(run, first["doubling/1"], 4)
    assert run.inst.state == "done"
    assert run.inst.context["doubled"] == [2, 4, 6, 8, 10]
    assert "doubled_failures" not in run.inst.context


def test_a_map_tolerates_its_declared_failures_and_lists_them() -> None:
    items = list(range(8))
    run = Run(Doubling, {"items": items})
    pending = list(tries(run).values())
    while pending:
        task = pending.pop(0)
        index = int(task.state.split("/")[1])
        result = answer(run, task, error="Bad") if index in (1, 6) else answer(run, task, index * 2)
        pending.extend(of_type(result.effects, RunTask))
    assert run.inst.state == "done"
    assert run.inst.context["doubled"] == [0, 4, 6, 8, 10, 14]
    failures = run.inst.context["doubled_failures"]
    assert [f["index"] for f in failures] == [1, 6] and failures[0]["error_type"] == "Bad"


def test_a_map_past_its_tolerance_fails_and_undoes_every_completed_item() -> None:
    run = Run(Doubling, {"items": list(range(12))})
    pending = list(tries(run).values())
    completed: list[str] = []
    while run.inst.status == "running":  # items 2 to 7 fail: one more than tolerated
        task = pending.pop(0)
        index = int(task.state.split("/")[1])
        if 2 <= index <= 7:
            result = answer(run, task, error="Bad")
        else:
            result = answer(run, task, index)
            completed.append(task.state)
        pending.extend(of_type(result.effects, RunTask))
    assert run.inst.status == "compensating" and pending  # still in flight: awaited
    assert max(int(t.state.split("/")[1]) for t in pending) <= 9  # nothing more started
    for task in pending:  # they complete late: still undone
        result = answer(run, task, 0)
        completed.append(task.state)
    undone: list[str] = []
    while run.inst.status == "compensating":
        (undo,) = of_type(run.last.effects, RunTask)
        undone.append(undo.state)
        answer(run, undo)
    assert run.inst.state == "failed"
    assert undone == list(reversed(completed)) and len(undone) == len(set(undone))


def test_an_empty_map_completes_at_once_and_a_non_list_fails_the_state() -> None:
    empty = Run(Doubling, {"items": []})
    assert empty.inst.state == "done" and empty.inst.context["doubled"] == []
    wrong = Run(Doubling, {"items": "not a list"})
    assert wrong.inst.state == "failed"
    assert any("MapItemsNotAList" in r.note or "not a list" in r.note for r in wrong.results)


def test_a_map_of_thousands_of_items_never_orders_more_than_its_concurrency_at_once() -> None:
    class Wide(Workflow):
        name = "wide"
        mapping = State(initial=True, map=Map(charge, items="items", max_concurrency=50))
        done = State(final=True)
        transitions = [On("task.completed", source=mapping, target=done)]

    run = Run(Wide, {"items": list(range(2_000))})
    pending = list(tries(run).values())
    assert len(pending) == 50
    most = 0
    while pending:
        result = answer(run, pending.pop(0), 1)
        started = of_type(result.effects, RunTask)
        most = max(most, len(started))
        pending.extend(started)
    assert most == 1 and run.inst.state == "done"
    assert len(run.inst.context["mapping"]) == 2_000


def test_the_fan_survives_its_hash_and_a_corrupt_one_is_named() -> None:
    run = Run(Doubling, {"items": [1, 2, 3, 4]})
    answer(run, tries(run)["doubling/0"], 2)
    again = Instance.from_fields(run.inst.to_fields())
    assert again == run.inst
    fields = {**run.inst.to_fields(), "fan": '{"tries": 3}'}
    with pytest.raises(Exception, match="field 'fan'"):
        Instance.from_fields(fields)


# ---- checked when the class is created ------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (State(initial=True, parallel={}), "parallel must be a dict"),
        (State(initial=True, parallel={"not ok": charge}), "is not an identifier"),
        (State(initial=True, parallel={"a": charge}, task=charge), "instead of a task"),
        (
            State(initial=True, parallel={"a": charge}, map=Map(charge, items="x")),
            "parallel or map, not both",
        ),
        (State(initial=True, map=Map(charge, items="")), "items must be a context key"),
        (State(initial=True, map=Map(charge, items="x", max_concurrency=0)), "max_concurrency"),
        (
            State(initial=True, map=Map(charge, items="x", tolerated_failures=-1)),
            "tolerated_failures",
        ),
        (
            State(initial=True, map=Map(charge, items="x", tolerated_failure_percentage=101)),
            "percentage",
        ),
        (State(initial=True, map=Map(charge, items="x", results="x")), "other than items"),
        (State(initial=True, parallel={"a": charge}, on_failure="never"), "on_failure"),  # type: ignore[arg-type]
        (State(initial=True, parallel={"a": Branch("not a path")}), "branch 'a'"),
    ],
)
def test_bad_fan_declarations_are_refused_naming_the_class_and_state(
    state: State, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message) as caught:

        class Bad(Workflow):
            name = "bad"
            start = state
            done = State(final=True)
            transitions = [On("task.completed", source=start, target=done)]

    assert "Bad" in str(caught.value) and "'start'" in str(caught.value)


def test_graphs_draw_the_branches_and_the_map() -> None:
    drawn = mermaid(Checkout.definition)
    assert "| charge: charge (undo refund)" in drawn and "| label: label" in drawn
    assert "done : done" not in drawn  # states that fan nothing out get no note
    assert "map double over items -#gt; doubled" in mermaid(Doubling.definition)
    assert "3 at once, undo undo_double, tolerates 5 failures" in dot(Doubling.definition)
    assert '"preparing" [label="preparing\\lparallel (fail fast):\\l' in dot(Checkout.definition)


def test_a_deadline_failing_a_parallel_state_leaves_no_branch_running() -> None:
    class Hurried(Workflow):
        name = "hurried"
        deadline = 60
        preparing = State(initial=True, parallel={"a": charge, "b": charge})
        done = State(final=True)
        transitions = [On("task.completed", source=preparing, target=done)]

    run = Run(Hurried)
    (timer,) = [t for t in of_type(run.last.effects, StartTimer) if t.id.endswith("-deadline")]
    run.fire_timer(timer)
    assert run.inst.status == "failed" and run.inst.finished
    assert run.inst.fan is None and run.inst.summary()["branches"] is None
