"""An answer to a task emitted from outside the workers (`events emit task.completed
--task NAME`, `Orchestrator.emit`): bound to the try the instance waits for, as a worker's
own answer is, so that the transition function takes it like any other; refused, naming
what runs, when the instance runs no such task or branch."""

from __future__ import annotations

from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.definition import Definition
from orchestrator.core.errors import InputError, InvalidOperation
from orchestrator.core.instance import Instance
from orchestrator.core.spec import StateSpec, split_step, step_name


def answer_for_task(
    definition: Definition,
    instance: Instance,
    event_type: str,
    task: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Bind an externally emitted task answer to the try the instance is waiting for."""
    if not task:
        raise InputError(f"{event_type} needs --task NAME (the state or task it answers)")
    state = definition.states.get(instance.state or "")
    if state is not None and instance.fan is not None:
        return _for_branch(state, instance, event_type, task, data)
    if state is None or state.task is None or instance.attempt == 0:
        raise InvalidOperation(
            f"instance {instance.id} is running no task (state {instance.state}, "
            f"status {instance.status})"
        )
    names = {state.name, state.task.path, state.task.path.rpartition(":")[2]}
    if task not in names:
        raise InvalidOperation(
            f"instance {instance.id} is running task {state.task.path} of state "
            f"{state.name}, not {task!r}"
        )
    answer: dict[str, Any] = {
        "task": state.task.path,
        "state": state.name,
        "entered_seq": instance.entered_seq,
        "attempt": instance.attempt,
    }
    return _with_outcome(answer, event_type, data)


def _for_branch(
    state: StateSpec, instance: Instance, event_type: str, task: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Bind an externally emitted answer to one running branch of a parallel or map state,
    named as the branch ("charge", "17") or its step ("preparing/charge")."""
    assert instance.fan is not None
    running = sorted(instance.fan.tries)
    branch = split_step(task)[1] if task.startswith(f"{state.name}/") else task
    if branch not in instance.fan.tries:
        shown = ", ".join(running[:10]) or "none"
        raise InvalidOperation(
            f"instance {instance.id} runs branches of state {state.name} ({shown}), "
            f"not {task!r}: name one with --task"
        )
    spec = state.branch_task(branch, "task")
    assert spec is not None
    answer: dict[str, Any] = {
        "task": spec.path,
        "state": step_name(state.name, branch),
        "entered_seq": instance.entered_seq,
        "attempt": instance.fan.tries[branch][0],
    }
    return _with_outcome(answer, event_type, data)


def _with_outcome(answer: dict[str, Any], event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if event_type == ev.TASK_COMPLETED:
        answer["result"] = data
    else:
        answer["error_type"] = str(data.get("error_type", "ExternalFailure"))
        answer["message"] = str(data.get("message", "reported failed from outside"))
    return answer
