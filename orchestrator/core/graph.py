"""A workflow's state machine as Mermaid or Graphviz DOT text."""

from __future__ import annotations

from orchestrator.core.spec import Definition, TransitionSpec


def _label(row: TransitionSpec) -> str:
    label = row.event
    if row.errors is not None:
        label += f" ({' | '.join(sorted(row.errors))})"
    if row.guard is not None:
        label += f" [{getattr(row.guard, '__name__', 'guard')}]"
    if row.compensate:
        label += " / compensate"
    if row.internal:
        label += " / internal"
    return label


def _edges(definition: Definition) -> list[tuple[str, str, str]]:
    edges: list[tuple[str, str, str]] = []
    for row in definition.transitions:
        sources = (
            sorted(row.sources)
            if row.sources is not None
            else [name for name, state in definition.states.items() if not state.final]
        )
        edges.extend((source, row.target, _label(row)) for source in sources)
    return edges


def mermaid(definition: Definition) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {definition.initial}"]
    for name, state in definition.states.items():
        notes = []
        if state.task:
            notes.append(f"task {state.task.path.rpartition(':')[2]}")
        if state.compensation:
            notes.append(f"undo {state.compensation.path.rpartition(':')[2]}")
        if state.timeout:
            notes.append(f"{state.timeout_event} after {state.timeout:g}s")
        if notes:
            lines.append(f"    {name} : {name}<br/>{'<br/>'.join(notes)}")
    for source, target, label in _edges(definition):
        lines.append(f"    {source} --> {target} : {label}")
    for name, state in definition.states.items():
        if state.final:
            lines.append(f"    {name} --> [*]")
    return "\n".join(lines) + "\n"


def dot(definition: Definition) -> str:
    lines = [
        f'digraph "{definition.name}" {{',
        "    rankdir=LR;",
        "    node [shape=box, style=rounded];",
    ]
    lines.append('    "__start" [shape=point];')
    lines.append(f'    "__start" -> "{definition.initial}";')
    for name, state in definition.states.items():
        if state.final:
            lines.append(f'    "{name}" [peripheries=2];')
    for source, target, label in _edges(definition):
        lines.append(f'    "{source}" -> "{target}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
