"""`POST /events` takes CloudEvents 1.0, structured and binary, on the real server.

The requests are built with the cloudevents SDK, as a sender would (the 1.x API,
kept under cloudevents.v1 by the 2.x SDK, and the 2.x API), and signed with hmac
here, not with the code under test. A malformed one is a valid one changed on its
way out: the SDK refuses to build it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.http.server import make_server
from tests.entry.test_serve import ENV, EVENTS_KEY, Served, inbox_length, seen_signatures

try:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent
except ImportError:  # cloudevents 1.x
    from cloudevents.conversion import to_binary, to_structured
    from cloudevents.http import CloudEvent

SOURCE = "https://shop.example.com/orders"
DROP = object()  # an attribute taken out of the event


@pytest.fixture
def served(app: App) -> Iterator[Served]:
    server = make_server(app, "127.0.0.1", 0, ServerConfig.from_env(ENV))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_port}", app, app.applier())
    server.shutdown()
    server.server_close()
    thread.join(5)


def cloud_event(
    mode: str, event_type: str, data: dict[str, Any] | None = None, **attributes: str
) -> tuple[dict[str, str], bytes]:
    """A CloudEvent as the SDK sends it: headers and body, in `mode`."""
    event = CloudEvent({"type": event_type, "source": SOURCE, **attributes}, data)
    headers, body = (to_structured if mode == "structured" else to_binary)(event)
    return dict(headers), body or b""


def post(
    served: Served,
    headers: dict[str, str],
    body: bytes,
    *,
    at: float | None = None,
    key: str = EVENTS_KEY,
    signed: bool = True,
) -> requests.Response:
    """POST the request, signed over its body as the webhook channel signs."""
    sent = dict(headers)
    if signed:
        timestamp = str(int(time.time() if at is None else at))
        mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        sent["X-Orchestrator-Timestamp"] = timestamp
        sent["X-Orchestrator-Signature"] = f"sha256={mac.hexdigest()}"
    return requests.post(served.url + "/events", data=body, headers=sent, timeout=10)


def history(served: Served, instance: str) -> list[dict[str, Any]]:
    served.drain()
    return served.app.client.history(instance)


def applied(served: Served, instance: str) -> list[tuple[str, str]]:
    """(type, id) of the events applied to the instance, duplicates left out."""
    return [
        (entry["event"]["type"], entry["event"]["id"])
        for entry in history(served, instance)
        if not entry["note"].startswith("duplicate")
    ]


# -- accepted ---------------------------------------------------------------------


def test_a_structured_cloudevent_is_applied_to_its_instance(served: Served) -> None:
    # Given a running counter
    instance = served.app.client.start("counter")
    # When a CloudEvent in structured mode names it as its subject
    headers, body = cloud_event("structured", "tick", {"n": 1}, subject=instance, id="ce-1")
    assert headers == {"content-type": "application/cloudevents+json"}
    answer = post(served, headers, body)
    # Then it is accepted with its id, and applied with its data
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"event_id": "ce-1", "instance": instance, "started": False}
    (tick,) = [e["event"] for e in history(served, instance) if e["event"]["type"] == "tick"]
    assert (tick["id"], tick["data"]) == ("ce-1", {"n": 1})


def test_a_binary_cloudevent_is_applied_to_its_instance(served: Served) -> None:
    instance = served.app.client.start("counter")
    headers, body = cloud_event("binary", "tick", {"n": 2}, subject=instance, id="ce-2")
    assert headers["ce-type"] == "tick" and "content-type" not in headers
    answer = post(served, headers, body)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"event_id": "ce-2", "instance": instance, "started": False}
    (tick,) = [e["event"] for e in history(served, instance) if e["event"]["type"] == "tick"]
    assert (tick["id"], tick["data"]) == ("ce-2", {"n": 2})
    # And one without data, with its data's Content-Type given, is applied too
    headers, body = cloud_event("binary", "finish", None, subject=instance, id="ce-3")
    answer = post(served, {**headers, "Content-Type": "application/json; charset=utf-8"}, body)
    assert answer.status_code == 202, answer.text
    served.drain()
    assert served.app.client.status(instance).state == "done"


def test_cloudevents_start_a_workflow_and_find_it_by_a_business_key_subject(
    served: Served,
) -> None:
    # Given no instance: an event with no subject, in binary mode, starts the workflow
    headers, body = cloud_event("binary", "request.opened", {"request_id": "R1", "minimum": 5})
    opened = post(served, headers, body)
    assert opened.status_code == 202, opened.text
    assert opened.json()["started"] is True
    instance = opened.json()["instance"]
    served.drain()
    # When the next ones name it by its business key, NAME=VALUE, in either mode
    headers, body = cloud_event("structured", "approve", {"amount": 9}, subject="request_id=R1")
    approve = post(served, headers, body)
    headers, body = cloud_event("binary", "pay", subject="request_id=R1")
    pay = post(served, headers, body)
    # Then they reach it
    assert (approve.status_code, pay.status_code) == (202, 202)
    assert approve.json()["instance"] == pay.json()["instance"] == instance
    served.drain()
    assert served.app.client.status(instance).state == "paid"


def test_a_cloudevent_answers_a_running_task_named_by_its_task_extension(
    served: Served,
) -> None:
    instance = served.app.client.start("stuck")
    served.drain()
    headers, body = cloud_event(
        "binary", "task.completed", {"ok": 1}, subject=instance, task="working"
    )
    answer = post(served, headers, body)
    assert answer.status_code == 202, answer.text
    served.drain()
    done = served.app.client.status(instance)
    assert (done.state, done.context["ok"]) == ("done", 1)


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_the_same_cloudevent_id_sent_again_is_applied_once(served: Served, mode: str) -> None:
    # Given a tick applied
    instance = served.app.client.start("counter")
    headers, body = cloud_event(mode, "tick", {"n": 1}, subject=instance, id="once-1")
    first = post(served, headers, body, at=time.time() - 2)
    assert first.status_code == 202
    served.drain()
    # When the sender delivers the very same event again (a retry, signed anew)
    again = post(served, headers, body)
    assert again.status_code == 202, again.text
    # Then the engine records the copy as a duplicate and applies it once
    assert applied(served, instance) == [
        ("workflow.started", f"start-{instance}"),
        ("tick", "once-1"),
    ]
    copies = [e for e in history(served, instance) if e["note"].startswith("duplicate")]
    assert [(c["event"]["id"], c["outcome"]) for c in copies] == [("once-1", "ignored")]


def test_a_starting_cloudevent_sent_again_starts_one_instance(served: Served) -> None:
    headers, body = cloud_event("structured", "request.opened", {"request_id": "R7"}, id="open-7")
    first = post(served, headers, body, at=time.time() - 2)
    served.drain()
    again = post(served, headers, body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["instance"] == first.json()["instance"]
    assert [i.id for i in served.app.client.list(workflow="approval")] == [first.json()["instance"]]
    assert applied(served, first.json()["instance"]) == [("workflow.started", "open-7")]


def test_a_cloudevent_from_the_2x_sdk_is_read_percent_decoded(served: Served) -> None:
    binding = pytest.importorskip("cloudevents.core.bindings.http")
    event_v1 = pytest.importorskip("cloudevents.core.v1.event")
    # Given a business key that needs percent-encoding in a header
    headers, body = cloud_event("binary", "request.opened", {"request_id": "Ré 1"})
    opened = post(served, headers, body)
    assert opened.status_code == 202, opened.text
    served.drain()
    # When the 2.x SDK sends events for it, in both modes
    for to_message, amount in ((binding.to_binary_event, 9), (binding.to_structured_event, None)):
        data = {"amount": amount} if amount else None
        event_type = "approve" if amount else "pay"
        attributes = {"type": event_type, "source": SOURCE, "subject": "request_id=Ré 1"}
        message = to_message(event_v1.CloudEvent(attributes, data))
        if to_message is binding.to_binary_event:
            assert message.headers["ce-subject"] == "request_id=R%C3%A9%201"
        answer = post(served, message.headers, message.body)
        assert answer.status_code == 202, answer.text
        served.drain()
    # Then they reach it
    assert served.app.client.status(opened.json()["instance"]).state == "paid"


# -- refused ----------------------------------------------------------------------


def tampered(
    mode: str, headers: dict[str, str], body: bytes, changes: dict[str, Any]
) -> tuple[dict[str, str], bytes]:
    """The request with attributes changed (DROP: taken out); "body" replaces the body."""
    headers, changes = dict(headers), dict(changes)
    body = changes.pop("body", body)
    if mode == "structured":
        envelope = json.loads(body) if changes else {}
        for name, value in changes.items():
            if value is DROP:
                del envelope[name]
            else:
                envelope[name] = value
        return headers, json.dumps(envelope).encode() if changes else body
    for name, value in changes.items():
        header = "content-type" if name == "datacontenttype" else f"ce-{name}"
        if value is DROP:
            del headers[header]
        else:
            headers[header] = value
    return headers, body


MALFORMED = [
    ("structured", {"specversion": DROP}, 400, 'CloudEvent attribute "specversion" is required'),
    ("structured", {"type": DROP}, 400, 'CloudEvent attribute "type" is required'),
    ("structured", {"id": DROP}, 400, 'CloudEvent attribute "id" is required'),
    ("structured", {"source": DROP}, 400, 'CloudEvent attribute "source" is required'),
    ("structured", {"source": ""}, 400, '"source" must be a non-empty string'),
    ("structured", {"type": 7}, 400, '"type" must be a non-empty string'),
    ("structured", {"specversion": "0.3"}, 400, '"specversion" must be "1.0", not \'0.3\''),
    ("structured", {"id": "bad id!"}, 400, "CloudEvent attribute \"id\" 'bad id!'"),
    ("structured", {"body": b'{"specversion": "1.0", '}, 400, "not valid JSON"),
    ("structured", {"body": b"[1]"}, 400, "the CloudEvent must be a JSON object"),
    ("structured", {"data": [1, 2]}, 400, 'CloudEvent "data" must be a JSON object, not list'),
    ("structured", {"data": "text"}, 400, 'CloudEvent "data" must be a JSON object, not str'),
    ("structured", {"data": {"x": "\ud800"}}, 400, "data.x holds a lone surrogate"),
    ("structured", {"data_base64": "AAE="}, 400, '"data_base64"'),
    ("structured", {"datacontenttype": "text/plain"}, 415, '"datacontenttype" must be JSON'),
    ("structured", {"subject": "orders/A1"}, 400, "\"subject\" 'orders/A1' is neither"),
    ("structured", {"subject": "request_id="}, 400, "\"subject\" 'request_id=' must be NAME=VALUE"),
    ("structured", {"subject": "no-such-instance"}, 400, "no-such-instance"),
    ("structured", {"type": "made.up"}, 400, "'made.up'"),
    ("binary", {"specversion": DROP}, 400, "the ce-specversion header is required"),
    ("binary", {"type": DROP}, 400, "the ce-type header is required"),
    ("binary", {"id": DROP}, 400, "the ce-id header is required"),
    ("binary", {"source": DROP}, 400, "the ce-source header is required"),
    ("binary", {"specversion": "0.3"}, 400, 'the ce-specversion header must be "1.0"'),
    ("binary", {"body": b'{"n": '}, 400, 'the body (the CloudEvent "data") is not valid JSON'),
    ("binary", {"body": b"[1, 2]"}, 400, '"data") must be a JSON object, not list'),
    ("binary", {"body": b'{"x": NaN}'}, 400, "NaN"),
    ("binary", {"body": b'{"x": "\\udfff"}'}, 400, "data.x holds a lone surrogate"),
    ("binary", {"datacontenttype": "text/plain"}, 415, "the Content-Type header must be JSON"),
    ("binary", {"subject": "no-such-instance"}, 400, "no-such-instance"),
    ("binary", {"type": "made.up"}, 400, "'made.up'"),
]


@pytest.mark.parametrize(("mode", "changes", "status", "says"), MALFORMED)
def test_a_malformed_cloudevent_is_refused_naming_the_fault_and_writes_nothing(
    served: Served, mode: str, changes: dict[str, Any], status: int, says: str
) -> None:
    # Given a running counter and the inbox as it is
    instance = served.app.client.start("counter")
    before = inbox_length(served)
    # When a correctly signed CloudEvent for it is malformed
    headers, body = cloud_event(mode, "tick", {"n": 1}, subject=instance, id="bad-1")
    answer = post(served, *tampered(mode, headers, body, changes))
    # Then it is refused naming the fault, and nothing is written or consumed
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert inbox_length(served) == before
    assert seen_signatures(served) == []
    assert applied(served, instance) == [("workflow.started", f"start-{instance}")]


def test_a_batch_or_another_format_is_refused_415(served: Served) -> None:
    instance = served.app.client.start("counter")
    before = inbox_length(served)
    _, body = cloud_event("structured", "tick", subject=instance)
    for content_type in ("application/cloudevents-batch+json", "application/cloudevents+avro"):
        answer = post(served, {"Content-Type": content_type}, b"[" + body + b"]")
        assert answer.status_code == 415
        assert content_type in answer.json()["error"]
    assert inbox_length(served) == before


def test_a_cloudevent_sent_as_plain_json_is_told_its_content_type(served: Served) -> None:
    instance = served.app.client.start("counter")
    _, body = cloud_event("structured", "tick", subject=instance)
    answer = post(served, {"Content-Type": "application/json"}, body)
    assert answer.status_code == 400
    assert "application/cloudevents+json" in answer.json()["error"]


def test_cloudevents_must_be_signed_freshly_and_once(served: Served) -> None:
    instance = served.app.client.start("counter")
    headers, body = cloud_event("structured", "tick", subject=instance, id="s-1")
    unsigned = post(served, headers, body, signed=False)
    wrong_key = post(served, headers, body, key="not-the-key")
    stale = post(served, headers, body, at=time.time() - 301)
    genuine = post(served, headers, body)
    replayed = requests.post(
        served.url + "/events",
        data=genuine.request.body,
        headers=dict(genuine.request.headers),
        timeout=10,
    )
    # a binary event whose data was changed after signing
    b_headers, b_body = cloud_event("binary", "tick", {"n": 1}, subject=instance, id="s-2")
    signed = post(served, b_headers, b_body, at=time.time() - 1)
    signature = {
        name: signed.request.headers[name]
        for name in ("X-Orchestrator-Timestamp", "X-Orchestrator-Signature")
    }
    changed = requests.post(
        served.url + "/events", data=b'{"n": 2}', headers={**b_headers, **signature}, timeout=10
    )
    refused = [unsigned, wrong_key, stale, replayed, changed]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert (genuine.status_code, signed.status_code) == (202, 202)
    assert applied(served, instance) == [
        ("workflow.started", f"start-{instance}"),
        ("tick", "s-1"),
        ("tick", "s-2"),
    ]


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_an_oversize_cloudevent_is_refused_unread(served: Served, mode: str) -> None:
    instance = served.app.client.start("counter")
    before = inbox_length(served)
    headers, body = cloud_event(mode, "tick", {"x": "y" * 300_000}, subject=instance)
    answer = post(served, headers, body)
    assert answer.status_code == 413
    assert inbox_length(served) == before
    assert applied(served, instance) == [("workflow.started", f"start-{instance}")]


def test_a_ce_header_given_twice_is_refused(served: Served) -> None:
    instance = served.app.client.start("counter")
    before = inbox_length(served)
    headers, body = cloud_event("binary", "tick", {"n": 1}, subject=instance)
    timestamp = str(int(time.time()))
    mac = hmac.new(EVENTS_KEY.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    connection = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=10)
    try:
        connection.putrequest("POST", "/events")
        for name, value in [
            *headers.items(),
            ("ce-type", "finish"),  # which one is meant? neither is guessed
            ("Content-Length", str(len(body))),
            ("X-Orchestrator-Timestamp", timestamp),
            ("X-Orchestrator-Signature", f"sha256={mac.hexdigest()}"),
        ]:
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        status, doc = answer.status, json.loads(answer.read())
    finally:
        connection.close()
    assert (status, doc) == (400, {"error": "the ce-type header is given more than once"})
    assert inbox_length(served) == before
    assert seen_signatures(served) == []
