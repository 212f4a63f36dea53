"""The transition table at work: which row an event fires, what a row's `save` puts
into the context, and the events that wait, parked, for a row to match.

The first row whose event, source, error types and guard match fires; an
event with no row is parked and tried again, oldest first, after every later
transition. Guards and `save` functions are the workflow author's code: what
they raise is a `GuardFailed`, and the event goes to the dead letters instead
of the instance failing on it.
"""

from __future__ import annotations

from orchestrator.core.events import Event
from orchestrator.core.failures import error_types
from orchestrator.core.spec import TransitionSpec
from orchestrator.core.step import GuardFailed, Moves

__all__ = ["GuardFailed", "Table"]


class Table(Moves):
    """The moves of a step, and the table that chooses them."""

    def _match(self, *, park: bool) -> bool:
        row = self._find(self.event)
        if row is None:
            if park:
                self._park(f"no transition on {self.event.type} from {self.inst.state}")
            return False
        self._fire(row)
        self._unpark()
        return True

    def _park(self, note: str) -> None:
        self.inst = self.inst.evolve(parked=(*self.inst.parked, self.event))
        self.outcome = "parked"
        self.note = note

    def _find(self, event: Event) -> TransitionSpec | None:
        state = self.inst.state
        for row in self.d.transitions:
            if row.event != event.type:
                continue
            if row.sources is not None and state not in row.sources:
                continue
            if row.sources is None and state is not None and self.d.states[state].final:
                continue
            if row.errors is not None and row.errors.isdisjoint(error_types(event.data)):
                continue
            if row.guard is not None:
                try:
                    allowed = bool(row.guard(self.inst.context, event.data))
                except Exception as exc:
                    raise GuardFailed(
                        f"guard of transition on {row.event} from {state} raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                if not allowed:
                    continue
            return row
        return None

    def _fire(self, row: TransitionSpec) -> None:
        self.outcome = "transition"
        if row.save is not None:
            self._save(row)
        if row.publish:
            self._publish(row.publish)
        if row.internal:  # consumed where it stands: no exit, no entry, no effects
            self.note = (self.note + "; internal").lstrip("; ")
        elif row.compensate and (self.inst.compensations or self.inst.inflight):
            self._begin_compensation(row.target)
        else:
            self._enter(row.target)

    def _save(self, row: TransitionSpec) -> None:
        """The firing event's data into the context, as the row's `save` says."""
        data = self.moving.data
        save = row.save
        if save is True:
            saved = dict(data)
        elif isinstance(save, str):
            saved = {save: data}
        else:
            assert callable(save)
            try:
                saved = save(dict(self.inst.context), dict(data))
            except Exception as exc:
                raise GuardFailed(
                    f"save of transition on {row.event} from {self.inst.state} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(saved, dict):
                raise GuardFailed(
                    f"save of transition on {row.event} from {self.inst.state} returned "
                    f"{type(saved).__name__}, not a dict"
                )
        self.inst = self.inst.evolve(context={**self.inst.context, **saved})

    def _unpark(self) -> None:
        """Retry parked events after a transition, oldest first, until none fires."""
        progressed = True
        while progressed and self.inst.parked and not self.inst.finished:
            progressed = False
            for parked in self.inst.parked:
                bound = parked.entered_seq
                if bound is not None and bound != self.inst.entered_seq:
                    self._drop_parked(parked)
                    progressed = True
                    break
                if self.inst.status == "compensating":
                    return
                row = self._find(parked)
                if row is not None:
                    self._drop_parked(parked)
                    self.moving = parked
                    self._fire(row)
                    self.note = (self.note + f"; applied parked {parked.type}").lstrip("; ")
                    progressed = True
                    break

    def _drop_parked(self, event: Event) -> None:
        self.inst = self.inst.evolve(parked=tuple(p for p in self.inst.parked if p is not event))
