"""The web console end to end in headless Chromium, against the real HTTP server and a
real `orchestrator worker` process: sign in, filter, follow an instance live, cancel,
retry, replay a dead letter, what a read-only token sees, and that data stays text.

Screenshots of the main pages go to $CONSOLE_SCREENSHOTS when it is set (the README's
come from `support/screenshots.py`), else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from orchestrator.core.instance import Instance
from orchestrator.entry.bootstrap import App
from tests.console.conftest import Page

pytestmark = pytest.mark.slow

Tokens = Callable[[str, str], str]


def shoot(page: Page, name: str, tmp_path: Path) -> Path:
    """The whole page (beyond the window) as a PNG."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = page.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = page.driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": 1280,
                "height": min(size["height"], 2400),
                "scale": 1,
            },
        },
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


POLL_SECONDS = 2  # the console's live pages (static/js/live.js INTERVAL)
# The page's visibility as the browser would report it for a background tab
HIDE = """
Object.defineProperty(document, "hidden", {configurable: true, get: () => arguments[0]});
document.dispatchEvent(new Event("visibilitychange"));
"""
# How many API calls the page makes in a window of arguments[0] ms (the browser's clock)
COUNT_POLLS = """
const done = arguments[arguments.length - 1];
let calls = 0;
const seen = new PerformanceObserver((list) => {
  calls += list.getEntries().filter((e) => e.name.includes("/api/")).length;
});
seen.observe({type: "resource"});
setTimeout(() => { seen.disconnect(); done(calls); }, arguments[0]);
"""


def wait_state(app: App, iid: str, done: Callable[[Instance], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done(app.client.status(iid)):
        assert time.monotonic() < deadline, f"{iid}: {app.client.status(iid)}"
        time.sleep(0.05)


def test_sign_in_refuses_a_bad_token_and_keeps_a_good_one_in_the_tab_only(
    page: Page, make_token: Tokens
) -> None:
    token = make_token("ada", "operate")
    # Given the console, not signed in
    page.open()
    page.find("#token").send_keys("orch_000000000000_not-a-token")
    page.driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    # Then a wrong token is refused with a message, and nothing is kept
    page.text_is("#sign-in-error .error", "This token is not valid (unknown, revoked or mistyped).")
    assert page.driver.execute_script("return sessionStorage.length") == 0
    # When a good token is pasted
    field = page.find("#token")
    field.clear()
    field.send_keys(token)
    page.driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    # Then the header names the token and its scope, and the instances page shows
    page.text_is("#who-name", "ada")
    page.text_is("#who-scope", "operate")
    page.text_is("main h1", "Instances")
    # And the token is in this tab's sessionStorage only: not in the URL, not in a cookie
    assert token not in page.driver.current_url
    assert page.driver.execute_script("return document.cookie") == ""
    assert page.driver.get_cookies() == []
    # And signing out forgets it
    page.driver.find_element(By.ID, "sign-out").click()
    page.find("#token")
    assert page.driver.execute_script("return sessionStorage.length") == 0
    assert page.console_errors() == []


def test_instances_filter_and_pages(
    app: App, page: Page, make_token: Tokens, worker: Path, tmp_path: Path
) -> None:
    # Given two approvals (keyed by request id) and 26 counters, applied by the worker
    client = app.client
    first = client.start("approval", {"request_id": "K-1"})
    second = client.start("approval", {"request_id": "K-2"})
    counters = [client.start("counter") for _ in range(26)]
    for iid in (first, second, counters[-1]):
        wait_state(app, iid, lambda i: i.status == "running")
    page.sign_in(make_token("viewer", "read"))
    # When the list is filtered by workflow
    page.wait().until(lambda d: len(page.rows()) == 25)
    Select(page.find("#filter-workflow")).select_by_value("approval")
    page.driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    # Then only the approvals show, newest first, with their state and status
    page.wait().until(lambda d: page.rows() == [second, first])
    (row,) = page.texts(f'#instances tr[data-id="{first}"]')
    assert row.split("\t")[1:4] == ["approval v1", "waiting", "running"], row
    assert "workflow=approval" in page.driver.current_url
    # When filtered by business key too
    page.find("#filter-key").send_keys("request_id=K-1")
    page.driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    page.wait().until(lambda d: page.rows() == [first])
    # And by a status none has
    Select(page.find("#filter-status")).select_by_value("completed")
    page.driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    page.text_is("#instances .empty", "No instance matches.")
    # When the filters are cleared: 28 instances on two pages of 25
    page.driver.find_element(By.LINK_TEXT, "Clear").click()
    page.wait().until(lambda d: len(page.rows()) == 25)
    shown = set(page.rows())
    assert page.find("#page-previous").get_attribute("disabled") is not None
    page.find("#page-next").click()
    page.wait().until(lambda d: len(page.rows()) == 3)
    assert shown.isdisjoint(page.rows())
    assert shown | set(page.rows()) == {first, second, *counters}
    page.text_is("#instances-count", "page 2 · 3 shown")
    page.find("#page-previous").click()
    page.wait().until(lambda d: set(page.rows()) == shown)
    # When the tab is hidden, the list stops polling; shown again, it polls at once
    page.driver.execute_script(HIDE, True)
    page.text_is(".live", "paused (tab hidden)")
    quiet = page.driver.execute_async_script(COUNT_POLLS, 2.5 * POLL_SECONDS * 1000)
    assert quiet == 0, "it polled while hidden"
    page.driver.execute_script(HIDE, False)
    page.wait().until(lambda d: page.texts(".live")[0].startswith("live · updated"))
    assert page.driver.execute_async_script(COUNT_POLLS, 2.5 * POLL_SECONDS * 1000) >= 1
    # And a malformed key is refused with the field named, not shown as an empty list
    page.go("#/instances?key=no-equals-sign")
    page.wait().until(lambda d: "(field: key)" in page.find("#instances").text)
    assert page.console_errors() == []


def test_an_instance_followed_live_while_the_worker_runs_it(
    app: App, page: Page, make_token: Tokens, worker: Path, tmp_path: Path
) -> None:
    # Given an order whose steps take a little while each
    page.sign_in(make_token("ops", "operate"))
    iid = app.client.start(
        "order", {"order_id": "O-7", "email": "o7@example.com", "work_seconds": 1.5}
    )
    wait_state(app, iid, lambda i: i.state == "reserving")
    # When its page is opened while it runs
    page.go(f"#/instances/{iid}")
    page.text_is("#instance-state", "reserving")
    assert page.all("#cancel"), "an operator sees Cancel while it runs"
    page.driver.execute_script("window.notReloaded = true")
    # Then the page follows it without a reload, state after state, to its end
    seen: list[str] = []

    def finished(driver: object) -> bool:
        state, status = page.driver.execute_script(  # read together: the page redraws
            "return ['#instance-state', '#instance-status']"
            ".map((css) => document.querySelector(css).innerText)"
        )
        if not seen or seen[-1] != state:
            seen.append(state)
        return bool(status == "completed")

    page.wait(30).until(finished)
    page.text_is("#instance-state", "shipped")
    assert page.driver.execute_script("return window.notReloaded") is True
    order = ["reserving", "charging", "shipping", "shipped"]
    assert seen[0] == "reserving" and seen[-1] == "shipped"
    assert seen == [s for s in order if s in seen] and len(seen) >= 3, seen
    # And the timeline holds each event with its transition and effects, the outcomes of
    # its notifications (sent after it finished) included
    page.wait().until(lambda d: len(page.texts("#timeline > li .type")) == 6)
    types = page.texts("#timeline > li .type")
    assert types[:4] == ["workflow.started", "task.completed", "task.completed", "task.completed"]
    assert sorted(types[4:]) == ["notification.failed", "notification.sent"]
    assert page.texts("#timeline > li .move")[:4] == [
        "∅ → reserving",
        "reserving → charging",
        "charging → shipping",
        "shipping → shipped",
    ]
    entries = page.all("#timeline > li")
    assert "run task workflows.order.tasks:reserve_stock (attempt 1)" in entries[0].text
    # And the graph lights the current state and the path taken
    current = page.find("#graph g.node.current")
    assert current.get_attribute("data-state") == "shipped"
    lit = {
        (e.get_attribute("data-source"), e.get_attribute("data-target"))
        for e in page.all("#graph g.edge.lit")
    }
    assert lit == {("reserving", "charging"), ("charging", "shipping"), ("shipping", "shipped")}
    states = {n.get_attribute("data-state") for n in page.all("#graph g.node")}
    assert states == {"reserving", "charging", "shipping", "shipped", "failed"}
    # And its data, its notifications (queued: this worker sends none), no Cancel any more
    assert '"tracking": "TRK-O-7"' in page.find("#data").text
    # (the email printed, as no SMTP server is configured; no phone number for the sms)
    page.wait().until(lambda d: len(page.texts("#notifications tbody tr")) == 2)
    email, sms = sorted(page.texts("#notifications tbody tr"))
    assert email.split("\t")[2:5] == ["order_shipped", "sent", "1"], email
    assert "@example.com" in email.split("\t")[1]
    assert sms.split("\t")[:5] == ["sms", "—", "order_shipped", "failed", "1"], sms
    assert sms.split("\t")[-1] == "no sms address for the recipient"
    assert page.all("#cancel") == []
    shoot(page, "instance", tmp_path)
    assert page.console_errors() == []


def test_a_failed_step_shows_its_traceback_and_compensations(
    app: App, page: Page, make_token: Tokens, worker: Path
) -> None:
    # Given a saga whose third step fails: two compensations run
    iid = app.client.start("saga", {"fail_at": "step3"})
    wait_state(app, iid, lambda i: i.state == "undone")
    page.sign_in(make_token("viewer", "read"))
    page.go(f"#/instances/{iid}")
    page.text_is("#instance-status .badge", "failed")
    # Then the failure is an error entry with its message and its traceback folded
    page.wait().until(lambda d: len(page.all("#timeline > li")) == 6)
    error = page.find("#timeline li.kind-error")
    assert "RuntimeError: step3 failed on purpose" in error.text
    details = error.find_element(By.CSS_SELECTOR, "details.traceback")
    assert details.get_attribute("open") is None
    details.find_element(By.TAG_NAME, "summary").click()
    assert "Traceback (most recent call last):" in details.find_element(By.TAG_NAME, "pre").text
    # And the two compensations are marked as such
    kinds = [e.get_attribute("data-kind") for e in page.all("#timeline > li")]
    assert kinds.count("compensation") >= 1 and kinds[0] == "start"
    assert page.all("#cancel") == [] and page.all("#retry") == []


def test_cancel_asks_first_then_cancels(
    app: App, page: Page, make_token: Tokens, worker: Path
) -> None:
    # Given an approval waiting (with its expiry timer armed)
    iid = app.client.start("approval", {"request_id": "C-1"})
    wait_state(app, iid, lambda i: i.state == "waiting")
    page.sign_in(make_token("ops", "operate"))
    page.go(f"#/instances/{iid}")
    page.text_is("#instance-state", "waiting")
    assert "approval.expired" in page.find("#pending").text
    # When Cancel is clicked and the dialog dismissed, nothing happens
    page.find("#cancel").click()
    page.wait().until(ec.visibility_of_element_located((By.ID, "confirm")))
    assert "Cancel this instance?" in page.find("#confirm-title").text
    page.driver.find_element(By.ID, "confirm-no").click()
    page.wait().until(ec.invisibility_of_element_located((By.ID, "confirm")))
    assert app.client.status(iid).status == "running"
    # When it is clicked again, a reason given and confirmed
    page.find("#cancel").click()
    page.wait().until(ec.visibility_of_element_located((By.ID, "confirm-reason")))
    page.find("#confirm-reason").send_keys("customer called")
    page.confirm()
    # Then the page shows it cancelled, with the reason, and no button left
    page.text_is("#instance-status .badge", "cancelled")
    page.wait().until(lambda d: "customer called" in page.find("#instance-summary").text)
    assert page.all("#cancel") == []
    assert app.client.status(iid).status == "cancelled"
    assert page.console_errors() == []


def test_retry_resumes_a_failed_compensation(
    app: App, page: Page, make_token: Tokens, worker: Path, tmp_path: Path
) -> None:
    # Given an instance whose compensation failed until its cause is fixed
    fixed = tmp_path / "fixed"
    iid = app.client.start("bad_compensation", {"fail_at": "step2", "fixed": str(fixed)})
    wait_state(app, iid, lambda i: i.status == "failed")
    page.sign_in(make_token("ops", "operate"))
    page.go(f"#/instances/{iid}")
    page.text_is("#instance-status .badge", "failed")
    # When the cause is fixed and Retry confirmed
    fixed.write_text("yes")
    page.find("#retry").click()
    page.confirm()
    # Then the compensation runs again and the instance ends undone
    page.text_is("#instance-state", "undone")
    page.wait().until(lambda d: page.all("#retry") == [])
    assert app.client.status(iid).compensating_to is None


def plant_dead_letter(app: App) -> str:
    """An event the applier cannot apply (its instance's version is not loaded), then the
    version put right: the letter can go back. Returns the counter's id."""
    iid = app.client.start("counter")
    wait_state(app, iid, lambda i: i.state == "counting")
    app.redis.hset(app.keys.instance(iid), "version", "99")
    app.client.emit("tick", instance_id=iid)
    deadline = time.monotonic() + 20
    while not app.client.dead_letters.read():
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.05)
    app.redis.hset(app.keys.instance(iid), "version", "1")
    return iid


def test_a_dead_letter_is_replayed_after_confirmation(
    app: App, page: Page, make_token: Tokens, worker: Path
) -> None:
    iid = plant_dead_letter(app)
    # Given a poisoned inbox entry that cannot go back (no event in it)
    app.redis.xadd(app.keys.inbox(0), {"e": "{not json"})
    deadline = time.monotonic() + 20
    while len(app.client.dead_letters.read()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (letter,) = [x for x in app.client.dead_letters.read() if isinstance(x["event"], dict)]
    page.sign_in(make_token("ops", "operate"))
    page.go("#/dead-letters")
    # Then both are listed with their reasons; only the event can be replayed
    row = page.find(f'#dead-letters tr[data-id="{letter["id"]}"]')
    assert "version 99 is not loaded" in row.text and "tick" in row.text and iid in row.text
    assert len(page.all("#dead-letters tbody tr")) == 2
    assert len(page.all("#dead-letters button.replay")) == 1
    assert "cannot replay" in page.find("#dead-letters").text
    # When Replay is confirmed
    row.find_element(By.CSS_SELECTOR, "button.replay").click()
    assert iid in page.find("#confirm-message").text
    page.confirm()
    # Then it leaves the list and its event reaches the instance
    page.wait().until(lambda d: len(page.all("#dead-letters tbody tr")) == 1)
    assert page.all(f'#dead-letters tr[data-id="{letter["id"]}"]') == []
    deadline = time.monotonic() + 20
    while not any(h["event"]["type"] == "tick" for h in app.client.history(iid)):
        assert time.monotonic() < deadline, "the replayed tick was not applied"
        time.sleep(0.05)
    assert page.console_errors() == []


def test_a_read_only_token_sees_no_button(
    app: App, page: Page, make_token: Tokens, worker: Path
) -> None:
    plant_dead_letter(app)
    waiting = app.client.start("approval", {"request_id": "R-1"})
    wait_state(app, waiting, lambda i: i.state == "waiting")
    page.sign_in(make_token("auditor", "read"))
    page.text_is("#who-scope", "read")
    # The instance shows, live, with no Cancel or Retry
    page.go(f"#/instances/{waiting}")
    page.text_is("#instance-state", "waiting")
    page.find("#timeline > li")
    assert page.all("#actions button") == []
    # The dead letter shows, with no Replay
    page.go("#/dead-letters")
    page.wait().until(lambda d: "version 99 is not loaded" in page.find("#dead-letters").text)
    assert page.all("#dead-letters button") == []
    assert page.console_errors() == []


def test_data_is_shown_as_text_never_as_markup(
    app: App, page: Page, make_token: Tokens, worker: Path
) -> None:
    # Given an instance whose input holds markup
    markup = "<img src=x id=pwned onerror=document.title=1><b id=bold>hi</b>"
    iid = app.client.start("counter", {"note": markup})
    page.sign_in(make_token("viewer", "read"))
    page.go(f"#/instances/{iid}")
    # Then the markup is shown as written, and no element of it exists
    page.wait().until(lambda d: markup in page.find("#data").text)
    assert page.all("#pwned") == [] and page.all("#bold") == []
    assert page.driver.title == "Orchestrator console"


def test_workflows_and_overview(
    app: App, page: Page, make_token: Tokens, worker: Path, tmp_path: Path
) -> None:
    # Given finished and waiting instances
    done = app.client.start("order", {"order_id": "V-1", "work_seconds": 0})
    declined = app.client.start("order", {"order_id": "V-2", "card": "declined", "work_seconds": 0})
    waiting = app.client.start("approval", {"request_id": "V-3"})
    wait_state(app, done, lambda i: i.status == "completed")
    wait_state(app, declined, lambda i: i.state == "failed")
    wait_state(app, waiting, lambda i: i.state == "waiting")
    page.sign_in(make_token("viewer", "read"))
    # The workflows page draws each loaded workflow with its versions
    page.go("#/workflows")
    order = page.find('section.workflow[data-workflow="order"]')
    page.wait().until(lambda d: "versions 1" in order.text)
    states = {
        n.get_attribute("data-state") for n in order.find_elements(By.CSS_SELECTOR, "svg g.node")
    }
    assert states == {"reserving", "charging", "shipping", "shipped", "failed"}
    assert page.find('section.workflow[data-workflow="approval"] svg g.node.initial')
    # The overview counts the instances by status and measures the throughput
    page.go("#/overview")
    page.wait().until(lambda d: "completed" in page.find("#by-status").text)
    status_rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
        for r in page.all("#by-status tbody tr")
    }
    assert status_rows["completed"] == "1" and status_rows["failed"] == "1"
    assert status_rows["running"] == "1"
    # (from the events added to the inboxes on Redis 7; before, from the appliers' counts)
    page.wait().until(
        lambda d: page.texts("#throughput .tile-value")[0] not in ("measuring…", "n/a")
    )
    (shown,) = page.texts("#throughput .tile-value")
    assert float(shown) >= 0
    assert page.find("#failure-rate .tile-value").text.endswith("%")
    assert page.all("#lag tbody tr") and page.all("#queues tbody tr")
    shoot(page, "overview", tmp_path)
    # And the instances page lists the three, newest first
    page.go("#/instances")
    page.wait().until(lambda d: page.rows() == [waiting, declined, done])
    shoot(page, "instances", tmp_path)
    assert page.console_errors() == []
