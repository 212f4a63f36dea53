"""An event addressed by a business key that no live instance has: refused, starting
one (signal-with-start), or held until one starts (issue #15)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator.core.definition import On, State, Workflow
from orchestrator.core.errors import DefinitionError, InputError, UnknownInstance
from orchestrator.entry.bootstrap import App
from orchestrator.entry.client import Orchestrator
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.registry import Registry
from tests import deadline_workflows as wf
from tests.conftest import cli_env, run_cli

REGISTRY = Registry([wf.Parcel, wf.Payment, wf.Booking])


def client(app: App) -> Orchestrator:
    return Orchestrator(app.redis, app.keys, REGISTRY)


def drain(app: App) -> None:
    applier = Applier(app.redis, app.keys, REGISTRY)
    applier.scheduler._next_sync = float("inf")
    applier.drain()


def test_start_policy_starts_the_instance_then_applies_the_event(app: App) -> None:
    orch = client(app)
    emitted = orch.emit("parcel.delivered", {"by": "door"}, key=("parcel", "P1"))
    assert emitted.started and emitted.instance_id
    drain(app)
    parcel = orch.status(emitted.instance_id)
    assert (parcel.state, parcel.context) == ("delivered", {"parcel": "P1", "by": "door"})
    # a second event for the same key while one lives goes to it, starting nothing
    again = orch.emit("parcel.delivered", key=("parcel", "P2"))
    same = orch.emit("parcel.delivered", key=("parcel", "P2"))
    assert again.started and not same.started and same.instance_id == again.instance_id


def test_wait_policy_holds_the_event_until_its_instance_starts(app: App) -> None:
    orch = client(app)
    held = orch.emit("bank.confirmed", {"amount": 10.25}, key=("payment_id", "X1"))
    assert (held.instance_id, held.started) == ("", False)
    assert "waits up to 2s for an instance of payment with payment_id=X1" in held.note
    (event,) = orch.waiting.held("payment", ("payment_id", "X1"))
    assert event.data == {"amount": 10.25}
    # the instance starts: the held event follows its start, exact data kept
    iid = orch.start("payment", {"payment_id": "X1"})
    assert orch.waiting.held("payment", ("payment_id", "X1")) == []
    drain(app)
    payment = orch.status(iid)
    assert payment.state == "settled" and payment.context["amount"] == 10.25
    assert app.redis.zcard(app.keys.waiting_due) == 0


def test_a_held_event_whose_wait_ends_goes_to_the_dead_letters(app: App) -> None:
    orch = client(app)
    orch.emit("bank.confirmed", key=("payment_id", "X2"))
    assert orch.waiting.expire_due(time.time()) == 0  # not yet
    assert orch.waiting.expire_due(time.time() + 3) == 1
    (letter,) = orch.dead_letters.read()
    assert letter["source"] == "waiting"
    assert "no instance started within its wait" in letter["reason"]
    assert "payment_id=X2" in letter["reason"]
    assert orch.waiting.held("payment", ("payment_id", "X2")) == []
    # an instance starting later finds nothing held
    iid = orch.start("payment", {"payment_id": "X2"})
    drain(app)
    assert orch.status(iid).state == "awaiting"


def test_holding_while_the_instance_exists_delivers_at_once(app: App) -> None:
    orch = client(app)
    iid = orch.start("payment", {"payment_id": "X3"})
    delivered = orch.emit("bank.confirmed", key=("payment_id", "X3"))
    assert delivered.instance_id == iid and not delivered.note


def test_refuse_is_the_default_and_a_bad_payload_writes_nothing(app: App) -> None:
    orch = client(app)
    with pytest.raises(UnknownInstance, match="no running instance answers to order_id=A"):
        Orchestrator(app.redis, app.keys, app.registry).emit(
            "payment.timeout", key=("order_id", "A")
        )
    before = app.redis.dbsize()
    with pytest.raises(InputError, match="must be"):
        orch.emit("parcel.delivered", key=("parcel", "P9"), event_id="bad id!")
    assert app.redis.dbsize() == before


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"missing_instance": "maybe"}, "missing_instance must be one of"),
        ({"missing_instance": "start", "correlate_by": None}, "needs correlate_by"),
        ({"missing_instance": "wait", "missing_instance_wait": 0}, "more than 0"),
        ({"missing_instance": "wait", "missing_instance_wait": "2d"}, "at most 1d"),
        ({"missing_instance": "wait", "missing_instance_wait": "soon"}, "positive duration"),
    ],
)
def test_bad_policies_are_refused(attrs: dict[str, object], message: str) -> None:
    body: dict[str, object] = {
        "correlate_by": "k",
        "a": State(initial=True),
        "b": State(final=True),
        "transitions": [On("go", source="a", target="b")],
        **attrs,
    }
    with pytest.raises(DefinitionError, match=message):
        type("Policy", (Workflow,), body)


def test_the_cli_says_an_event_is_held_and_prints_no_instance_id(
    redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.deadline_workflows")
    held = run_cli("emit", "bank.confirmed", "--key", "payment_id=Z1", env=env)
    assert held.returncode == 0, held.stderr
    assert held.stdout == ""
    assert held.stderr.startswith("held: bank.confirmed waits up to 2s")
    started = run_cli("emit", "parcel.delivered", "--key", "parcel=Q1", "--json", env=env)
    body = json.loads(started.stdout)
    assert body["started"] is True and body["instance"]
