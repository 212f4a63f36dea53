"""The browser tests' fixtures: headless Chromium from the system's packages driven by
Selenium, the HTTP server with the console in a thread, a real worker process, tokens.

Nothing downloads a browser: the driver and the browser are named by path
(Debian's `chromium` and `chromium-driver`), so selenium-manager never runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from orchestrator.entry.bootstrap import App
from orchestrator.store.tokens import Tokens
from support.console_server import console_server
from tests.conftest import ROOT, cli_env

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 20  # seconds any one expectation may take (a worker moving an instance included)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def console(app: App) -> Iterator[str]:
    """The base URL of the server with the API and the console."""
    with console_server(app) as url:
        yield url


@pytest.fixture
def worker(app: App, tmp_path: Path) -> Iterator[Path]:
    """A real `orchestrator worker` (one task and one notification process) on the test
    Redis, in a session of its own; yields its log's path."""
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--notifiers", "1"]
    env = cli_env(app.settings.redis_url, tmp_path)
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def make_token(app: App) -> Callable[[str, str], str]:
    tokens = Tokens(app.redis, app.keys)

    def make(name: str, scope: str) -> str:
        return tokens.create(name, scope)[1]

    return make


@dataclass
class Page:
    """The browser on the console, with the waits the tests share."""

    driver: webdriver.Chrome
    base: str

    def wait(self, timeout: float = WAIT) -> WebDriverWait[webdriver.Chrome]:
        # the live pages redraw what they show: an element read as it is replaced is read again
        return WebDriverWait(
            self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
        )

    def open(self, route: str = "") -> None:
        self.driver.get(f"{self.base}/{route}")

    def go(self, route: str) -> None:
        """Follow a hash route in the running page (no reload)."""
        self.driver.execute_script("location.hash = arguments[0]", route)

    def sign_in(self, token: str) -> None:
        self.open()
        field = self.wait().until(ec.visibility_of_element_located((By.ID, "token")))
        field.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
        self.wait().until(ec.visibility_of_element_located((By.ID, "who")))

    def find(self, css: str) -> WebElement:
        return self.wait().until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_is(self, css: str, text: str, timeout: float = WAIT) -> None:
        self.wait(timeout).until(
            lambda d: any(e.text.strip() == text for e in d.find_elements(By.CSS_SELECTOR, css)),
            f"{css} never showed {text!r}",
        )

    def rows(self) -> list[str]:
        """The instance ids the instances page lists now (read at once: it redraws)."""
        ids: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll('#instances tbody tr[data-id]')]"
            ".map((r) => r.dataset.id)"
        )
        return ids

    def texts(self, css: str) -> list[str]:
        """The text of every element matching `css`, read at once."""
        found: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", css
        )
        return found

    def confirm(self) -> None:
        self.wait().until(ec.visibility_of_element_located((By.ID, "confirm")))
        self.driver.find_element(By.ID, "confirm-yes").click()
        self.wait().until(ec.invisibility_of_element_located((By.ID, "confirm")))

    def console_errors(self) -> list[str]:
        """What the page logged as errors: script errors, a blocked or missing asset; an
        API refusal the page showed (a 401, 403, 404, 409) is not one."""
        logs: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [
            e["message"]
            for e in logs
            if e["level"] == "SEVERE"
            and not ("/api/" in e["message"] and "Failed to load resource" in e["message"])
        ]


@pytest.fixture
def page(browser: webdriver.Chrome, console: str) -> Page:
    return Page(browser, console)
