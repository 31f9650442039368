"""An API on a real database (SQLite and PostgreSQL, via the ``db`` fixture) and the fake driver.

The conductor runs for real (threads, dispatcher, recorder); only the hypervisors are the
in-memory :class:`~orbit.virt.fake.FakeDriver`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host, Migration, MigrationSample, Server, Token, User
from orbit.identity.service import create_user, ensure_admin
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

ADMIN_PASSWORD = "admin-secret-1"
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

    def headers(self, token: str | None = None, *, member: bool = False) -> dict[str, str]:
        t = token if token is not None else (self.member_token if member else self.admin_token)
        return {"X-Auth-Token": t, "OpenStack-API-Version": "compute 2.25"}

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
    for name, uri in (("h1", H1), ("h2", H2), ("h3", H3)):
        r = client.post(
            "/v2.1/orbit-hosts", json={"name": name, "uri": uri}, headers={"X-Auth-Token": admin}
        )
        assert r.status_code == 201, r.text
    conductor.start()
    try:
        yield Api(client, db, driver, conductor, admin, member)
    finally:
        conductor.stop()
        client.close()
