"""The definition language: a malformed workflow fails when its class is created.

Every check raises DefinitionError with a message naming the class, the state
(where there is one) and what is wrong; a well-formed class compiles into the
frozen Definition the transition function reads.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator import ANY, Notify, On, State, Task, Workflow
from orchestrator.core.definition import (
    CANCELLED,
    Definition,
    NotifySpec,
    TaskSpec,
    TransitionSpec,
    task_path,
)
from orchestrator.core.errors import DefinitionError, OrchestratorError
from tests.sample_workflows import big_enough, step, undo


def assert_message(err: pytest.ExceptionInfo[DefinitionError], *parts: str) -> None:
    """The message starts by naming the class (the first part) and contains every part."""
    message = str(err.value)
    assert message.startswith(parts[0]), message
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ---- transitions: sources and targets ---------------------------------------


def test_unknown_state_name_as_source_is_named_with_the_known_states() -> None:
    with pytest.raises(DefinitionError) as err:

        class UnknownSource(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [
                On("go", source=start, target=end),
                On("back", source="nowhere", target=end),
            ]

    assert_message(err, "workflow UnknownSource:", "source", "unknown state 'nowhere'", "'back'")
    # the known states are listed, sorted, to help fix the typo
    assert "(states: end, start)" in str(err.value)


def test_unknown_state_name_as_target_is_named() -> None:
    with pytest.raises(DefinitionError) as err:

        class UnknownTarget(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target="ned")]

    assert_message(err, "workflow UnknownTarget:", "target", "unknown state 'ned'", "'go'")


def test_unknown_state_name_inside_a_tuple_of_sources_is_named() -> None:
    with pytest.raises(DefinitionError) as err:

        class UnknownInTuple(Workflow):
            start = State(initial=True)
            middle = State()
            end = State(final=True)
            transitions = [
                On("go", source=start, target=middle),
                On("stop", source=(start, "midle"), target=end),
            ]

    assert_message(err, "workflow UnknownInTuple:", "'midle'", "'stop'")


def test_state_object_of_another_workflow_as_target_is_rejected() -> None:
    class Other(Workflow):
        begin = State(initial=True)
        elsewhere = State(final=True)
        transitions = [On("go", source=begin, target=elsewhere)]

    with pytest.raises(DefinitionError) as err:

        class Borrower(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [
                On("go", source=start, target=end),
                On("jump", source=start, target=Other.elsewhere),
            ]

    assert_message(
        err, "workflow Borrower:", "target", "State(elsewhere)", "not a state of this workflow"
    )


def test_state_object_of_another_workflow_as_source_is_rejected() -> None:
    class Lender(Workflow):
        begin = State(initial=True)
        foreign = State()
        finish = State(final=True)
        transitions = [
            On("go", source=begin, target=foreign),
            On("go", source=foreign, target=finish),
        ]

    with pytest.raises(DefinitionError) as err:

        class Taker(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=Lender.foreign, target=end)]

    assert_message(err, "workflow Taker:", "source", "State(foreign)", "not a state")


def test_source_that_is_not_a_state_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class NumberSource(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=42, target=end)]  # type: ignore[arg-type]

    assert_message(err, "workflow NumberSource:", "'go'", "42")


def test_transition_row_that_is_not_an_on_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class TupleRow(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [("go", "start", "end")]  # type: ignore[list-item]

    assert_message(err, "workflow TupleRow:", "transition 0", "not an On")


def test_transition_without_event_type_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class NoEvent(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("", source=start, target=end)]

    assert_message(err, "workflow NoEvent:", "transition 0", "no event type")


# ---- initial, final, reachability -------------------------------------------


def test_no_states_at_all_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class Empty(Workflow):
            pass

    assert_message(err, "workflow Empty:", "declares no states")


def test_no_initial_state_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class NoStart(Workflow):
            waiting = State()
            end = State(final=True)
            transitions = [On("go", source=waiting, target=end)]

    assert_message(err, "workflow NoStart:", "no initial state", "initial=True")


def test_two_initial_states_are_both_named() -> None:
    with pytest.raises(DefinitionError) as err:

        class TwoStarts(Workflow):
            first = State(initial=True)
            second = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=(first, second), target=end)]

    assert_message(err, "workflow TwoStarts:", "more than one initial state", "first", "second")


def test_state_both_initial_and_final_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class Instant(Workflow):
            only = State(initial=True, final=True)

    assert_message(err, "workflow Instant:", "'only'", "both initial and final")


def test_unreachable_state_is_named_with_the_initial_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Orphaned(Workflow):
            start = State(initial=True)
            end = State(final=True)
            orphan = State()
            transitions = [
                On("go", source=start, target=end),
                On("leave", source=orphan, target=end),
            ]

    assert_message(
        err, "workflow Orphaned:", "state 'orphan' is unreachable", "initial state 'start'"
    )


def test_state_reachable_only_from_an_unreachable_state_is_unreachable_too() -> None:
    with pytest.raises(DefinitionError) as err:

        class Island(Workflow):
            start = State(initial=True)
            end = State(final=True)
            island_a = State()
            island_b = State(final=True)
            transitions = [
                On("go", source=start, target=end),
                On("hop", source=island_a, target=island_b),
            ]

    assert_message(err, "workflow Island:", "'island_a'", "unreachable")


def test_final_state_with_outgoing_transition_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class Zombie(Workflow):
            start = State(initial=True)
            done = State(final=True)
            transitions = [
                On("go", source=start, target=done),
                On("revive", source=done, target=start),
            ]

    assert_message(err, "workflow Zombie:", "state 'done' is final", "outgoing", "'revive'")


def test_final_state_among_a_tuple_of_sources_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class ZombieTuple(Workflow):
            start = State(initial=True)
            done = State(final=True)
            transitions = [
                On("go", source=start, target=done),
                On("again", source=(start, done), target=done),
            ]

    assert_message(err, "workflow ZombieTuple:", "'done'", "final", "'again'")


# ---- guards and tasks --------------------------------------------------------


def test_guard_that_is_not_callable_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class BadGuard(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end, guard="yes")]  # type: ignore[arg-type]

    assert_message(err, "workflow BadGuard:", "'go'", "from start", "guard 'yes'", "not callable")


def test_task_that_is_a_lambda_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class LambdaTask(Workflow):
            work = State(initial=True, task=lambda ctx: None)
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(
        err, "workflow LambdaTask:", "state 'work'", "task", "<lambda>", "cannot be imported"
    )


def test_task_that_is_a_nested_function_is_rejected() -> None:
    def inner(ctx: dict[str, Any]) -> None:
        return None

    with pytest.raises(DefinitionError) as err:

        class NestedTask(Workflow):
            work = State(initial=True, task=Task(inner, retries=1))
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(err, "workflow NestedTask:", "state 'work'", "inner", "module level")


def test_compensation_that_is_a_nested_function_is_rejected() -> None:
    def inner_undo(ctx: dict[str, Any]) -> None:
        return None

    with pytest.raises(DefinitionError) as err:

        class NestedUndo(Workflow):
            work = State(initial=True, task=step, compensation=inner_undo)
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(err, "workflow NestedUndo:", "state 'work'", "compensation", "inner_undo")


def test_task_that_is_neither_function_nor_path_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class NumberTask(Workflow):
            work = State(initial=True, task=Task(7))  # type: ignore[arg-type]
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(err, "workflow NumberTask:", "state 'work'", "7", "neither a function")


@pytest.mark.parametrize(
    "path",
    ["not a path", "nodots", "module:", ":function", "a:b:c", "pkg/module:fn", ""],
)
def test_bad_dotted_path_string_is_rejected(path: str) -> None:
    with pytest.raises(DefinitionError) as err:

        class BadPath(Workflow):
            work = State(initial=True, task=path)
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(err, "workflow BadPath:", "state 'work'", repr(path), "dotted path")


@pytest.mark.parametrize("path", ["package.module:function", "package.module.function", "m:C.f"])
def test_good_dotted_path_string_is_kept_as_given(path: str) -> None:
    class GoodPath(Workflow):
        work = State(initial=True, task=path)
        end = State(final=True)
        transitions = [On("task.completed", source=work, target=end)]

    spec = GoodPath.definition.states["work"].task
    assert spec is not None
    assert spec.path == path


@pytest.mark.parametrize(
    ("state_kwargs", "needle"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -1.5}, "timeout must be a positive number"),
        ({"timeout": "10"}, "timeout must be a positive number"),
        ({"task": Task(step, timeout=0)}, "timeout > 0"),
        ({"task": Task(step, timeout=-3)}, "timeout > 0"),
        ({"task": Task(step, retries=-1)}, "retries >= 0"),
        ({"task": Task(step, backoff=-0.1)}, "backoff >= 0"),
        ({"task": step, "compensation": Task(undo, timeout=0)}, "compensation needs"),
    ],
    ids=[
        "state-timeout-zero",
        "state-timeout-negative",
        "state-timeout-string",
        "task-timeout-zero",
        "task-timeout-negative",
        "task-retries-negative",
        "task-backoff-negative",
        "compensation-timeout-zero",
    ],
)
def test_non_positive_timeouts_and_negative_retry_settings_are_rejected(
    state_kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(DefinitionError) as err:

        class BadNumbers(Workflow):
            work = State(initial=True, **state_kwargs)
            end = State(final=True)
            transitions = [On("task.completed", source=work, target=end)]

    assert_message(err, "workflow BadNumbers:", "state 'work'", needle)


@pytest.mark.parametrize("bad_version", [0, -1, True, 1.5, "2", None])
def test_bad_version_is_rejected(bad_version: object) -> None:
    with pytest.raises(DefinitionError) as err:

        class Versioned(Workflow):
            version = bad_version  # type: ignore[assignment]
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]

    assert_message(
        err, "workflow Versioned:", "version must be a positive integer", repr(bad_version)
    )


# ---- states that cannot be what they claim ----------------------------------


def test_compensation_without_a_task_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class UndoNothing(Workflow):
            start = State(initial=True)
            waiting = State(compensation=undo)
            end = State(final=True)
            transitions = [
                On("go", source=start, target=waiting),
                On("go", source=waiting, target=end),
            ]

    assert_message(err, "workflow UndoNothing:", "state 'waiting'", "compensation", "no task")


@pytest.mark.parametrize(
    "state_kwargs",
    [
        {"task": step},
        {"task": Task(step, retries=2)},
        {"task": "package.module:function"},
        {"task": step, "compensation": undo},
        {"timeout": 5},
    ],
    ids=["function", "task", "path", "with-compensation", "timeout"],
)
def test_final_state_with_a_task_or_timeout_is_rejected(state_kwargs: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError) as err:

        class BusyEnd(Workflow):
            start = State(initial=True)
            end = State(final=True, **state_kwargs)
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow BusyEnd:", "state 'end' is final", "cannot run a task")


def test_unknown_outcome_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class OddOutcome(Workflow):
            start = State(initial=True)
            end = State(final=True, outcome="exploded")  # type: ignore[arg-type]
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow OddOutcome:", "state 'end'", "outcome must be")


def test_notify_entry_that_is_not_a_notify_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class LooseNotify(Workflow):
            start = State(initial=True)
            end = State(final=True, notify=["email"])  # type: ignore[list-item]
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow LooseNotify:", "state 'end'", "Notify(...)", "'email'")


def test_cancel_state_that_is_not_final_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class SoftCancel(Workflow):
            start = State(initial=True)
            limbo = State()
            end = State(final=True)
            cancel_state = "limbo"
            transitions = [
                On("go", source=start, target=limbo),
                On("go", source=limbo, target=end),
            ]

    assert_message(err, "workflow SoftCancel:", "cancel_state 'limbo'", "must be a final state")


def test_cancel_state_object_that_is_not_final_is_named() -> None:
    with pytest.raises(DefinitionError) as err:

        class SoftCancelObject(Workflow):
            start = State(initial=True)
            limbo = State()
            end = State(final=True)
            cancel_state = limbo
            transitions = [
                On("go", source=start, target=limbo),
                On("go", source=limbo, target=end),
            ]

    assert_message(
        err, "workflow SoftCancelObject:", "cancel_state 'limbo'", "must be a final state"
    )


def test_cancel_state_naming_an_unknown_state_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class LostCancel(Workflow):
            start = State(initial=True)
            end = State(final=True)
            cancel_state = "abortd"
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow LostCancel:", "cancel_state", "unknown state 'abortd'")


def test_starts_on_given_as_a_plain_string_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class StringStart(Workflow):
            starts_on = "order.placed"  # type: ignore[assignment]
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow StringStart:", "starts_on", "not a string")


def test_correlate_by_that_is_not_a_key_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class NumberKey(Workflow):
            correlate_by = 3  # type: ignore[assignment]
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow NumberKey:", "correlate_by", "3")


def test_definition_error_is_an_orchestrator_error_with_a_one_line_message() -> None:
    # Given a malformed class, When it is created, Then the error is one line a CLI can show
    with pytest.raises(OrchestratorError) as err:

        class OneLine(Workflow):
            start = State(initial=True)
            end = State(final=True)
            transitions = [On("go", source=start, target="nope")]

    assert isinstance(err.value, DefinitionError)
    assert "\n" not in str(err.value)
    assert re.match(r"workflow OneLine: ", str(err.value))


# ---- what a valid class compiles into ---------------------------------------


class ShippingFlow(Workflow):
    """Reserve, then ship.

    More text that is not part of the description.
    """

    version = 3
    starts_on = ["order.placed", "order.replayed"]
    correlate_by = "order_id"
    reserving = State(
        initial=True,
        task=Task(step, retries=2, timeout=30, backoff=0.5, max_backoff=10),
        compensation=undo,
    )
    waiting = State(timeout=60, timeout_event="ship.late")
    shipped = State(final=True, notify=[Notify("email", "shipped {{ id }}", to="email")])
    late = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=reserving, target=waiting),
        On("ship", source="waiting", target="shipped", guard=big_enough),
        On("ship.late", source=waiting, target=late, compensate=True),
    ]


def test_valid_class_compiles_into_a_frozen_definition() -> None:
    d = ShippingFlow.definition
    assert isinstance(d, Definition)
    # names default to snake_case of the class
    assert d.name == "shipping_flow"
    assert d.version == 3
    assert d.initial == "reserving"
    assert d.cancel_state == CANCELLED
    assert d.starts_on == frozenset({"order.placed", "order.replayed"})
    assert d.correlate_by == "order_id"
    assert d.description == "Reserve, then ship."
    assert list(d.states) == ["reserving", "waiting", "shipped", "late"]
    assert d.event_types == frozenset(
        {"task.completed", "ship", "ship.late", "order.placed", "order.replayed"}
    )

    reserving = d.states["reserving"]
    assert reserving.initial and not reserving.final
    assert reserving.task == TaskSpec("tests.sample_workflows:step", 3, 30, 0.5, 10)
    # a bare function becomes a Task with the defaults: one try, 300 s
    # a compensation given as a bare function retries for about an hour by default
    assert reserving.compensation == TaskSpec("tests.sample_workflows:undo", 21, 300.0, 1.0, 300.0)

    waiting = d.states["waiting"]
    assert (waiting.task, waiting.timeout, waiting.timeout_event) == (None, 60, "ship.late")

    shipped = d.states["shipped"]
    assert shipped.final and shipped.outcome == "completed"
    assert shipped.notify == (NotifySpec("email", "shipped {{ id }}", "email"),)
    assert d.states["late"].outcome == "failed"

    assert d.transitions == (
        TransitionSpec("task.completed", frozenset({"reserving"}), "waiting", None, False),
        TransitionSpec("ship", frozenset({"waiting"}), "shipped", big_enough, False),
        TransitionSpec("ship.late", frozenset({"waiting"}), "late", None, True),
    )


def test_state_names_are_the_attribute_names() -> None:
    assert repr(ShippingFlow.reserving) == "State(reserving)"
    assert ShippingFlow.late.name == "late"


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("Order", "order"),
        ("OrderFulfilment", "order_fulfilment"),
        ("ThreeWordName", "three_word_name"),
        ("lowercase", "lowercase"),
    ],
)
def test_name_defaults_to_snake_case_of_the_class(class_name: str, expected: str) -> None:
    start, end = State(initial=True), State(final=True)
    cls = type(
        class_name,
        (Workflow,),
        {"start": start, "end": end, "transitions": [On("go", source=start, target=end)]},
    )
    assert cls.definition.name == expected


def test_explicit_name_wins_over_the_class_name() -> None:
    class Whatever(Workflow):
        name = "custom"
        start = State(initial=True)
        end = State(final=True)
        transitions = [On("go", source=start, target=end)]

    assert Whatever.definition.name == "custom"


def test_name_default_keeps_acronyms_together() -> None:
    class HTTPCheck(Workflow):
        start = State(initial=True)
        end = State(final=True)
        transitions = [On("go", source=start, target=end)]

    assert HTTPCheck.definition.name == "http_check"


def test_any_source_compiles_to_none_and_reaches_its_target() -> None:
    # Given a state reachable only through an ANY row
    class Abortable(Workflow):
        start = State(initial=True)
        middle = State()
        end = State(final=True)
        aborted = State(final=True, outcome="failed")
        transitions = [
            On("go", source=start, target=middle),
            On("go", source=middle, target=end),
            On("abort", source=ANY, target=aborted),
        ]

    # Then it compiles (aborted is reachable, and ANY is not an outgoing row of a final state)
    rows = {t.event: t for t in Abortable.definition.transitions}
    assert rows["abort"].sources is None
    assert rows["abort"].target == "aborted"
    assert repr(ANY) == "ANY"


def test_tuple_of_sources_mixing_states_and_names() -> None:
    class Fan(Workflow):
        first = State(initial=True)
        second = State()
        third = State()
        end = State(final=True)
        transitions = [
            On("next", source=first, target=second),
            On("next", source=second, target=third),
            On("stop", source=(first, "second", third), target=end),
            On("stop_list", source=[first, second], target="end"),
        ]

    rows = {t.event: t for t in Fan.definition.transitions}
    assert rows["stop"].sources == frozenset({"first", "second", "third"})
    assert rows["stop_list"].sources == frozenset({"first", "second"})
    assert rows["stop_list"].target == "end"


def test_custom_cancel_state_reachable_only_via_cancel_is_not_unreachable() -> None:
    # Given a final state no transition leads to, named as the cancel state
    class WithAbort(Workflow):
        start = State(initial=True)
        end = State(final=True)
        aborted = State(final=True, outcome="cancelled")
        cancel_state = "aborted"
        transitions = [On("go", source=start, target=end)]

    # Then the class compiles and the state is the cancel state
    assert WithAbort.definition.cancel_state == "aborted"
    assert set(WithAbort.definition.states) == {"start", "end", "aborted"}


def test_custom_cancel_state_given_as_state_object() -> None:
    # Given the cancel state named by its State object, as the type hint allows
    class WithAbortObject(Workflow):
        start = State(initial=True)
        end = State(final=True)
        aborted = State(final=True, outcome="cancelled")
        cancel_state = aborted
        transitions = [On("go", source=start, target=end)]

    # Then it compiles exactly as with the state's name
    assert WithAbortObject.definition.cancel_state == "aborted"
    assert set(WithAbortObject.definition.states) == {"start", "end", "aborted"}


def test_same_final_state_without_being_the_cancel_state_is_unreachable() -> None:
    # The counterpart of the test above: only the cancel state gets the exemption
    with pytest.raises(DefinitionError) as err:

        class NoAbort(Workflow):
            start = State(initial=True)
            end = State(final=True)
            aborted = State(final=True, outcome="cancelled")
            transitions = [On("go", source=start, target=end)]

    assert_message(err, "workflow NoAbort:", "'aborted'", "unreachable")


def test_cancel_state_naming_the_built_in_cancelled_state_compiles() -> None:
    class ExplicitDefault(Workflow):
        start = State(initial=True)
        end = State(final=True)
        cancel_state = "cancelled"
        transitions = [On("go", source=start, target=end)]

    assert ExplicitDefault.definition.cancel_state == CANCELLED


def test_non_final_state_named_cancelled_is_rejected() -> None:
    with pytest.raises(DefinitionError) as err:

        class ShadowCancel(Workflow):
            start = State(initial=True)
            cancelled = State()
            end = State(final=True)
            transitions = [
                On("go", source=start, target=end),
                On("go", source=cancelled, target=end),
            ]

    assert_message(err, "workflow ShadowCancel:", "'cancelled'")


def test_workflow_definition_is_frozen() -> None:
    d = ShippingFlow.definition
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (step, "tests.sample_workflows:step"),
        (undo, "tests.sample_workflows:undo"),
        ("a.b:c", "a.b:c"),
    ],
)
def test_task_path_of_module_level_functions(fn: Any, expected: str) -> None:
    assert task_path(fn) == expected


def test_task_path_of_a_lambda_says_to_define_it_at_module_level() -> None:
    with pytest.raises(ValueError, match=re.escape("define it at module level")):
        task_path(lambda ctx: None)
