"""The pure core: what a workflow is and how one event moves one instance.

Lives here: the definition language (definition: the words in language, the
Workflow class that compiles them in workflow, the compiled form in spec),
the transition function (machine, with the moves of one step in step and the
transition table in table), events, effects, the instance record, replay,
the graph of a definition, task failures and retries, input limits,
durations and the engine's errors.

May import: the standard library only. No Redis, no clock, no randomness, no
I/O: time comes in on the event. This is what makes replay and the tests
exact; the contract is checked by import-linter (pyproject.toml).
"""
