"""Schedules in Redis: their specs, where each stands, and when each is next due.

  N:schedules       hash  name -> spec (JSON, orchestrator.core.schedule.ScheduleSpec)
  N:schedule:NAME   hash  last      the time up to which its ticks are dealt with
                          paused    "1" while paused
                          instance  the id of the last instance it started
                          started   how many instances it started
                          skipped   ticks that started nothing (overlap, key in use)
  N:schedules:due   zset  name -> when its next round is due (absent while paused)

Schedules declared on workflow classes are written here by the applier that runs the
scheduler (runtime.scheduler), so deploying is how they change; those added at run
time change only through this module (the CLI and the client). Adding, pausing,
resuming and removing are each one atomic script, so a scheduler round (which WATCHes
the schedule's hash) never sees half of one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from orchestrator.core.errors import InputError, InvalidOperation, UnknownInstance
from orchestrator.core.schedule import ScheduleSpec
from orchestrator.store.instances import decode_text
from orchestrator.store.keys import Keys

# KEYS: schedules, schedule:NAME, due. ARGV: name, spec, now, next due, replace (0/1).
# Returns 1 when written, 0 when the name is taken (and replace is 0).
_PUT = """
if ARGV[5] == '0' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HEXISTS', KEYS[2], 'last') == 0 then
  redis.call('HSET', KEYS[2], 'last', ARGV[3], 'paused', '0', 'started', 0, 'skipped', 0)
end
if redis.call('HGET', KEYS[2], 'paused') ~= '1' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
return 1
"""

# KEYS: schedules, schedule:NAME, due. ARGV: name, paused (0/1), now, next due.
# Returns 0 when there is no such schedule.
_PAUSE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'paused', ARGV[2])
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[2], 'last', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Standing:
    """Where a schedule stands."""

    last: float
    paused: bool
    instance: str | None
    started: int
    skipped: int
    next_due: float | None  # None while paused


@dataclass(frozen=True)
class Stored:
    spec: ScheduleSpec
    standing: Standing


class Schedules:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._put = client.register_script(_PUT)
        self._pause = client.register_script(_PAUSE)

    def add(self, spec: ScheduleSpec, now: float) -> None:
        """Add a schedule; its first tick is the first after `now` (nothing before it)."""
        if not self._write(spec, now, replace=False):
            raise InvalidOperation(
                f"a schedule named {spec.name!r} exists already; remove it first, or choose "
                "another name"
            )

    def sync_declared(
        self, declared: Iterable[ScheduleSpec], workflows: Iterable[str], now: float
    ) -> list[str]:
        """Make the stored declared schedules of these workflows what their classes say:
        new ones added, changed ones rewritten (where they stand kept), withdrawn ones
        removed. A run-time schedule of the same name is left alone; its name is returned."""
        wanted = {spec.name: spec for spec in declared}
        served = set(workflows)
        stored = self._specs()
        clashes = []
        for name, spec in wanted.items():
            found = stored.get(name)
            if isinstance(found, ScheduleSpec) and not found.declared:
                clashes.append(name)
            elif found != spec:
                self._write(spec, now, replace=True)
        for name, found in stored.items():
            if (
                isinstance(found, ScheduleSpec)
                and found.declared
                and found.workflow in served
                and name not in wanted
            ):
                self._delete(name)
        return clashes

    def get(self, name: str) -> Stored:
        raw = self.redis.hget(self.keys.schedules, name)
        if raw is None:
            raise UnknownInstance(f"no schedule named {name!r}")
        return Stored(ScheduleSpec.from_json(raw), self._standing(name))

    def all(self) -> list[Stored]:
        """Every schedule, by name; one that cannot be read is skipped (the scheduler
        moves it to the dead letters)."""
        found = []
        for name, spec in sorted(self._specs().items()):
            if isinstance(spec, ScheduleSpec):
                found.append(Stored(spec, self._standing(name)))
        return found

    def pause(self, name: str) -> None:
        self._set_paused(name, True, 0.0, 0.0)

    def resume(self, name: str, now: float) -> None:
        """Go on from `now`: the ticks of the paused time are not caught up."""
        spec = self.get(name).spec
        self._set_paused(name, False, now, spec.after(now)[0])

    def remove(self, name: str) -> None:
        spec = self.get(name).spec
        if spec.declared:
            raise InvalidOperation(
                f"schedule {name} is declared on workflow {spec.workflow}; remove it from the "
                "class and deploy, or pause it"
            )
        self._delete(name)

    def due(self, now: float, limit: int = 50) -> list[str]:
        names: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.schedules_due, "-inf", now, start=0, num=limit
        )
        return [decode_text(name) for name in names]

    # -- helpers ------------------------------------------------------------------

    def _write(self, spec: ScheduleSpec, now: float, *, replace: bool) -> bool:
        keys = [self.keys.schedules, self.keys.schedule(spec.name), self.keys.schedules_due]
        args: list[str | float] = [spec.name, spec.to_json(), now, spec.after(now)[0], int(replace)]
        return bool(self._put(keys=keys, args=args))

    def _delete(self, name: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.schedules, name)
        pipe.delete(self.keys.schedule(name))
        pipe.zrem(self.keys.schedules_due, name)
        pipe.execute()

    def _set_paused(self, name: str, paused: bool, now: float, next_due: float) -> None:
        keys = [self.keys.schedules, self.keys.schedule(name), self.keys.schedules_due]
        if not self._pause(keys=keys, args=[name, int(paused), now, next_due]):
            raise UnknownInstance(f"no schedule named {name!r}")

    def _specs(self) -> dict[str, ScheduleSpec | str]:
        """Stored specs by name; one that cannot be read as the reason why."""
        raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.schedules)  # type: ignore[assignment]
        found: dict[str, ScheduleSpec | str] = {}
        for name, text in raw.items():
            try:
                found[decode_text(name)] = ScheduleSpec.from_json(text)
            except InputError as exc:
                found[decode_text(name)] = str(exc)
        return found

    def _standing(self, name: str) -> Standing:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.schedule(name))
        pipe.zscore(self.keys.schedules_due, name)
        fields, due = pipe.execute()
        state = {decode_text(k): decode_text(v) for k, v in fields.items()}
        return Standing(
            last=_number(state.get("last")),
            paused=state.get("paused") == "1",
            instance=state.get("instance") or None,
            started=int(_number(state.get("started"))),
            skipped=int(_number(state.get("skipped"))),
            next_due=float(due) if due is not None else None,
        )


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0
