"""The HTTP API at /api, over real HTTP against `orchestrator serve`'s server and a real Redis:
every route, the tokens' scopes, and every refusal's status and field."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import redis

from orchestrator.runtime.notify.ledger import Ledger
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.store.tokens import Tokens
from tests.entry.api_support import Api, api, refusal

__all__ = ["api"]  # the fixture, used by name


def inbox_length(api: Api) -> int:
    keys = api.app.keys
    return sum(int(api.app.redis.xlen(keys.inbox(p))) for p in range(keys.partitions))


# -- tokens and scopes ------------------------------------------------------------------


def test_every_route_needs_a_token_and_an_unknown_one_is_refused(api: Api) -> None:
    # Given no token, a malformed header, a made-up token and a revoked one
    store = Tokens(api.app.redis, api.app.keys)
    revoked, token = store.create("gone", "admin")
    store.revoke(revoked.id)
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer orch_000000000000_nope"},
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"Bearer {api.tokens['read']}x"},
    ]
    for given in headers:
        for method, path in [
            ("GET", "/api/me"),
            ("GET", "/api/instances"),
            ("POST", "/api/events"),
        ]:
            # When it calls the API
            answer = api.call(method, path, None, headers=given, json={"type": "tick"})
            # Then it is refused 401 with a Bearer challenge, and nothing is written
            refusal(answer, 401)
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert inbox_length(api) == 0


def test_me_names_the_token_and_scopes_are_ordered(api: Api) -> None:
    for scope in ("read", "operate", "admin"):
        me = api.get("/api/me", scope)
        assert me.status_code == 200
        assert me.json()["scope"] == scope and me.json()["name"] == f"test {scope}"
        assert set(me.json()) == {"token", "name", "scope"}
    # a read token may read but not operate: 403 naming the scope needed
    message = refusal(api.post("/api/instances", "read", json={"workflow": "counter"}), 403)
    assert "operate" in message
    assert api.post("/api/instances", "admin", json={"workflow": "counter"}).status_code == 201


def test_the_token_is_used_and_its_last_use_recorded_never_echoed(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orchestrator.entry.http"):
        assert api.get("/api/me").status_code == 200
        api.call("GET", "/api/me", None, headers={"Authorization": "Bearer orch_x_y"})
    listed = {t.name: t for t in Tokens(api.app.redis, api.app.keys).list()}
    assert listed["test read"].last_used is not None
    assert listed["test operate"].last_used is None
    text = caplog.text + json.dumps(api.get("/api/me").json())
    assert all(token not in text for token in api.tokens.values())


def test_the_openapi_document_is_served_without_a_token(api: Api) -> None:
    doc = api.get("/api/openapi.json", None).json()
    assert doc["openapi"].startswith("3.")
    assert "/instances" in doc["paths"] and "/instances/{instance_id}/cancel" in doc["paths"]
    assert doc["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert api.get("/api/docs", None).status_code == 401  # no Swagger UI (it needs a CDN)


# -- instances -------------------------------------------------------------------------


def test_start_status_history_cancel(api: Api) -> None:
    # Given an instance started through the API
    started = api.post(
        "/api/instances", json={"workflow": "approval", "data": {"request_id": "R1"}}
    )
    assert started.status_code == 201
    instance = started.json()["instance_id"]
    api.drain()
    # When its status is read
    shown = api.get(f"/api/instances/{instance}").json()
    # Then it shows where it stands, with its timer and no failure
    assert (shown["workflow"], shown["state"], shown["status"]) == (
        "approval",
        "waiting",
        "running",
    )
    assert shown["context"] == {"request_id": "R1"}
    assert shown["correlation"] == "request_id=R1"
    assert [t["event"] for t in shown["timers"]] == ["approval.expired"]
    assert shown["timers"][0]["due"] > shown["created_at"]
    assert shown["error"] is None and shown["parked"] == [] and shown["children"] == {}
    # and its history, oldest first
    history = api.get(f"/api/instances/{instance}/history").json()["history"]
    assert [h["event"]["type"] for h in history] == ["workflow.started"]
    # When it is cancelled with a reason
    cancelled = api.post(f"/api/instances/{instance}/cancel", json={"reason": "test"})
    assert cancelled.status_code == 202 and cancelled.json()["instance_id"] == instance
    api.drain()
    assert api.get(f"/api/instances/{instance}").json()["status"] == "cancelled"
    # Then cancelling again is a conflict, in the CLI's words
    message = refusal(api.post(f"/api/instances/{instance}/cancel"), 409)
    assert "already cancelled" in message


def test_emit_by_id_and_by_key_and_an_event_that_starts_one(api: Api) -> None:
    counter = api.post("/api/instances", json={"workflow": "counter"}).json()["instance_id"]
    api.drain()
    sent = api.post("/api/events", json={"type": "tick", "instance_id": counter})
    assert sent.status_code == 202
    assert sent.json()["instance_id"] == counter and sent.json()["started"] is False
    opened = api.post("/api/events", json={"type": "request.opened", "data": {"request_id": "K"}})
    assert opened.json()["started"] is True
    api.drain()
    by_key = api.post(
        "/api/events", json={"type": "approve", "key": "request_id=K", "data": {"amount": 5}}
    )
    assert (
        by_key.status_code == 202 and by_key.json()["instance_id"] == opened.json()["instance_id"]
    )
    api.drain()
    types = [h["event"]["type"] for h in api.app.client.history(counter)]
    assert types == ["workflow.started", "tick"]


def test_retry_and_replay(api: Api) -> None:
    instance = api.post("/api/instances", json={"workflow": "counter"}).json()["instance_id"]
    api.drain()
    message = refusal(api.post(f"/api/instances/{instance}/retry"), 409)
    assert "nothing to retry" in message
    report = api.post(f"/api/instances/{instance}/replay", "read")
    assert report.status_code == 200
    assert report.json()["matches"] is True and report.json()["events"] == 1


def test_notifications_of_an_instance(api: Api) -> None:
    instance = api.post("/api/instances", json={"workflow": "counter"}).json()["instance_id"]
    api.drain()
    assert api.get(f"/api/instances/{instance}/notifications").json()["notifications"] == []
    key = f"{instance}:1:0:+15550001111"
    ledger = Ledger(api.app.redis, api.app.keys)
    ledger.claim(key, "job", {"instance": instance, "channel": "sms", "to": "+15550001111"})
    ledger.advance(key, "sent", provider_id="SM1")
    found = api.get(f"/api/instances/{instance}/notifications").json()["notifications"]
    assert [(n["channel"], n["status"], n["provider_id"]) for n in found] == [
        ("sms", "sent", "SM1")
    ]
    assert found[0]["to"] == "+15550001111"  # as `orchestrator notifications` shows it
    refusal(api.get("/api/instances/nope/notifications"), 404, "instance_id")


# -- bad input: a 4xx naming the field, nothing written ------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "says"),
    [
        ("/api/instances", {"workflow": "nope"}, 404, "workflow", "nope"),
        ("/api/instances", {"data": {}}, 422, "workflow", "required"),
        ("/api/instances", {"workflow": "counter", "data": []}, 422, "data", "dictionary"),
        ("/api/instances", {"workflow": "counter", "extra": 1}, 422, "extra", "not permitted"),
        ("/api/instances", {"workflow": "counter", "id": "a b"}, 400, "id", "instance id"),
        ("/api/instances", {"workflow": "approval", "data": {}}, 400, "data", "request_id"),
        ("/api/events", {"type": "made.up", "instance_id": "x"}, 400, "type", "made.up"),
        ("/api/events", {"type": "tick", "instance_id": "nope"}, 404, "instance_id", "nope"),
        ("/api/events", {"type": "approve", "key": "request_id"}, 400, "key", "NAME=VALUE"),
        ("/api/events", {"type": "tick", "instance_id": "a", "key": "a=b"}, 400, "key", "either"),
        ("/api/events", {"type": "tick", "data": {"x": float("1e400")}}, 400, "data", None),
        ("/api/instances/nope/cancel", {}, 404, "instance_id", "nope"),
        ("/api/instances/nope/cancel", {"reason": 5}, 422, "reason", None),
        ("/api/dead-letters/1-1/replay", None, 404, "letter_id", "1-1"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    api: Api, path: str, body: Any, status: int, field: str, says: str | None
) -> None:
    text = json.dumps(body).replace("Infinity", "1e400")  # a number no float holds
    kwargs: dict[str, Any] = {} if body is None else {"data": text}
    answer = api.post(path, headers={"Content-Type": "application/json"}, **kwargs)
    message = refusal(answer, status, field)
    assert says is None or says in message, message
    assert inbox_length(api) == 0 and not api.app.client.list()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"workflow": "counter", "data": {"x": NaN}}', "not JSON data"),
        (b'{"workflow": "counter", "data": ' + b"[" * 100 + b"]" * 100 + b"}", None),
    ],
)
def test_malformed_json_is_a_bad_request(api: Api, body: bytes, says: str | None) -> None:
    answer = api.post("/api/instances", data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422), answer.text
    assert says is None or says in answer.json()["error"]
    assert not api.app.client.list()


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    big = json.dumps({"workflow": "counter", "data": {"x": "y" * 300_000}}).encode()
    # declared: refused on its Content-Length
    refusal(api.post("/api/instances", data=big, headers={"Content-Type": "application/json"}), 413)
    # streamed without a length (chunked): refused once it passes the limit
    chunks = iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
    streamed = api.post("/api/instances", data=chunks, headers={"Content-Type": "application/json"})
    refusal(streamed, 413)
    assert not api.app.client.list()


def test_a_lying_content_length_is_refused(api: Api) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/instances HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n"
            + f"Authorization: Bearer {api.tokens['operate']}\r\n\r\n".encode()
        )
        assert b" 400 " in conn.recv(4096).split(b"\r\n")[0] + b" "


def test_unknown_instance_and_workflow_are_404(api: Api) -> None:
    for path in ("/api/instances/nope", "/api/instances/nope/history"):
        assert "nope" in refusal(api.get(path), 404, "instance_id")
    assert "nope" in refusal(api.post("/api/instances/nope/replay", "read"), 404, "instance_id")
    assert "nope" in refusal(api.get("/api/workflows/nope"), 404, "name")
    refusal(api.get("/api/recipients/nope"), 404, "recipient_id")
    refusal(api.get("/api/nowhere"), 404)


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("limit=0", 422, "limit"),
        ("limit=501", 422, "limit"),
        ("limit=many", 422, "limit"),
        ("cursor=%%%", 400, "cursor"),
        ("cursor=" + "QQ" * 10, 400, "cursor"),
        ("status=sleeping", 400, "status"),
        ("workflow=nope", 404, "workflow"),
        ("key=novalue", 400, "key"),
    ],
)
def test_bad_listing_parameters(api: Api, query: str, status: int, field: str) -> None:
    refusal(api.get(f"/api/instances?{query}"), status, field)


# -- dead letters, recipients, workflows, overview ------------------------------------------


def test_dead_letters_listed_a_page_at_a_time_and_replayed(api: Api) -> None:
    # Given three events whose guard explodes: each is dead-lettered
    ids = []
    for _ in range(3):
        instance = api.post("/api/instances", json={"workflow": "guarded"}).json()["instance_id"]
        api.drain()
        api.post("/api/events", json={"type": "go", "instance_id": instance})
        api.drain()
        ids.append(instance)
    # When they are listed two at a time
    first = api.get("/api/dead-letters?limit=2").json()
    second = api.get(f"/api/dead-letters?limit=2&cursor={first['next']}").json()
    # Then the pages hold them all, oldest first, once each
    letters = first["dead_letters"] + second["dead_letters"]
    assert [d["event"]["instance"] for d in letters] == ids
    assert second["next"] is None
    refusal(api.get("/api/dead-letters?cursor=abc"), 400, "cursor")
    # When one is replayed (operate scope), it leaves the list for its inbox
    letter = letters[0]["id"]
    assert "operate" in refusal(api.post(f"/api/dead-letters/{letter}/replay", "read"), 403)
    before = inbox_length(api)
    answer = api.post(f"/api/dead-letters/{letter}/replay")
    assert answer.status_code == 200 and answer.json() == {"replayed": [letter]}
    assert inbox_length(api) == before + 1
    assert letter not in [d["id"] for d in api.get("/api/dead-letters").json()["dead_letters"]]


def test_recipients(api: Api) -> None:
    store = Recipients(api.app.redis, api.app.keys)
    for number in range(5):
        store.save(Recipient(id=f"r{number}", addresses={"email": f"r{number}@example.com"}))
    seen: list[str] = []
    cursor = ""
    while True:
        page = api.get(f"/api/recipients?limit=2{cursor}").json()
        seen += [r["id"] for r in page["recipients"]]
        if page["next"] is None:
            break
        cursor = f"&cursor={page['next']}"
    assert sorted(seen) == [f"r{n}" for n in range(5)]
    one = api.get("/api/recipients/r1").json()
    assert one["id"] == "r1" and "email" in one["addresses"]
    refusal(api.get("/api/recipients?cursor=x"), 400, "cursor")


def test_workflows_and_their_graphs(api: Api) -> None:
    listed = {w["name"]: w for w in api.get("/api/workflows").json()["workflows"]}
    assert listed["saga"]["states"][0] == "one" and listed["versioned"]["versions"] == [1, 2]
    saga = api.get("/api/workflows/saga").json()
    nodes = {n["id"]: n for n in saga["graph"]["nodes"]}
    assert nodes["one"]["initial"] and nodes["finished"]["final"]
    assert nodes["one"]["compensation"] is not None
    edges = {(e["source"], e["target"], e["event"]) for e in saga["graph"]["edges"]}
    assert ("one", "two", "task.completed") in edges
    assert ("three", "undone", "task.failed") in edges  # from any state: an edge each
    assert saga["mermaid"].startswith("stateDiagram-v2")
    assert api.get("/api/workflows/versioned?version=1").json()["version"] == 1
    refusal(api.get("/api/workflows/saga?version=0"), 422, "version")


def test_overview(api: Api) -> None:
    for _ in range(2):
        api.post("/api/instances", json={"workflow": "counter"})
    before = api.get("/api/overview").json()
    api.drain()
    after = api.get("/api/overview").json()
    assert after["instances"]["total"] == 2 and after["instances"]["running"] == 2
    assert after["failure_rate"] is None  # none finished
    assert len(after["inboxes"]) == api.app.keys.partitions
    assert sum(i["lag"] + i["pending"] for i in before["inboxes"]) == 2
    assert sum(i["lag"] + i["pending"] for i in after["inboxes"]) == 0
    assert set(after["queues"]) == {"tasks", "notifications"}
    assert after["dead_letters"] == 0
    if after["events_added"] is not None:  # Redis 7 counts them
        assert after["events_added"] >= 2
    assert after["events_applied"] is None  # no process counted for /metrics


def test_overview_sums_the_events_the_appliers_counted_as_applied(api: Api) -> None:
    from orchestrator.store.metrics import MetricsStore

    store = MetricsStore(api.app.redis, api.app.keys)
    applied = "orchestrator_events_applied_total"
    store.write("host:1", {(applied, (("workflow", "order"),)): 5.0})
    store.write("host:2", {(applied, (("workflow", "order"),)): 2.0, ("other_total", ()): 9.0})
    assert api.get("/api/overview").json()["events_applied"] == 7


def test_the_other_endpoints_are_unchanged(api: Api) -> None:
    assert api.get("/health", None).json() == {"ok": True}
    assert api.post("/events", None, data=b"{}").status_code == 503  # no secret configured
    assert api.get("/nope", None).status_code == 404


def test_a_duplicate_id_is_a_conflict(api: Api) -> None:
    assert api.post("/api/instances", json={"workflow": "counter", "id": "one"}).status_code == 201
    again = api.post("/api/instances", json={"workflow": "counter", "id": "one"})
    assert "exists already" in refusal(again, 409)


def test_a_failure_inside_is_answered_briefly_and_logged_by_its_type(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("a secret detail")

    def gone(**_: Any) -> Any:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(api.app.client, "page", broken)
    with caplog.at_level(logging.INFO, logger="orchestrator.entry.http"):
        assert refusal(api.get("/api/instances"), 500) == "internal error"
    assert "RuntimeError" in caplog.text and "a secret detail" not in caplog.text
    monkeypatch.setattr(api.app.client, "page", gone)
    assert "Redis" in refusal(api.get("/api/instances"), 503)
