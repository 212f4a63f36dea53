"""The console's own routes, over real HTTP: the page, its assets, their headers, and
nothing outside the static folder."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from email.message import Message

import pytest

from orchestrator.entry.http.console import CSP, STATIC


def fetch(url: str, method: str = "GET") -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers, refused.read()


def test_the_page_is_served_at_the_root_with_a_strict_policy(console: str) -> None:
    status, headers, body = fetch(f"{console}/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert b'<script type="module" src="/console/js/app.js">' in body
    # no inline script or style the policy would block, and nothing from elsewhere
    assert not re.search(rb"<script(?![^>]*\bsrc=)", body)
    assert b"style=" not in body and b"<style" not in body
    assert b"http://" not in body and b"https://" not in body


@pytest.mark.parametrize(
    ("path", "kind"),
    [("js/app.js", "javascript"), ("js/graph.js", "javascript"), ("app.css", "text/css")],
)
def test_assets_are_served_from_the_package_with_the_policy(
    console: str, path: str, kind: str
) -> None:
    status, headers, body = fetch(f"{console}/console/{path}")
    assert status == 200
    assert kind in headers["Content-Type"]
    assert headers["Content-Security-Policy"] == CSP
    assert body == (STATIC / path).read_bytes()


def test_every_asset_is_local_and_sets_no_html_from_data() -> None:
    # Given every file the console ships
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".html", ".css", ".js"}
    for path in files:
        text = path.read_text()
        # Then none loads anything from another origin
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert "@import" not in text and "url(http" not in text, path
        # And no script writes HTML: text goes in with textContent only
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{path.name} uses {sink}"


@pytest.mark.parametrize(
    "path",
    [
        "/console/../__init__.py",
        "/console/%2e%2e/__init__.py",
        "/console/js/../../__init__.py",
        "/console/nothing.js",
        "/console/",
    ],
)
def test_nothing_outside_the_static_folder_is_served(console: str, path: str) -> None:
    status, _, body = fetch(f"{console}{path}")
    assert status == 404
    assert b"console_routes" not in body


def test_only_reads_are_answered(console: str) -> None:
    status, _, _ = fetch(f"{console}/", method="POST")
    assert status == 405
    status, headers, body = fetch(f"{console}/", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Security-Policy"] == CSP
