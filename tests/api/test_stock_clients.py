"""Stock OpenStack clients from PyPI against a really running orbit-server.

openstacksdk and python-novaclient (with keystoneauth1) talk HTTP to uvicorn on 127.0.0.1
(the ``live_server`` fixture), on SQLite and PostgreSQL. Nothing here knows ORBIT's
insides except to prepare a slow guest and to look at the fake hypervisors: every request
goes through the clients' own code (discovery, catalog, microversions, error mapping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import openstack.connection
import openstack.exceptions
import pytest
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from novaclient import api_versions  # type: ignore[import-untyped]
from novaclient import client as nova_client
from novaclient import exceptions as nova_exceptions
from openstack.config.loader import OpenStackConfig

from orbit.virt.fake import MIB, FakeWorkload
from tests.api.conftest import ADMIN_PASSWORD, H1, MEMBER_PASSWORD, WAIT_S, LiveServer

MICROVERSION = "2.25"
COMPUTE = {"service_type": "compute", "interface": "public"}
FINAL = frozenset({"completed", "failed", "cancelled", "error"})
#: a guest whose post-copy phase lasts seconds on the fake driver (256 ticks of 1 MiB), and
#: whose pre-copy never converges (it dirties more than it sends): it stays in pre-copy until
#: forced, then in post-copy long enough to be caught there
SLOW = FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=2 * MIB)


# -- clients ------------------------------------------------------------------------------------


#: the stock clients speak HTTP to the same API; the database behind it is tested on both
#: backends in test_compute.py and the others
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _clouds_yaml(path: Path, live: LiveServer) -> Path:
    """An ordinary clouds.yaml, as an operator would write it for this cloud."""
    path.write_text(
        f"""\
clouds:
  orbit:
    auth_type: password
    auth:
      auth_url: {live.auth_url}
      username: admin
      password: {ADMIN_PASSWORD}
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
""",
        encoding="utf-8",
    )
    return path


def _sdk_from_clouds_yaml(path: Path) -> openstack.connection.Connection:
    config = OpenStackConfig(
        config_files=[str(path)], vendor_files=[], secure_files=[], load_envvars=False
    )
    return openstack.connection.Connection(config=config.get_one(cloud="orbit"))


def _sdk_direct(live: LiveServer, user: str, password: str, project: str) -> Any:
    return openstack.connect(
        auth_url=live.auth_url,
        username=user,
        password=password,
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        load_yaml_config=False,
        load_envvars=False,
    )


def _keystone_session(live: LiveServer, user: str, password: str, project: str) -> Any:
    auth = v3.Password(
        auth_url=live.auth_url,
        username=user,
        password=password,
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return ks_session.Session(auth=auth)


def _nova(live: LiveServer, user: str, password: str, project: str) -> Any:
    session = _keystone_session(live, user, password, project)
    return nova_client.Client(MICROVERSION, session=session)


@pytest.fixture
def sdk(live_server: LiveServer, tmp_path: Path) -> Iterator[Any]:
    """openstacksdk as the admin, configured by a clouds.yaml file."""
    conn = _sdk_from_clouds_yaml(_clouds_yaml(tmp_path / "clouds.yaml", live_server))
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def nova(live_server: LiveServer) -> Iterator[Any]:
    """python-novaclient 2.25 as the admin, on a keystoneauth1 session."""
    client = _nova(live_server, "admin", ADMIN_PASSWORD, "admin")
    try:
        yield client
    finally:
        client.client.session.session.close()


# -- helpers ------------------------------------------------------------------------------------


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _server(sdk: Any, name: str) -> Any:
    return sdk.compute.find_server(name, ignore_missing=False)


def _sdk_status(sdk: Any, server_id: str, mid: int) -> str:
    status: str = sdk.compute.get_server_migration(mid, server_id, ignore_missing=False).status
    return status


def _wait_status(sdk: Any, server_id: str, mid: int, *statuses: str) -> str:
    """Poll the migration record through openstacksdk until it is in one of ``statuses``;
    fail at once if it ends in another.
    """
    seen: list[str] = []

    def reached() -> bool:
        seen.append(_sdk_status(sdk, server_id, mid))
        if seen[-1] in FINAL and seen[-1] not in statuses:
            error = _raw_record(sdk, server_id, mid)["orbit"]["error"]
            pytest.fail(f"migration {mid} ended {seen[-1]} ({error}), expected {statuses}")
        return seen[-1] in statuses

    _wait(reached, f"migration {mid} in {statuses} (last seen {seen[-1:]})")
    return seen[-1]


def _wait_server(sdk: Any, server_id: str, host: str) -> None:
    """Wait until the server is ACTIVE on ``host`` (the record is written before the server)."""

    def there() -> bool:
        s = sdk.compute.get_server(server_id)
        return bool(s.status == "ACTIVE" and s.compute_host == host)

    _wait(there, f"server {server_id} ACTIVE on {host}")


def _raw_live_migrate(sdk: Any, server_id: str, host: str) -> dict[str, Any]:
    """os-migrateLive with ORBIT's post_copy fields, sent raw through the SDK's keystoneauth
    session (catalog lookup and microversion header by keystoneauth); returns the new record.
    """
    body = {
        "os-migrateLive": {
            "host": host,
            "block_migration": False,
            "post_copy": True,
            "post_copy_after_iterations": 100,  # stays in pre-copy until the operator acts
        }
    }
    before = {m.id for m in sdk.compute.server_migrations(server_id)}
    r = sdk.session.post(
        f"/servers/{server_id}/action",
        json=body,
        microversion=MICROVERSION,
        endpoint_filter=COMPUTE,
    )
    assert r.status_code == 202, r.text
    new = [m.id for m in sdk.compute.server_migrations(server_id) if m.id not in before]
    assert len(new) == 1, new
    return _raw_record(sdk, server_id, int(new[0]))


def _raw_record(sdk: Any, server_id: str, mid: int) -> dict[str, Any]:
    r = sdk.session.get(
        f"/servers/{server_id}/migrations/{mid}",
        microversion=MICROVERSION,
        endpoint_filter=COMPUTE,
    )
    assert r.status_code == 200, r.text
    assert r.headers["OpenStack-API-Version"] == f"compute {MICROVERSION}"
    record: dict[str, Any] = r.json()["migration"]
    return record


def _counters_present(m: Any, total: int) -> None:
    for name in ("memory_total_bytes", "memory_processed_bytes", "memory_remaining_bytes"):
        assert isinstance(getattr(m, name), int), (name, getattr(m, name))
    assert m.memory_total_bytes == total
    assert m.memory_processed_bytes >= total  # a completed migration sent all of it
    assert m.memory_remaining_bytes == 0


# -- tests --------------------------------------------------------------------------------------


def test_authenticate_and_list_with_both_clients(
    live_server: LiveServer, sdk: Any, nova: Any
) -> None:
    # openstacksdk from clouds.yaml: token, catalog pointing at this server, servers, hypervisors
    token = sdk.auth_token
    assert isinstance(token, str) and len(token) >= 20
    assert sdk.compute.get_endpoint().rstrip("/") == f"{live_server.url}/v2.1"
    assert sdk.compute.get_endpoint_data().max_microversion == (2, 96)
    servers = {s.name: s for s in sdk.compute.servers()}
    assert set(servers) == {"vm1", "hot"}
    assert {(s.status, s.compute_host) for s in servers.values()} == {("ACTIVE", "h1")}
    hvs = sorted((h.name, h.state, h.status) for h in sdk.compute.hypervisors(details=True))
    assert hvs == [("h1", "up", "enabled"), ("h2", "up", "enabled"), ("h3", "up", "enabled")]

    # openstacksdk with the same settings passed as arguments
    direct = _sdk_direct(live_server, "admin", ADMIN_PASSWORD, "admin")
    try:
        assert direct.auth_token and direct.auth_token != token  # a log-in of its own
        assert sorted(s.name for s in direct.compute.servers(details=False)) == ["hot", "vm1"]
        assert [h.name for h in direct.compute.hypervisors()] == ["h1", "h2", "h3"]
    finally:
        direct.close()

    # novaclient on a keystoneauth1 session; discovery finds ORBIT's highest microversion
    nova_token = nova.client.session.get_token()
    assert isinstance(nova_token, str) and nova_token not in (token, "")
    found = api_versions.discover_version(nova, api_versions.APIVersion("2.latest"))
    assert found == api_versions.APIVersion("2.96")
    listed = {s.name: s for s in nova.servers.list()}
    assert set(listed) == {"vm1", "hot"}
    assert listed["vm1"].id == servers["vm1"].id
    assert getattr(listed["hot"], "OS-EXT-SRV-ATTR:host") == "h1"
    nova_hvs = sorted((h.hypervisor_hostname, h.state) for h in nova.hypervisors.list())
    assert nova_hvs == [("h1", "up"), ("h2", "up"), ("h3", "up")]

    # a wrong password is keystoneauth's Unauthorized (401), not a token
    bad = _keystone_session(live_server, "admin", "wrong-password", "admin")
    with pytest.raises(ks_exceptions.Unauthorized) as err:
        bad.get_token()
    assert err.value.http_status == 401


def test_live_migration_with_both_clients(sdk: Any, nova: Any) -> None:
    vm1 = _server(sdk, "vm1")

    # openstacksdk: at 2.25 a host implies force (Nova's semantics); the SDK wants it said
    sdk.compute.live_migrate_server(vm1, host="h2", force=True, block_migration=False)
    first = next(iter(sdk.compute.server_migrations(vm1)))
    _wait_status(sdk, vm1.id, first.id, "completed")
    _wait_server(sdk, vm1.id, "h2")

    # novaclient, 2.25 signature: (server, host, block_migration)
    nova.servers.live_migrate(vm1.id, "h3", False)
    second = nova.server_migrations.list(vm1.id)[0]
    assert second.id != first.id and second.dest_compute == "h3"

    def novaclient_says_done() -> bool:
        status: str = nova.server_migrations.get(vm1.id, second.id).status
        return status in ("completed", "failed", "error", "cancelled")

    _wait(novaclient_says_done, "the novaclient migration to finish")
    assert nova.server_migrations.get(vm1.id, second.id).status == "completed"
    _wait_server(sdk, vm1.id, "h3")
    assert getattr(nova.servers.get(vm1.id), "OS-EXT-SRV-ATTR:host") == "h3"

    # both clients list both migrations, newest first, with the memory counters
    total = 64 * MIB
    by_sdk = list(sdk.compute.server_migrations(vm1))
    assert [m.id for m in by_sdk] == [second.id, first.id]
    assert [(m.source_compute, m.dest_compute, m.status) for m in by_sdk] == [
        ("h2", "h3", "completed"),
        ("h1", "h2", "completed"),
    ]
    for m in by_sdk:
        _counters_present(m, total)
        assert m.server_uuid == vm1.id
    by_nova = nova.server_migrations.list(vm1.id)
    assert [m.id for m in by_nova] == [second.id, first.id]
    for m in by_nova:
        _counters_present(m, total)
        assert m.server_uuid == vm1.id
        settings = m.orbit["settings"]  # ORBIT's record: novaclient keeps unknown fields
        assert settings["post_copy"] is False and settings["block_migration"] is False
    assert [m.memory_processed_bytes for m in by_nova] == [m.memory_processed_bytes for m in by_sdk]


def test_post_copy_force_complete_and_abort(live_server: LiveServer, sdk: Any, nova: Any) -> None:
    hot = _server(sdk, "hot")

    # a raw post_copy request through openstacksdk's session; the record says post-copy
    record = _raw_live_migrate(sdk, hot.id, "h2")
    settings = record["orbit"]["settings"]
    assert settings["post_copy"] is True
    assert settings["migration_policy"] == "postcopy"
    assert settings["post_copy_after_iterations"] == 100
    assert (record["source_compute"], record["dest_compute"]) == ("h1", "h2")

    # abort in pre-copy, with openstacksdk: cancelled, the VM still on the source
    _wait_status(sdk, hot.id, record["id"], "running-precopy")
    sdk.compute.abort_server_migration(record["id"], hot.id, ignore_missing=False)
    _wait_status(sdk, hot.id, record["id"], "cancelled")
    _wait_server(sdk, hot.id, "h1")
    assert "hot" in live_server.driver.hosts[H1].domains

    # and with novaclient
    record = _raw_live_migrate(sdk, hot.id, "h2")
    _wait_status(sdk, hot.id, record["id"], "running-precopy")
    nova.server_migrations.live_migration_abort(hot.id, record["id"])
    _wait_status(sdk, hot.id, record["id"], "cancelled")
    _wait_server(sdk, hot.id, "h1")

    # force-complete with novaclient: the operator switches it to post-copy; it completes
    record = _raw_live_migrate(sdk, hot.id, "h2")
    _wait_status(sdk, hot.id, record["id"], "running-precopy")
    nova.server_migrations.live_migrate_force_complete(hot.id, record["id"])
    _wait_status(sdk, hot.id, record["id"], "completed")
    done = nova.server_migrations.get(hot.id, record["id"])
    switches = [d for d in done.orbit["decisions"] if d["action"] == "switch-to-postcopy"]
    assert switches and switches[0]["source"] == "operator", done.orbit["decisions"]
    assert done.orbit["switch_at_s"] is not None
    _wait_server(sdk, hot.id, "h2")

    # a slow guest: force-complete with openstacksdk, then abort during post-copy is 409
    live_server.driver.add_domain(H1, "big", workload=SLOW)
    live_server.conductor.sync()
    big = _server(sdk, "big")
    record = _raw_live_migrate(sdk, big.id, "h3")
    _wait_status(sdk, big.id, record["id"], "running-precopy")
    sdk.compute.force_complete_server_migration(record["id"], big.id)
    _wait_status(sdk, big.id, record["id"], "running-postcopy")
    with pytest.raises(nova_exceptions.Conflict) as nova_err:
        nova.server_migrations.live_migration_abort(big.id, record["id"])
    assert nova_err.value.code == 409
    assert "post-copy" in nova_err.value.message
    with pytest.raises(openstack.exceptions.ConflictException) as sdk_err:
        sdk.compute.abort_server_migration(record["id"], big.id, ignore_missing=False)
    assert sdk_err.value.status_code == 409
    assert "post-copy" in str(sdk_err.value)
    # refused means untouched: it finishes on the destination
    _wait_status(sdk, big.id, record["id"], "completed")
    _wait_server(sdk, big.id, "h3")


def test_member_sees_its_project_and_cannot_live_migrate(
    live_server: LiveServer, sdk: Any, nova: Any
) -> None:
    vm1_id = _server(sdk, "vm1").id
    r = sdk.session.post(  # the admin gives vm1 to alice's project, demo
        f"/servers/{vm1_id}/action",
        json={"orbit-assignProject": {"project": "demo"}},
        microversion=MICROVERSION,
        endpoint_filter=COMPUTE,
    )
    assert r.status_code == 202, r.text
    member = _nova(live_server, "alice", MEMBER_PASSWORD, "demo")
    member_sdk = _sdk_direct(live_server, "alice", MEMBER_PASSWORD, "demo")
    try:
        listed = member.servers.list()  # reading its project's servers is allowed
        assert [s.name for s in listed] == ["vm1"]  # not hot: no project
        assert [s.name for s in member_sdk.compute.servers()] == ["vm1"]
        vm1 = listed[0]
        with pytest.raises(nova_exceptions.Forbidden) as err:
            member.servers.live_migrate(vm1.id, "h2", False)
        assert err.value.code == 403
        assert "admin role" in err.value.message
        with pytest.raises(openstack.exceptions.ForbiddenException) as sdk_err:
            member_sdk.compute.live_migrate_server(
                vm1.id, host="h2", force=True, block_migration=False
            )
        assert sdk_err.value.status_code == 403
    finally:
        member_sdk.close()
        member.client.session.session.close()
    assert nova.server_migrations.list(vm1.id) == []
    assert getattr(nova.servers.get(vm1.id), "OS-EXT-SRV-ATTR:host") == "h1"


def test_openstacksdk_manages_users_projects_and_roles(live_server: LiveServer, sdk: Any) -> None:
    """openstacksdk's identity calls, unchanged, against ORBIT's Keystone-shaped API: the new
    member logs in with the stock clients and sees its project's server only."""
    identity = sdk.identity
    project = identity.create_project(name="green", domain_id="default")
    user = identity.create_user(
        name="erin", password="sandpiper-at-noon-5", default_project_id=project.id
    )
    role = identity.find_role("member", ignore_missing=False)
    identity.assign_project_role_to_user(project, user, role)
    assert identity.validate_user_has_project_role(project, user, role)
    assert identity.find_user("erin", ignore_missing=False).id == user.id
    assert {u.name for u in identity.users()} == {"admin", "alice", "erin"}
    assert [p.name for p in identity.user_projects(user)] == ["green"]
    with pytest.raises(openstack.exceptions.BadRequestException) as weak:
        identity.create_user(name="frank", password="short")
    assert "at least 12 characters" in str(weak.value)
    r = sdk.session.post(
        f"/servers/{_server(sdk, 'vm1').id}/action",
        json={"orbit-assignProject": {"project": "green"}},
        microversion=MICROVERSION,
        endpoint_filter=COMPUTE,
    )
    assert r.status_code == 202, r.text
    erin = _sdk_direct(live_server, "erin", "sandpiper-at-noon-5", "green")
    try:
        assert [s.name for s in erin.compute.servers()] == ["vm1"]
    finally:
        erin.close()
    identity.update_user(user, enabled=False)
    with pytest.raises(ks_exceptions.Unauthorized):
        _keystone_session(live_server, "erin", "sandpiper-at-noon-5", "green").get_token()
    identity.unassign_project_role_from_user(project, user, role)
    assert not identity.validate_user_has_project_role(project, user, role)
    identity.delete_user(user)
    r = sdk.session.post(
        f"/servers/{_server(sdk, 'vm1').id}/action",
        json={"orbit-assignProject": {"project": None}},
        microversion=MICROVERSION,
        endpoint_filter=COMPUTE,
    )
    assert r.status_code == 202, r.text
    identity.delete_project(project)
    assert identity.find_project("green") is None
