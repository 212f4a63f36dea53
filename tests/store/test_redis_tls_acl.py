"""Redis over TLS (rediss://) and with an ACL user and password; the password never shows.

The embedded redis-server has no TLS built in, so TLS is terminated by a small
proxy in front of it: the client side (redis-py's TLS, certificate checks,
the rediss:// URL) is the real one.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from orchestrator.core.errors import RedisUnavailable
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from support.redis_server import RedisServer

PASSWORD = "acl-canary-Z9q"


class TlsProxy:
    """Accepts TLS on a free port and forwards the plain bytes to Redis."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext) -> None:
        self.target = target
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                client = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    folder = tmp_path_factory.mktemp("tls")
    server = RedisServer(folder)
    server.start()
    url = server.url
    plain = redis.Redis.from_url(url)
    plain.execute_command("ACL", "SETUSER", "orch", "on", f">{PASSWORD}", "~*", "&*", "+@all")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    proxy = TlsProxy(("127.0.0.1", port), context)
    try:
        yield proxy.port, str(ca_file)
    finally:
        proxy.close()
        plain.close()
        server.stop()


def test_rediss_with_an_acl_user_runs_a_workflow(
    tls_redis: tuple[int, str], tmp_path: Path
) -> None:
    port, ca_file = tls_redis
    url = f"rediss://orch:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    app = bootstrap(
        Settings(redis_url=url, workflows=("tests.sample_workflows",), data_dir=tmp_path)
    )
    iid = app.client.start("counter")
    app.client.emit("finish", instance_id=iid)
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()
    assert app.client.status(iid).state == "done"


@pytest.mark.parametrize(
    "url",
    [
        "rediss://orch:wrong-{pw}@127.0.0.1:{port}/0?ssl_ca_certs={ca}",  # refused credentials
        "rediss://orch:{pw}@127.0.0.1:{port}/0",  # certificate not trusted
        "redis://orch:{pw}@127.0.0.1:{port}/0",  # plain text to a TLS port
    ],
    ids=["bad-password", "untrusted-certificate", "no-tls"],
)
def test_failures_name_the_server_and_never_the_password(
    tls_redis: tuple[int, str], tmp_path: Path, url: str
) -> None:
    port, ca_file = tls_redis
    given = url.format(pw=PASSWORD, port=port, ca=ca_file)
    settings = Settings(redis_url=given, workflows=("tests.sample_workflows",), data_dir=tmp_path)
    with pytest.raises(RedisUnavailable) as caught:
        bootstrap(settings).redis  # noqa: B018
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert PASSWORD not in message and PASSWORD not in repr(caught.value)
