"""Schema compatibility of published events: how one JSON Schema differs from another, and
what `orchestrator schemas check` makes of it. Pure: no I/O, the standard library only.

    changes(old, new)    every difference, each naming its field ("address.city",
                         "items[].sku", "tags.*"), as annotation, compatible or breaking
    breaking(old, new)   the differences that make `new` not BACKWARD compatible
    fields(schema)       a schema's fields, flattened, with their types and whether required
    assess(declared, recorded)
                         each published type's status and faults, and what to record

The rules (the BACKWARD mode of a schema registry, with removals refused too, since a
consumer still reads the field):

    breaking     a field removed; a field's type changed (any change of its JSON types,
                 `null` included, its format, or its number of tuple items); a required
                 field added or an optional one made required; an enum value dropped
                 (or a constant changed); a constraint tightened (a new or higher minimum,
                 a new or lower maximum, a new pattern...); fewer other fields allowed;
                 any other keyword changed
    compatible   an optional field added; a field no longer required; an enum value
                 added; a constraint loosened or dropped; a default changed
    annotation   title, description, examples, $comment, deprecated... (no change at all)

`$ref`s are followed (into `$defs`, so a renamed model is no change), `anyOf`/`oneOf`
alternatives are matched by type, arrays by their items, maps by their values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Schema = Mapping[str, Any]  # a JSON Schema as parsed JSON (an object)

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$schema",
        "$id",
        "$anchor",
        "discriminator",  # OpenAPI's hint beside oneOf; the alternatives are compared
    }
)
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
EXACT = ("pattern", "multipleOf", "uniqueItems")  # added or changed: tighter; dropped: looser
_HANDLED = frozenset(
    {
        "type",
        "format",
        "enum",
        "const",
        "$defs",
        "definitions",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "default",
        *LOWER_BOUNDS,
        *UPPER_BOUNDS,
        *EXACT,
    }
)

_BESIDE = frozenset({"anyOf", "oneOf", "$defs", "definitions", "default"})


class Severity(StrEnum):
    ANNOTATION = "annotation"
    COMPATIBLE = "compatible"
    BREAKING = "breaking"


@dataclass(frozen=True)
class Change:
    """One difference between two schemas: where (the field's path, "" for the payload
    itself), what kind, a sentence naming the field, and how much it matters."""

    path: str
    kind: str  # removed, added, required, type, enum, constraint, keyword, default, annotation
    message: str
    severity: Severity

    @property
    def breaking(self) -> bool:
        return self.severity is Severity.BREAKING

    def __str__(self) -> str:
        return self.message


def changes(old: Schema, new: Schema) -> list[Change]:
    """Every difference from `old` to `new`, in a stable order (fields sorted by name)."""
    diff = _Diff(old, new)
    diff.compare(old, new, "")
    return diff.found


def breaking(old: Schema, new: Schema) -> list[Change]:
    """What makes `new` not BACKWARD compatible with `old` (empty: compatible)."""
    return [c for c in changes(old, new) if c.breaking]


def same(old: Schema, new: Schema) -> bool:
    """The same schema, but for annotations (titles, descriptions...)."""
    return all(c.severity is Severity.ANNOTATION for c in changes(old, new))


def where(path: str) -> str:
    return f"field {path!r}" if path else "the payload"


# -- the comparison ----------------------------------------------------------------------


@dataclass
class _Node:
    """A schema node with its `$ref`s resolved (`ref`: the last one followed, if any)."""

    schema: Mapping[str, Any]
    ref: str | None = None
    alternative: bool = False  # one of an anyOf/oneOf, or of a `type` list


class _Diff:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.roots = (old_root, new_root)
        self.found: list[Change] = []
        self._active: set[tuple[str, str]] = set()  # (old ref, new ref) being compared

    def add(self, path: str, kind: str, message: str, severity: Severity) -> None:
        self.found.append(Change(path, kind, message, severity))

    def compare(self, old: Any, new: Any, path: str) -> None:
        o, n = _resolve(old, self.roots[0]), _resolve(new, self.roots[1])
        with self._entering(o, n) as fresh:
            if not fresh:
                return
            self._annotations(o.schema, n.schema, path)
            self._variants(o, n, path)

    @contextmanager
    def _entering(self, o: _Node, n: _Node) -> Iterator[bool]:
        """Compare a pair of `$ref`s once along a path: a recursive model ends there."""
        if o.ref is None or n.ref is None:
            yield True
            return
        key = (o.ref, n.ref)
        if key in self._active:
            yield False
            return
        self._active.add(key)
        try:
            yield True
        finally:
            self._active.discard(key)

    def _variants(self, o: _Node, n: _Node, path: str) -> None:
        olds, news = _alternatives(o, self.roots[0]), _alternatives(n, self.roots[1])
        old_labels = sorted(_label(v.schema) for v in olds)
        new_labels = sorted(_label(v.schema) for v in news)
        if old_labels != new_labels:
            self.add(
                path,
                "type",
                f"{where(path)} changed type from {_either(old_labels)} to {_either(new_labels)}",
                Severity.BREAKING,
            )
        for label in sorted(set(old_labels) & set(new_labels)):
            pairs = zip(
                (v for v in olds if _label(v.schema) == label),
                (v for v in news if _label(v.schema) == label),
                strict=False,
            )
            for a, b in pairs:
                if not (a.alternative or b.alternative):  # the nodes themselves
                    self._content(a.schema, b.schema, path)
                    continue
                if a.alternative and b.alternative:
                    self._annotations(a.schema, b.schema, path)
                with self._entering(a, b) as fresh:
                    if fresh:
                        self._content(a.schema, b.schema, path)
        if olds[0].alternative and news[0].alternative:  # what sits beside anyOf/oneOf
            self._keywords(o.schema, n.schema, path, skip=_BESIDE)

    def _annotations(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for key in sorted(ANNOTATIONS & (old.keys() | new.keys())):
            if old.get(key) != new.get(key):
                self.add(path, "annotation", f"{where(path)}: {key} changed", Severity.ANNOTATION)
        if old.get("default", _MISSING) != new.get("default", _MISSING):
            before, after = old.get("default", _MISSING), new.get("default", _MISSING)
            if after is _MISSING:
                text = f"{where(path)} no longer has a default"
            elif before is _MISSING:
                text = f"{where(path)} now has default {_show(after)}"
            else:
                text = f"{where(path)} default changed from {_show(before)} to {_show(after)}"
            self.add(path, "default", text, Severity.COMPATIBLE)

    def _content(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        """Two nodes of the same type: their values, fields, items and constraints."""
        self._enum(old, new, path)
        self._properties(old, new, path)
        self._extra(old, new, path)
        self._items(old, new, path)
        self._constraints(old, new, path)
        self._keywords(old, new, path, skip=_HANDLED)

    def _keywords(
        self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, skip: frozenset[str]
    ) -> None:
        """Any other keyword: a change of it is taken as breaking."""
        for key in sorted((old.keys() | new.keys()) - skip - ANNOTATIONS):
            if old.get(key) != new.get(key):
                self.add(
                    path, "keyword", f"{where(path)}: keyword {key!r} changed", Severity.BREAKING
                )

    def _enum(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        before, after = _values(old), _values(new)
        if before == after:
            return
        if after is None:
            self.add(path, "enum", f"{where(path)} now allows any value", Severity.COMPATIBLE)
            return
        if before is None:
            shown = ", ".join(sorted(after))
            self.add(path, "enum", f"{where(path)} now allows only {shown}", Severity.BREAKING)
            return
        for value in sorted(before - after):
            self.add(path, "enum", f"{where(path)} no longer allows {value}", Severity.BREAKING)
        for value in sorted(after - before):
            self.add(path, "enum", f"{where(path)} now also allows {value}", Severity.COMPATIBLE)

    def _properties(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        before, after = _mapping(old.get("properties")), _mapping(new.get("properties"))
        old_required, new_required = _required(old), _required(new)
        for name in sorted(before.keys() | after.keys()):
            inner = _join(path, name)
            if name not in after:
                self.add(inner, "removed", f"{where(inner)} removed", Severity.BREAKING)
            elif name not in before:
                if name in new_required:
                    text = f"required field {inner!r} added"
                    self.add(inner, "required", text, Severity.BREAKING)
                else:
                    text = f"optional field {inner!r} added"
                    self.add(inner, "added", text, Severity.COMPATIBLE)
            else:
                self.compare(before[name], after[name], inner)
                if name in new_required and name not in old_required:
                    text = f"{where(inner)} became required"
                    self.add(inner, "required", text, Severity.BREAKING)
                elif name in old_required and name not in new_required:
                    text = f"{where(inner)} is no longer required"
                    self.add(inner, "required", text, Severity.COMPATIBLE)
        # required names that are not among the properties (allowed by JSON Schema)
        for name in sorted((new_required - old_required) - after.keys()):
            inner = _join(path, name)
            self.add(inner, "required", f"{where(inner)} became required", Severity.BREAKING)

    def _extra(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        """additionalProperties: a map's values (`dict[str, X]`), or whether other fields
        are allowed at all (absent or true: any; false: none)."""
        before, after = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            self.compare(before, after, _join(path, "*"))
            return
        anything = (None, True)
        if before == after or (before in anything and after in anything):
            return
        looser = after in anything or before is False
        if looser:
            self.add(path, "constraint", f"{where(path)} allows more fields", Severity.COMPATIBLE)
        else:
            self.add(path, "constraint", f"{where(path)} allows fewer fields", Severity.BREAKING)

    def _items(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        if "items" in old or "items" in new:
            self.compare(_schema(old.get("items")), _schema(new.get("items")), path + "[]")
        before, after = old.get("prefixItems"), new.get("prefixItems")
        if before == after:
            return
        before_list = before if isinstance(before, list) else []
        after_list = after if isinstance(after, list) else []
        if len(before_list) != len(after_list):
            self.add(
                path,
                "type",
                f"{where(path)} changed from {len(before_list)} to {len(after_list)} items",
                Severity.BREAKING,
            )
        for index, (a, b) in enumerate(zip(before_list, after_list, strict=False)):
            self.compare(a, b, f"{path}[{index}]")

    def _constraints(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for key in (*LOWER_BOUNDS, *UPPER_BOUNDS, *EXACT):
            before, after = old.get(key), new.get(key)
            if before == after:
                continue
            if after is None:
                text = f"{where(path)} no longer has {key} {_show(before)}"
                self.add(path, "constraint", text, Severity.COMPATIBLE)
                continue
            if before is None:
                looser = key == "uniqueItems" and after is False
                text = f"{where(path)} now has {key} {_show(after)}"
                severity = Severity.COMPATIBLE if looser else Severity.BREAKING
                self.add(path, "constraint", text, severity)
                continue
            text = f"{where(path)} {key} changed from {_show(before)} to {_show(after)}"
            numbers = _number(before) and _number(after)
            if numbers and key in LOWER_BOUNDS:
                looser = after < before
            elif numbers and key in UPPER_BOUNDS:
                looser = after > before
            else:
                looser = key == "uniqueItems" and after is False
            self.add(path, "constraint", text, Severity.COMPATIBLE if looser else Severity.BREAKING)


_MISSING = object()


def _resolve(node: Any, root: Schema) -> _Node:
    """A node with its `$ref` (local: "#/$defs/Name") and one-element `allOf` followed;
    keywords beside them win. Boolean schemas: true is {}, false allows nothing."""
    schema = _schema(node)
    ref: str | None = None
    for _ in range(64):  # a chain of refs; a loop of refs alone means nothing more
        target = schema.get("$ref")
        if isinstance(target, str):
            found = _pointer(root, target)
            if found is None:
                break  # unresolvable: the `$ref` itself is compared as a keyword
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            ref = target
            schema = {**_schema(found), **rest}
            continue
        every = schema.get("allOf")
        if isinstance(every, list) and len(every) == 1:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            schema = {**_schema(every[0]), **rest}
            continue
        break
    return _Node(schema, ref)


def _pointer(root: Schema, ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _schema(node: Any) -> Mapping[str, Any]:
    if isinstance(node, Mapping):
        return node
    if node is False:
        return {"not": {}}
    return {}  # true, or absent: anything


def _alternatives(node: _Node, root: Schema) -> list[_Node]:
    """The node's alternatives, flattened: an anyOf/oneOf's, or one per type of a `type`
    list (without the annotations, compared once on the node), or the node itself."""
    schema = node.schema
    alternatives = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(alternatives, list) and alternatives and "type" not in schema:
        out: list[_Node] = []
        for item in alternatives:
            resolved = _resolve(item, root)
            for inner in _alternatives(resolved, root):
                out.append(_Node(inner.schema, inner.ref, alternative=True))
        return out
    kinds = schema.get("type")
    if isinstance(kinds, list) and kinds:
        plain = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "default"}
        return [_Node({**plain, "type": kind}, node.ref) for kind in kinds]
    return [node]


def _label(schema: Mapping[str, Any]) -> str:
    """A node's type as a word: its JSON type (with its format), else what it holds."""
    kind = schema.get("type")
    if isinstance(kind, str):
        base = kind
    elif "enum" in schema or "const" in schema:
        base = "value"
    elif "properties" in schema or "additionalProperties" in schema:
        base = "object"
    elif "items" in schema or "prefixItems" in schema:
        base = "array"
    elif schema.get("not") == {}:
        base = "nothing"
    else:
        base = "any"
    form = schema.get("format")
    return f"{base} ({form})" if isinstance(form, str) else base


def _either(labels: list[str]) -> str:
    return " or ".join(labels) if labels else "nothing"


def _values(schema: Mapping[str, Any]) -> frozenset[str] | None:
    """The values a node allows (enum, or const), as canonical JSON; None: any."""
    if "const" in schema:
        return frozenset({_show(schema["const"])})
    values = schema.get("enum")
    if isinstance(values, list):
        return frozenset(_show(v) for v in values)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _required(schema: Mapping[str, Any]) -> set[str]:
    names = schema.get("required")
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# -- fields, for people -------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    path: str  # "address.city", "items[].sku"
    type: str  # "string", "string or null", "array of object"
    required: bool  # required in the object that holds it
    description: str = ""


def fields(schema: Schema) -> list[Field]:
    """A schema's fields, nested ones after their parent, arrays' items as `name[]`."""
    out: list[Field] = []
    _fields(schema, schema, "", out, frozenset())
    return out


def _fields(node: Any, root: Schema, path: str, out: list[Field], seen: frozenset[str]) -> None:
    resolved = _resolve(node, root)
    if resolved.ref is not None:
        if resolved.ref in seen:
            return
        seen = seen | {resolved.ref}
    for alternative in _alternatives(resolved, root):
        inner_seen = seen
        if alternative.ref is not None and alternative.ref != resolved.ref:
            if alternative.ref in seen:
                continue
            inner_seen = seen | {alternative.ref}
        schema = alternative.schema
        required = _required(schema)
        for name, inner in sorted(_mapping(schema.get("properties")).items()):
            inner_path = _join(path, name)
            target = _resolve(inner, root)
            text = target.schema.get("description")
            out.append(
                Field(
                    inner_path,
                    type_text(inner, root),
                    name in required,
                    text if isinstance(text, str) else "",
                )
            )
            _fields(inner, root, inner_path, out, inner_seen)
        items = schema.get("items")
        if isinstance(items, Mapping):
            _fields(items, root, path + "[]", out, inner_seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            _fields(extra, root, _join(path, "*"), out, inner_seen)


def type_text(node: Any, root: Schema) -> str:
    """A node's type for people: "string", "integer or null", "array of object"."""
    return _type_text(node, root, 0)


def _type_text(node: Any, root: Schema, depth: int) -> str:
    resolved = _resolve(node, root)
    words: list[str] = []
    for alternative in _alternatives(resolved, root):
        schema = alternative.schema
        word = _label(schema)
        extra = schema.get("additionalProperties")
        values = _values(schema)
        if values is not None:
            word = " | ".join(sorted(values))
        elif word == "array" and isinstance(schema.get("items"), Mapping) and depth < 8:
            word = f"array of {_type_text(schema['items'], root, depth + 1)}"
        elif word == "object" and alternative.ref:
            word = f"object ({alternative.ref.rsplit('/', 1)[-1]})"
        elif word == "object" and isinstance(extra, Mapping) and not schema.get("properties"):
            word = f"map of {_type_text(extra, root, depth + 1)}" if depth < 8 else "map"
        if word not in words:
            words.append(word)
    return " or ".join(words)


# -- the registry's rules -------------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    """A published event type as one loaded workflow version declares it."""

    type: str
    version: int  # the schema's version (`Publish(..., version=N)`)
    workflow: str
    workflow_version: int
    latest: bool  # declared by the newest loaded version of its workflow
    schema: Schema
    description: str = ""


class Status(StrEnum):
    RECORDED = "recorded"  # every declared version recorded, unchanged
    NEW = "new"  # never recorded: `--write` records it
    NEW_VERSION = "new version"  # a declared version above the recorded ones, compatible
    CHANGED = "changed"  # a recorded version declared with another schema: refused
    INCOMPATIBLE = "incompatible"  # a new version that breaks the last one: refused
    CONFLICT = "conflict"  # workflows disagree on the type's schema or version: refused


@dataclass
class TypeReport:
    """One published type: who declares it, what is recorded, its status and faults."""

    type: str
    declarations: list[Declaration]
    recorded: list[int]
    status: Status = Status.RECORDED
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    to_record: dict[int, Schema] = field(default_factory=dict)  # version -> schema

    @property
    def workflows(self) -> list[str]:
        return sorted({d.workflow for d in self.declarations})

    @property
    def declared_versions(self) -> list[int]:
        return sorted({d.version for d in self.declarations})

    @property
    def declared(self) -> int:
        """The version the newest workflows declare (the highest, if they disagree)."""
        newest = [d.version for d in self.declarations if d.latest] or self.declared_versions
        return max(newest)

    def schema(self, version: int) -> Schema | None:
        """The declared schema of a version (the newest workflow's first)."""
        for declaration in self.declarations:
            if declaration.version == version:
                return declaration.schema
        return None

    @property
    def description(self) -> str:
        for declaration in self.declarations:
            if declaration.version == self.declared and declaration.description:
                return declaration.description
        return ""


_RANK = [
    Status.RECORDED,
    Status.NEW_VERSION,
    Status.NEW,
    Status.INCOMPATIBLE,
    Status.CHANGED,
    Status.CONFLICT,
]


def assess(
    declarations: Iterable[Declaration], recorded: Mapping[str, Mapping[int, Schema]]
) -> list[TypeReport]:
    """Each published type, by name: checked against the recorded versions of its schema.

    - a declared version that is recorded must be the recorded schema (annotations aside);
    - a declared version above the last recorded one must be BACKWARD compatible with the
      version below it (recorded, or declared too: v2 then v3), and is to be recorded;
    - a declared version below the last recorded one that is not recorded is refused (the
      recorded versions are a history, written in order);
    - a type never recorded is new: its declared versions, each compatible with the one
      below, are to be recorded;
    - workflows that declare one version declare one schema, and the newest versions of
      the workflows publishing a type declare the same version.
    """
    by_type: dict[str, list[Declaration]] = {}
    for declaration in declarations:
        by_type.setdefault(declaration.type, []).append(declaration)
    reports = []
    for kind in sorted(by_type):
        # newest workflow versions first: theirs is the schema a version is shown with
        found = sorted(by_type[kind], key=lambda d: (not d.latest, d.workflow, -d.workflow_version))
        reports.append(_assess_type(kind, found, recorded.get(kind, {})))
    return reports


def _assess_type(
    kind: str, declarations: list[Declaration], recorded: Mapping[int, Schema]
) -> TypeReport:
    report = TypeReport(kind, declarations, sorted(recorded))
    statuses: set[Status] = set()
    _conflicts(report, statuses)
    declared: dict[int, Schema] = {}
    for declaration in declarations:
        declared.setdefault(declaration.version, declaration.schema)
    last = max(recorded, default=0)
    for version in sorted(declared):
        schema = declared[version]
        if version in recorded:
            found = changes(recorded[version], schema)
            real = [c for c in found if c.severity is not Severity.ANNOTATION]
            for change in real:
                report.faults.append(f"{kind} v{version} changed without a new version: {change}")
            if real:
                statuses.add(Status.CHANGED)
            elif found:
                report.notes.append(
                    f"{kind} v{version}: only titles or descriptions differ from the recorded "
                    "schema (kept as recorded)"
                )
            continue
        if recorded and version < last:
            report.faults.append(
                f"{kind} v{version} is declared but not recorded, while a later version "
                f"(v{last}) is: versions are recorded in order"
            )
            statuses.add(Status.INCOMPATIBLE)
            continue
        below = [v for v in (*recorded, *declared) if v < version]
        if below:
            base = max(below)
            previous = recorded[base] if base in recorded else declared[base]
            faults = breaking(previous, schema)
            for change in faults:
                report.faults.append(
                    f"{kind} v{version} is not backward compatible with v{base}: {change}"
                )
            if faults:
                statuses.add(Status.INCOMPATIBLE)
        report.to_record[version] = schema
        statuses.add(Status.NEW_VERSION if recorded else Status.NEW)
    report.status = max(statuses, key=_RANK.index, default=Status.RECORDED)
    return report


def _conflicts(report: TypeReport, statuses: set[Status]) -> None:
    """Two declarations of one version must agree on the schema; the newest versions of the
    workflows publishing the type, on the version."""
    kind = report.type
    first: dict[int, Declaration] = {}
    for declaration in report.declarations:
        model = first.setdefault(declaration.version, declaration)
        if model is declaration:
            continue
        for change in changes(model.schema, declaration.schema):
            if change.severity is Severity.ANNOTATION:
                continue
            report.faults.append(
                f"{kind} v{declaration.version} is declared differently by "
                f"{_who(model)} and {_who(declaration)}: {change}"
            )
            statuses.add(Status.CONFLICT)
    newest = {d.workflow: d.version for d in report.declarations if d.latest}
    if len(set(newest.values())) > 1:
        shown = ", ".join(f"{name} (v{version})" for name, version in sorted(newest.items()))
        report.faults.append(
            f"{kind} is declared at different versions by the workflows publishing it: "
            f"{shown}; they must declare the same version and schema"
        )
        statuses.add(Status.CONFLICT)


def _who(declaration: Declaration) -> str:
    return f"workflow {declaration.workflow} v{declaration.workflow_version}"
