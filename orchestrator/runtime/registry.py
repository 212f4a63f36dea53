"""The workflows a process knows, by name and version, loaded from modules.

Several versions of one workflow may be loaded side by side; new instances
take the newest, and a running instance stays on the one it started with.
Loading a workflow also builds its payload schemas (orchestrator.runtime.schemas),
so a schema pydantic cannot read fails here, at start-up, not at the first event.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.definition import Definition, Workflow
from orchestrator.core.errors import ConfigurationError, UnknownEventType, UnknownWorkflow
from orchestrator.core.spec import ChildSpec
from orchestrator.runtime.schemas import PayloadSchemas


class Registry:
    def __init__(self, workflows: Iterable[type[Workflow] | Definition]) -> None:
        self._versions: dict[str, dict[int, Definition]] = {}
        self._schemas: dict[tuple[str, int], PayloadSchemas] = {}
        for item in workflows:
            definition = item if isinstance(item, Definition) else item.definition
            versions = self._versions.setdefault(definition.name, {})
            versions[definition.version] = definition
            self._schemas[definition.name, definition.version] = PayloadSchemas(definition)
        self._check_children()

    def _check_children(self) -> None:
        """Every child workflow a loaded workflow starts is loaded too: refused at start-up,
        naming the workflow, the state and the child, rather than failing a step later."""
        for versions in self._versions.values():
            for definition in versions.values():
                for state in definition.states.values():
                    steps = [state.task, *(b.task for b in state.parallel)]
                    steps.append(state.map.task if state.map else None)
                    for spec in steps:
                        if isinstance(spec, ChildSpec) and spec.workflow not in self._versions:
                            raise ConfigurationError(
                                f"workflow {definition.name!r} state {state.name!r} starts "
                                f"child workflow {spec.workflow!r}, which is not loaded "
                                f"(loaded: {', '.join(sorted(self._versions))})"
                            )

    @classmethod
    def from_modules(cls, modules: Sequence[str]) -> Registry:
        found: list[type[Workflow]] = []
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import workflow module {name!r}: {exc}{_import_hint(name, exc)}"
                ) from exc
            for mod in _with_submodules(module):
                found.extend(_workflows_in(mod))
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[int]:
        return sorted(self._get_versions(name))

    def get(self, name: str, version: int | None = None) -> Definition:
        versions = self._get_versions(name)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            known = ", ".join(str(v) for v in sorted(versions))
            raise UnknownWorkflow(
                f"workflow {name!r} version {version} is not loaded here (loaded: {known})"
            )
        return versions[version]

    def check_payload(
        self, definition: Definition, event_type: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """An event's data as its schema reads it, or SchemaViolation naming the field."""
        return self.schemas(definition).check(event_type, data)

    def schemas(self, definition: Definition) -> PayloadSchemas:
        """The payload schemas of a definition, built when it was loaded."""
        schemas = self._schemas.get((definition.name, definition.version))
        if schemas is None:  # a definition this registry did not load
            schemas = self._schemas[definition.name, definition.version] = PayloadSchemas(
                definition
            )
        return schemas

    def definitions(self) -> list[Definition]:
        """Every loaded version of every workflow."""
        return [d for versions in self._versions.values() for d in versions.values()]

    def latest(self) -> list[Definition]:
        return [self.get(name) for name in self.names()]

    def starter(self, event_type: str) -> Definition | None:
        """The workflow (newest version) that an event of this type starts, if any."""
        for definition in self.latest():
            if event_type in definition.starts_on:
                return definition
        return None

    def event_types(self) -> set[str]:
        types: set[str] = set(ev.WORKER_REPORTS)
        for versions in self._versions.values():
            for definition in versions.values():
                types |= definition.event_types
                types |= {s.timeout_event for s in definition.states.values() if s.timeout}
        return types

    def check_event_type(self, event_type: str) -> None:
        if event_type in ev.ENGINE_TYPES:
            raise UnknownEventType(f"event type {event_type!r} is the engine's own; not emitted")
        known = self.event_types()
        if event_type not in known:
            raise UnknownEventType(
                f"unknown event type {event_type!r} (known: {', '.join(sorted(known))})"
            )

    def _get_versions(self, name: str) -> dict[int, Definition]:
        try:
            return self._versions[name]
        except KeyError:
            known = ", ".join(self.names()) or "none loaded"
            raise UnknownWorkflow(f"unknown workflow {name!r} (known: {known})") from None


def _with_submodules(module: ModuleType) -> list[ModuleType]:
    modules = [module]
    path = getattr(module, "__path__", None)
    if path is not None:
        for info in pkgutil.walk_packages(path, prefix=module.__name__ + "."):
            modules.append(importlib.import_module(info.name))
    return modules


def _import_hint(name: str, exc: ImportError) -> str:
    """What to do when the module itself (not something it imports) cannot be found."""
    missing = getattr(exc, "name", None)
    if not isinstance(missing, str) or not name.startswith(missing):
        return ""
    top = name.split(".")[0]
    return (
        f"; run the command from the folder that holds {top!r} (the current folder is "
        f"importable), or add that folder to PYTHONPATH; ORCHESTRATOR_WORKFLOWS names "
        f"modules, comma-separated (e.g. {top}.workflows)"
    )


def _workflows_in(module: ModuleType) -> list[type[Workflow]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Workflow)
        and value is not Workflow
        and value.__module__ == module.__name__
    ]
