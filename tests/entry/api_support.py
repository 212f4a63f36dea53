"""What the API's tests share: the server on a free port, tokens of each scope, a caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.http.server import make_server
from orchestrator.runtime.applier import Applier
from orchestrator.store.tokens import Tokens


@dataclass
class Api:
    url: str
    app: App
    applier: Applier
    tokens: dict[str, str] = field(default_factory=dict)  # scope -> token

    def call(
        self, method: str, path: str, scope: str | None = "admin", **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, scope: str | None = "read", **kwargs: Any) -> requests.Response:
        return self.call("GET", path, scope, **kwargs)

    def post(self, path: str, scope: str | None = "operate", **kwargs: Any) -> requests.Response:
        return self.call("POST", path, scope, **kwargs)

    def drain(self) -> None:
        self.applier.drain()


@pytest.fixture
def api(app: App) -> Iterator[Api]:
    server = make_server(app, "127.0.0.1", 0, ServerConfig())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    served = Api(f"http://127.0.0.1:{server.server_port}", app, app.applier())
    store = Tokens(app.redis, app.keys)
    for scope in ("read", "operate", "admin"):
        served.tokens[scope] = store.create(f"test {scope}", scope)[1]
    yield served
    server.shutdown()
    server.server_close()
    thread.join(5)


def refusal(answer: requests.Response, status: int, field: str | None = None) -> str:
    """The message of a refusal, after checking its status, shape and field."""
    assert answer.status_code == status, answer.text
    doc = answer.json()
    assert set(doc) == {"error", "field"}, doc
    assert doc["field"] == field, doc
    assert isinstance(doc["error"], str) and doc["error"]
    return str(doc["error"])
