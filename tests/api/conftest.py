"""An API on a real database (SQLite and PostgreSQL, via the ``db`` fixture) and the fake driver.

The conductor runs for real (threads, dispatcher, recorder); only the hypervisors are the
in-memory :class:`~orbit.virt.fake.FakeDriver`.

- ``api``: the application in-process, called through FastAPI's TestClient (no sockets).
- ``live_server``: the same services served by a real uvicorn server on 127.0.0.1 and a
  free port, in a background thread, for clients that speak real HTTP (the stock
  OpenStack clients in ``test_stock_clients.py``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host, Migration, MigrationSample, Project, Server, Token, User
from orbit.identity.service import create_user, ensure_admin
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

ADMIN_PASSWORD = "test-root-pass-41"
MEMBER_PASSWORD = "member-secret-1"
H1, H2, H3 = "fake://h1", "fake://h2", "fake://h3"
TICK_S = 0.01
#: the migrations in these tests take ~0.1-1 s on the fake driver
WAIT_S = 20.0


@dataclass
class Api:
    client: TestClient
    db: Database
    driver: FakeDriver
    conductor: Conductor
    admin_token: str
    member_token: str

    def project_id(self, name: str) -> str:
        with self.db.session() as s:
            return str(s.scalar(select(Project.id).where(Project.name == name)))

    def headers(
        self, token: str | None = None, *, member: bool = False, version: str = "2.25"
    ) -> dict[str, str]:
        t = token if token is not None else (self.member_token if member else self.admin_token)
        return {"X-Auth-Token": t, "OpenStack-API-Version": f"compute {version}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=kw.pop("headers", self.headers()), **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.client.post(path, json=body, headers=kw.pop("headers", self.headers()), **kw)

    def server_id(self, name: str) -> str:
        servers = self.get("/v2.1/servers").json()["servers"]
        return str(next(s["id"] for s in servers if s["name"] == name))

    def snapshot(self) -> dict[str, int]:
        """Row counts, to prove a refused request changed nothing."""
        with self.db.session() as s:
            return {
                m.__name__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                for m in (Host, Server, Migration, MigrationSample, User, Token)
            }

    def wait_for(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def migration(self, server_id: str, mid: int) -> dict[str, Any]:
        r = self.get(f"/v2.1/servers/{server_id}/migrations/{mid}")
        assert r.status_code == 200, r.text
        m: dict[str, Any] = r.json()["migration"]
        return m

    def wait_status(self, server_id: str, mid: int, *statuses: str) -> dict[str, Any]:
        self.wait_for(
            lambda: self.migration(server_id, mid)["status"] in statuses, f"status {statuses}"
        )
        return self.migration(server_id, mid)


def _login(client: TestClient, name: str, password: str) -> str:
    user = {"name": name, "password": password}
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
    r = client.post("/identity/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    return str(r.headers["X-Subject-Token"])


#: The hosts both fixtures register. h2's link: the fake's 64 MiB take 8 s at 8 MiB/s,
#: long enough for auto to measure the guest before it migrates there.
HOSTS: list[dict[str, object]] = [
    {"name": "h1", "uri": H1},
    {"name": "h2", "uri": H2, "link_mib_s": 8},
    {"name": "h3", "uri": H3},
]


def make_driver() -> FakeDriver:
    driver = FakeDriver(tick_s=TICK_S)
    for uri in (H1, H2, H3):
        driver.add_host(uri)
    quiet = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=8 * MIB, dirty_bytes=0)
    hot = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=2 * MIB, dirty_bytes=4 * MIB)
    driver.add_domain(H1, "vm1", workload=quiet)
    driver.add_domain(H1, "hot", workload=hot)
    return driver


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    config = ServerConfig(sync_interval_s=0.5, driver="fake")
    driver = make_driver()
    with db.session() as session:
        ensure_admin(session, password=ADMIN_PASSWORD)
        create_user(
            session, name="alice", password=MEMBER_PASSWORD, project_name="demo", role="member"
        )
    conductor = Conductor(db, driver, config)
    services = Services(config=config, db=db, conductor=conductor)
    client = TestClient(create_app(services))
    admin = _login(client, "admin", ADMIN_PASSWORD)
    member = _login(client, "alice", MEMBER_PASSWORD)
    for body in HOSTS:
        r = client.post("/v2.1/orbit-hosts", json=body, headers={"X-Auth-Token": admin})
        assert r.status_code == 201, r.text
    conductor.start()
    try:
        yield Api(client, db, driver, conductor, admin, member)
    finally:
        conductor.stop()
        client.close()


# -- a real HTTP server -----------------------------------------------------------------------

#: the only address the live server listens on
LOOPBACK = "127.0.0.1"
SERVER_START_TIMEOUT_S = 10.0
SERVER_STOP_TIMEOUT_S = 10.0
#: environment variables that would send the clients elsewhere (a proxy, another cloud)
_CLIENT_ENV_PREFIXES = ("OS_",)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass
class LiveServer:
    """orbit-server answering on ``url`` (http://127.0.0.1:PORT), with its insides for checks."""

    url: str
    db: Database
    driver: FakeDriver
    conductor: Conductor

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity"


def _loopback_socket() -> socket.socket:
    """A socket bound to 127.0.0.1 and a free port, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


@pytest.fixture
def live_server(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The ``api`` fixture's services (same driver, users and hosts), served over real HTTP.

    uvicorn runs in a thread on 127.0.0.1 only; the service catalog's URLs point at it
    (``bind``). ``OS_*`` and proxy variables are removed so that the clients under test read
    only what the test gives them and talk to this server directly.
    """
    for name in list(os.environ):
        if name.startswith(_CLIENT_ENV_PREFIXES) or name in _PROXY_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("no_proxy", LOOPBACK)
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    sock = _loopback_socket()
    port = int(sock.getsockname()[1])
    config = ServerConfig(bind=f"{LOOPBACK}:{port}", sync_interval_s=0.5, driver="fake")
    driver = make_driver()
    with db.session() as session:
        ensure_admin(session, password=ADMIN_PASSWORD)
        create_user(
            session, name="alice", password=MEMBER_PASSWORD, project_name="demo", role="member"
        )
    conductor = Conductor(db, driver, config)
    services = Services(config=config, db=db, conductor=conductor)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services), host=LOOPBACK, port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="orbit-server", daemon=True
    )
    thread.start()
    conductor_started = False
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            assert thread.is_alive(), "orbit-server (uvicorn) stopped while starting"
            assert time.monotonic() < deadline, "orbit-server (uvicorn) did not start"
            time.sleep(0.01)
        url = config.base_url
        assert url == f"http://{LOOPBACK}:{port}"
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as http:
            user = {"name": "admin", "password": ADMIN_PASSWORD}
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
            r = http.post("/identity/v3/auth/tokens", json=body)
            assert r.status_code == 201, r.text
            admin = {"X-Auth-Token": r.headers["X-Subject-Token"]}
            for host in HOSTS:
                r = http.post("/v2.1/orbit-hosts", json=host, headers=admin)
                assert r.status_code == 201, r.text
        conductor.start()
        conductor_started = True
        yield LiveServer(url, db, driver, conductor)
    finally:
        server.should_exit = True  # first the HTTP server, so no request reaches a stopped one
        thread.join(SERVER_STOP_TIMEOUT_S)
        sock.close()
        if conductor_started:
            conductor.stop()
        assert not thread.is_alive(), "orbit-server (uvicorn) did not stop"
