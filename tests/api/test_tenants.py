"""Projects that cannot see each other (issue 13): servers belong to projects, a member sees
and acts only on its project's servers, hypervisors and hosts are the admin's.

Every GET route of the compute API is enumerated from the application, so a route added
later is checked too: as a member of project ``other``, each one answers 403 or 404, or an
answer that names none of project ``demo``'s objects and no host.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from fastapi.routing import APIRoute

from orbit.api.routes import compute, drains
from orbit.api.views import host_id
from orbit.db.models import Server
from orbit.identity.service import create_user
from orbit.virt.driver import Owner
from orbit.virt.fake import MIB, FakeWorkload
from tests.api.conftest import H1, Api, _login

BOB_PASSWORD = "second-member-pw1"


def _as(api: Api, token: str) -> dict[str, str]:
    return api.headers(token)


def _assign(api: Api, server_id: str, project: str | None, **kw: Any) -> Any:
    return api.post(
        f"/v2.1/servers/{server_id}/action", {"orbit-assignProject": {"project": project}}, **kw
    )


@pytest.fixture
def tenants(api: Api) -> dict[str, Any]:
    """vm1 in demo (alice's), hot in other (bob's); hot migrated once to h2 and back."""
    with api.db.session() as s:
        create_user(s, name="bob", password=BOB_PASSWORD, project_name="other", role="member")
        s.commit()
    bob = _login(api.client, "bob", BOB_PASSWORD)
    vm1, hot = api.server_id("vm1"), api.server_id("hot")
    assert _assign(api, vm1, "demo").status_code == 202
    assert _assign(api, hot, api.project_id("other")).status_code == 202  # by id
    r = api.post(f"/v2.1/servers/{vm1}/action", {"os-migrateLive": {"host": "h3",
                 "block_migration": False}})  # fmt: skip
    assert r.status_code == 202, r.text
    mid = api.get(f"/v2.1/servers/{vm1}/migrations").json()["migrations"][0]["id"]
    api.wait_status(vm1, mid, "completed")
    return {"bob": bob, "alice": api.member_token, "vm1": vm1, "hot": hot, "mid": mid}


def test_a_server_belongs_to_the_project_its_domain_names(
    api: Api, tenants: dict[str, Any]
) -> None:
    # the project is written in the domain's metadata, and went with vm1 to h3
    assert api.driver.hosts["fake://h3"].domains["vm1"].owner == Owner(
        api.project_id("demo"), "demo"
    )
    # a domain that names its project as Nova does (by name, an id ORBIT does not know)
    dom = api.driver.hosts[H1].domains["hot"]
    api.driver.hosts[H1].domains["hot"] = replace(dom, owner=Owner("keystone-uuid", "demo"))
    api.conductor.sync()
    with api.db.session() as s:
        assert s.get(Server, tenants["hot"]).project_id == api.project_id("demo")  # type: ignore[union-attr]
    # no project in the metadata: nobody's but the admin's
    api.driver.hosts[H1].domains["hot"] = replace(dom, owner=None)
    api.conductor.sync()
    alice = _as(api, tenants["alice"])
    assert [s["name"] for s in api.get("/v2.1/servers", headers=alice).json()["servers"]] == ["vm1"]


def test_a_member_sees_only_its_projects_servers_and_migrations(
    api: Api, tenants: dict[str, Any]
) -> None:
    alice, bob = _as(api, tenants["alice"]), _as(api, tenants["bob"])
    vm1, hot, mid = tenants["vm1"], tenants["hot"], tenants["mid"]
    for path in ("/v2.1/servers", "/v2.1/servers/detail"):
        assert [s["id"] for s in api.get(path, headers=alice).json()["servers"]] == [vm1]
        assert [s["id"] for s in api.get(path, headers=bob).json()["servers"]] == [hot]
        assert len(api.get(path).json()["servers"]) == 2  # the admin sees every project
    other = api.project_id("other")
    admin_view = api.get(f"/v2.1/servers?project_id={other}").json()["servers"]
    assert [s["id"] for s in admin_view] == [hot]
    # filters do not widen a member's view
    listed = api.get(f"/v2.1/servers/detail?all_tenants=1&project_id={other}", headers=alice)
    assert [s["id"] for s in listed.json()["servers"]] == [vm1]
    # its own server: no host named; hostId is Nova's hash of project and host
    mine = api.get(f"/v2.1/servers/{vm1}", headers=alice).json()["server"]
    assert mine["tenant_id"] == api.project_id("demo")
    assert not [k for k in mine if k.startswith("OS-EXT-SRV-ATTR:")] and "host_status" not in mine
    assert mine["hostId"] == host_id(api.project_id("demo"), "h3") and "h3" not in str(mine)
    # its own server's migrations, without the hosts
    ms = api.get(f"/v2.1/servers/{vm1}/migrations", headers=alice).json()["migrations"]
    assert [m["id"] for m in ms] == [mid] and ms[0]["dest_compute"] is None
    # another project's server, its migrations and samples: not found
    for path in (
        f"/v2.1/servers/{vm1}",
        f"/v2.1/servers/{vm1}/migrations",
        f"/v2.1/servers/{vm1}/migrations/{mid}",
        f"/v2.1/servers/{vm1}/migrations/{mid}/samples",
    ):
        r = api.get(path, headers=bob)
        assert r.status_code == 404 and vm1 in r.json()["itemNotFound"]["message"], (path, r.text)
    assert api.get("/v2.1/os-migrations", headers=bob).status_code == 403


def test_every_action_on_another_projects_server_is_refused_and_changes_nothing(
    api: Api, tenants: dict[str, Any]
) -> None:
    bob = _as(api, tenants["bob"])
    vm1, mid = tenants["vm1"], tenants["mid"]
    before = api.snapshot()
    actions = [
        (f"/v2.1/servers/{vm1}/action", {"os-migrateLive": {"host": "h1",
                                                           "block_migration": False}}),
        (f"/v2.1/servers/{vm1}/action", {"orbit-assignProject": {"project": "other"}}),
        (f"/v2.1/servers/{tenants['hot']}/action", {"orbit-assignProject": {"project": None}}),
        (f"/v2.1/servers/{vm1}/migrations/{mid}/action", {"force_complete": None}),
        (f"/v2.1/servers/{vm1}/migrations/{mid}/action", {"resume": None}),
        ("/v2.1/orbit-hosts/h1/drain", {}),
        ("/v2.1/orbit-hosts", {"name": "h9", "uri": "fake://h9"}),
    ]  # fmt: skip
    for path, body in actions:
        r = api.post(path, body, headers=bob)
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
    r = api.client.delete(f"/v2.1/servers/{vm1}/migrations/{mid}", headers=bob)
    assert r.status_code in (403, 404), r.text
    service = {"host": "h1", "binary": "nova-compute"}
    r = api.client.put(
        "/v2.1/os-services/disable",
        json=service,
        headers=api.headers(tenants["bob"], version="2.1"),
    )
    assert r.status_code == 403, r.text
    assert api.snapshot() == before
    with api.db.session() as s:
        assert s.get(Server, vm1).project_id == api.project_id("demo")  # type: ignore[union-attr]


def _get_routes() -> list[str]:
    """Every GET path of the compute API, without and with the project in the URL."""
    paths = {
        f"{prefix}{r.path}"
        for router in (compute.router, drains.router)
        for r in router.routes
        if isinstance(r, APIRoute) and "GET" in (r.methods or set())
        for prefix in ("/v2.1", "/v2.1/{project_id}")
    }
    return sorted(paths)


def test_every_get_route_shows_a_member_nothing_of_another_project_and_no_host(
    api: Api, tenants: dict[str, Any]
) -> None:
    bob = tenants["bob"]
    params = {
        "project_id": api.project_id("other"),
        "server_id": tenants["vm1"],
        "migration_id": str(tenants["mid"]),
        "hypervisor_id_or_name": "h1",
        "pattern": "h",
        "name": "h1",
        "drain_id": "1",
    }
    secrets = [tenants["vm1"], "fake://", '"h1"', '"h3"', "demo"]
    checked = 0
    for template in _get_routes():
        path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)
        for version in ("2.1", "2.96"):
            r = api.get(path, headers=api.headers(bob, version=version))
            assert r.status_code < 500, (path, r.text)
            if r.status_code in (403, 404):
                continue
            assert r.status_code == 200, (path, r.status_code, r.text)
            leaked = [s for s in secrets if s in r.text]
            assert not leaked, (path, version, leaked, r.text[:300])
        checked += 1
    assert checked >= 20, checked
    for path in ("/v2.1/os-hypervisors", "/v2.1/os-hypervisors/detail", "/v2.1/orbit-hosts",
                 "/v2.1/os-services", "/v2.1/os-migrations", "/v2.1/orbit-drains"):  # fmt: skip
        assert api.get(path, headers=api.headers(bob)).status_code == 403, path


def test_assigning_a_project(api: Api, tenants: dict[str, Any]) -> None:
    vm1 = tenants["vm1"]
    r = _assign(api, vm1, "no-such-project")
    assert r.status_code == 400 and "does not exist" in r.text
    bodies: list[Any] = [{"project": 5}, {}, "demo", {"project": "demo", "x": 1}]
    for bad in bodies:
        r = api.post(f"/v2.1/servers/{vm1}/action", {"orbit-assignProject": bad})
        assert r.status_code == 400, bad
    # refused while the server migrates (libvirt would hold the change until it ends)
    api.driver.hosts["fake://h3"].workloads["vm1"] = FakeWorkload(
        memory_bytes=64 * MIB, bandwidth_bytes=MIB, dirty_bytes=0
    )
    r = api.post(f"/v2.1/servers/{vm1}/action", {"os-migrateLive": {"host": "h1",
                 "block_migration": False}})  # fmt: skip
    assert r.status_code == 202
    mid = max(m["id"] for m in api.get(f"/v2.1/servers/{vm1}/migrations").json()["migrations"])
    r = _assign(api, vm1, None)
    assert r.status_code == 409 and "migrating" in r.text, r.text
    api.wait_status(vm1, mid, "completed")
    # none: the member no longer sees it, the domain names no project
    assert _assign(api, vm1, None).status_code == 202
    assert api.driver.hosts[H1].domains["vm1"].owner is None
    alice = _as(api, tenants["alice"])
    assert api.get("/v2.1/servers", headers=alice).json()["servers"] == []
