"""A workflow's state machine as Mermaid or Graphviz DOT text.

Every name (workflow, state, event, task, guard) is escaped for the format it goes
into, so a name holding quotes, backslashes, newlines or markup characters cannot
break the diagram or add to it.
"""

from __future__ import annotations

import re

from orchestrator.core.spec import ChildSpec, Definition, StateSpec, TaskSpec, TransitionSpec

_MERMAID_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Mermaid reads these in labels (entity codes, statement ends, HTML, blocks, quotes).
_MERMAID_CODES = {
    "#": "#35;",
    ";": "#59;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "{": "#123;",
    "}": "#125;",
    "&": "#amp;",
    "`": "#96;",
}
_MERMAID_RESERVED = frozenset({"state", "note", "end", "direction", "classDef", "class"})


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


def _mermaid_text(value: str) -> str:
    """Text Mermaid shows as written: its special characters as entity codes, line
    breaks as <br/>, other control characters as spaces."""
    out = "".join(_MERMAID_CODES.get(c, c) for c in value)
    out = out.replace("\r\n", "<br/>").replace("\n", "<br/>").replace("\r", "<br/>")
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in out)


def _dot_text(value: str) -> str:
    """The inside of a DOT double-quoted string: backslashes and quotes escaped, line
    breaks as \\n (centred lines), other control characters as spaces."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in out)


def _mermaid_ids(definition: Definition) -> dict[str, str]:
    """A Mermaid id for every state: its name when that is a plain identifier, else s1, s2..."""
    names = set(definition.states) | {row.target for row in definition.transitions}
    for row in definition.transitions:
        names |= set(row.sources or ())
    ids: dict[str, str] = {}
    taken = {n for n in names if _MERMAID_ID.match(n) and n not in _MERMAID_RESERVED}
    number = 0
    for name in sorted(names):
        if name in taken:
            ids[name] = name
            continue
        number += 1
        while f"s{number}" in taken:
            number += 1
        ids[name] = f"s{number}"
    return ids


def fan_lines(state: StateSpec) -> list[str]:
    """What a parallel or map state runs, a line each, as the graphs note it."""

    def short(task: TaskSpec | None) -> str:
        if isinstance(task, ChildSpec):
            return f"child {task.workflow}"
        return task.path.rpartition(":")[2] if task is not None else ""

    if state.map is not None:
        m = state.map
        undo = f", undo {short(m.compensation)}" if m.compensation else ""
        undo = "" if isinstance(m.compensation, ChildSpec) else undo
        tolerated = []
        if m.tolerated is not None:
            tolerated.append(f"{m.tolerated} failures")
        if m.tolerated_percentage is not None:
            tolerated.append(f"{m.tolerated_percentage:g}% failures")
        tolerance = f", tolerates {' or '.join(tolerated)}" if tolerated else ""
        return [
            f"map {short(m.task)} over {m.items} -> {m.results}",
            f"{m.max_concurrency} at once{undo}{tolerance}",
        ]
    if not state.parallel:
        return []
    lines = [f"parallel ({state.on_failure.replace('_', ' ')}):"]
    for branch in state.parallel:
        undo = f" (undo {short(branch.compensation)})" if branch.compensation else ""
        undo = "" if isinstance(branch.compensation, ChildSpec) else undo
        lines.append(f"| {branch.name}: {short(branch.task)}{undo}")
    return lines


def mermaid(definition: Definition) -> str:
    ids = _mermaid_ids(definition)
    esc = _mermaid_text
    lines = ["stateDiagram-v2"]
    for name, sid in ids.items():
        if sid != name:
            lines.append(f'    state "{esc(name)}" as {sid}')
    lines.append(f"    [*] --> {ids[definition.initial]}")
    for name, state in definition.states.items():
        notes = []
        if isinstance(state.task, ChildSpec):
            notes.append(f"child {esc(state.task.workflow)} ({state.task.parent_close} on close)")
        elif state.task:
            notes.append(f"task {esc(state.task.path.rpartition(':')[2])}")
        if state.compensation and not isinstance(state.compensation, ChildSpec):
            notes.append(f"undo {esc(state.compensation.path.rpartition(':')[2])}")
        notes.extend(esc(line) for line in fan_lines(state))
        if state.timeout:
            notes.append(f"{esc(state.timeout_event)} after {state.timeout:g}s")
        if state.timeout_at:
            notes.append(f"{esc(state.timeout_event)} at {esc(state.timeout_at)}")
        if notes:
            lines.append(f"    {ids[name]} : {esc(name)}<br/>{'<br/>'.join(notes)}")
    for source, target, label in _edges(definition):
        lines.append(f"    {ids[source]} --> {ids[target]} : {esc(label)}")
    for name, state in definition.states.items():
        if state.final:
            lines.append(f"    {ids[name]} --> [*]")
    return "\n".join(lines) + "\n"


def dot(definition: Definition) -> str:
    esc = _dot_text
    lines = [
        f'digraph "{esc(definition.name)}" {{',
        "    rankdir=LR;",
        "    node [shape=box, style=rounded];",
    ]
    lines.append('    "__start" [shape=point];')
    lines.append(f'    "__start" -> "{esc(definition.initial)}";')
    for name, state in definition.states.items():
        if state.final:
            lines.append(f'    "{esc(name)}" [peripheries=2];')
        elif state.fans_out:  # \l: left-justified lines, one a branch
            label = "\\l".join(esc(line) for line in (name, *fan_lines(state)))
            lines.append(f'    "{esc(name)}" [label="{label}\\l", peripheries=1];')
    for source, target, label in _edges(definition):
        lines.append(f'    "{esc(source)}" -> "{esc(target)}" [label="{esc(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
