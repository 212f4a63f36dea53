"""The benchmark's workflow: the same shape as `counter` in tests/sample_workflows.py.

A copy, so that the benchmark does not depend on the test suite's fixtures.
`tick` is a self-transition with no task, timer or notification: applying it
writes nothing but the instance hash, one history entry and the applied id.
"""

from __future__ import annotations

from orchestrator import On, State, Workflow


class Counter(Workflow):
    name = "counter"
    counting = State(initial=True)
    done = State(final=True)
    transitions = [
        On("tick", source=counting, target=counting),
        On("finish", source=counting, target=done),
    ]
