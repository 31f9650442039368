"""Nova's microversions 2.1 to 2.96, each behaviour at the version Nova changed it.

The field sets below are those of Nova's API reference at each version; ORBIT may add only
its own fields (``orbit:...`` keys, or the ``orbit`` record on migrations).
"""

from __future__ import annotations

from typing import Any

import pytest

from orbit.api import microversion as mv
from orbit.api.microversion import Version
from tests.api.conftest import Api

#: microversions change shapes and checks, not queries: one database is enough here
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# -- Nova's documented field sets ------------------------------------------------------------

SERVER_2_1 = {
    "id", "name", "links", "status", "tenant_id", "user_id", "created", "updated", "hostId",
    "addresses", "accessIPv4", "accessIPv6", "image", "flavor", "metadata", "key_name",
    "config_drive", "progress", "security_groups", "OS-DCF:diskConfig",
    "OS-EXT-AZ:availability_zone", "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname", "OS-EXT-SRV-ATTR:instance_name",
    "OS-EXT-STS:power_state", "OS-EXT-STS:task_state", "OS-EXT-STS:vm_state",
    "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at",
    "os-extended-volumes:volumes_attached",
}  # fmt: skip
SERVER_2_3 = SERVER_2_1 | {
    "OS-EXT-SRV-ATTR:hostname", "OS-EXT-SRV-ATTR:reservation_id",
    "OS-EXT-SRV-ATTR:launch_index", "OS-EXT-SRV-ATTR:kernel_id", "OS-EXT-SRV-ATTR:ramdisk_id",
    "OS-EXT-SRV-ATTR:root_device_name", "OS-EXT-SRV-ATTR:user_data",
}  # fmt: skip
SERVER_2_47 = SERVER_2_3 | {"locked", "host_status", "description", "tags"}
SERVER_2_96 = SERVER_2_47 | {
    "trusted_image_certificates", "server_groups", "locked_reason", "pinned_availability_zone",
}  # fmt: skip
HYPERVISOR_DETAIL_2_1 = {
    "id", "hypervisor_hostname", "state", "status", "hypervisor_type", "hypervisor_version",
    "host_ip", "service", "memory_mb", "free_ram_mb", "memory_mb_used", "vcpus", "vcpus_used",
    "running_vms", "local_gb", "local_gb_used", "free_disk_gb", "disk_available_least",
    "current_workload", "cpu_info",
}  # fmt: skip
HYPERVISOR_DETAIL_2_88 = {
    "id", "hypervisor_hostname", "state", "status", "hypervisor_type", "hypervisor_version",
    "host_ip", "service", "uptime",
}  # fmt: skip
HYPERVISOR_SUMMARY = {"id", "hypervisor_hostname", "state", "status"}
SERVICE_2_1 = {"id", "binary", "host", "zone", "status", "state", "updated_at",
               "disabled_reason"}  # fmt: skip
SERVER_MIGRATION_2_23 = {
    "id", "server_uuid", "status", "source_compute", "source_node", "dest_compute",
    "dest_node", "dest_host", "memory_total_bytes", "memory_processed_bytes",
    "memory_remaining_bytes", "disk_total_bytes", "disk_processed_bytes",
    "disk_remaining_bytes", "created_at", "updated_at",
}  # fmt: skip
OS_MIGRATION_2_1 = {
    "id", "instance_uuid", "status", "source_compute", "source_node", "dest_compute",
    "dest_node", "dest_host", "old_instance_type_id", "new_instance_type_id", "created_at",
    "updated_at",
}  # fmt: skip


def _is_orbit(key: str) -> bool:
    return key.startswith("orbit:") or key == "orbit"


def assert_fields(view: dict[str, Any], nova: set[str], *, optional: set[str] = set()) -> None:  # noqa: B006
    keys = set(view)
    assert nova <= keys, f"missing Nova fields: {sorted(nova - keys)}"
    extra = {k for k in keys - nova - optional if not _is_orbit(k)}
    assert not extra, f"fields Nova does not have at this version: {sorted(extra)}"


def _get(api: Api, path: str, version: str) -> Any:
    r = api.client.get(path, headers=api.headers(version=version))
    assert r.status_code == 200, r.text
    assert r.headers["OpenStack-API-Version"] == f"compute {version}"
    return r.json()


def _migrate(api: Api, server_id: str, version: str, **args: Any) -> Any:
    return api.client.post(
        f"/v2.1/servers/{server_id}/action",
        json={"os-migrateLive": args},
        headers=api.headers(version=version),
    )


def _error(r: Any, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text
    message = next(iter(r.json().values()))["message"]
    for needle in needles:
        assert needle in message, message


# -- versions --------------------------------------------------------------------------------


def test_the_range_is_2_1_to_2_96_and_others_are_406(api: Api) -> None:
    current = next(v for v in api.client.get("/").json()["versions"] if v["id"] == "v2.1")
    assert (current["min_version"], current["version"]) == ("2.1", "2.96")
    latest = api.client.get("/v2.1/servers", headers=api.headers(version="latest"))
    assert latest.headers["OpenStack-API-Version"] == "compute 2.96"
    none = api.client.get("/v2.1/servers", headers={"X-Auth-Token": api.admin_token})
    assert none.headers["OpenStack-API-Version"] == "compute 2.1"
    old = {"X-Auth-Token": api.admin_token, "X-OpenStack-Nova-API-Version": "2.60"}
    assert (
        api.client.get("/v2.1/servers", headers=old).headers["X-OpenStack-Nova-API-Version"]
        == "2.60"
    )
    for bad in ("2.97", "2.0", "3.1"):
        r = api.client.get("/v2.1/servers", headers=api.headers(version=bad))
        _error(r, 406, f"version {bad} is not supported", "minimum 2.1, maximum 2.96")
    _error(api.client.get("/v2.1/servers", headers=api.headers(version="2.x")), 400, "2.x")


# -- servers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fields"),
    [("2.1", SERVER_2_1), ("2.3", SERVER_2_3), ("2.47", SERVER_2_47), ("2.96", SERVER_2_96)],
)
def test_server_fields_follow_the_version(api: Api, version: str, fields: set[str]) -> None:
    sid = api.server_id("vm1")
    server = _get(api, f"/v2.1/servers/{sid}", version)["server"]
    assert_fields(server, fields)
    listed = _get(api, "/v2.1/servers/detail", version)["servers"]
    assert all(set(s) == set(server) for s in listed)
    if Version.parse(version) >= mv.EMBEDDED_FLAVOR:  # the flavor embedded, no id
        assert (
            server["flavor"]["ram"] == server["orbit:memory_mib"] and "id" not in server["flavor"]
        )
    else:
        assert "id" in server["flavor"] and "ram" not in server["flavor"]
    if version == "2.96":
        assert server["host_status"] == "UP" and server["locked"] is False


# -- os-migrateLive --------------------------------------------------------------------------


def test_live_migrate_keys_follow_the_version(api: Api) -> None:
    sid = api.server_id("vm1")
    before = api.snapshot()
    # 2.25 removed disk_over_commit and made block_migration and host required
    _error(_migrate(api, sid, "2.25", host="h2", block_migration=False, disk_over_commit=False),
           400, "disk_over_commit", "removed in microversion 2.25")  # fmt: skip
    _error(_migrate(api, sid, "2.25", host="h2"), 400, "'block_migration' is a required")
    _error(_migrate(api, sid, "2.30", block_migration=False), 400, "'host' is a required")
    # force: 2.30 to 2.67 only
    _error(_migrate(api, sid, "2.29", host="h2", block_migration=False, force=True),
           400, "force", "2.30 to 2.67")  # fmt: skip
    _error(_migrate(api, sid, "2.68", host="h2", block_migration=False, force=False),
           400, "force", "2.30 to 2.67")  # fmt: skip
    r = _migrate(api, sid, "2.1", host="h2", block_migration="auto")
    _error(r, 400, "block_migration 'auto' needs microversion 2.25")
    assert api.snapshot() == before
    r = _migrate(api, sid, "2.96", host="h3", block_migration="auto", post_copy=True)
    assert r.status_code == 202, r.text
    m = api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]
    assert m["dest_compute"] == "h3" and m["orbit"]["settings"]["block_migration"] is True
    assert api.wait_status(sid, m["id"], "completed", "failed", "error")["status"] == "completed"


# -- services: enable, disable, and what the scheduler does with it -------------------------


def _service(api: Api, host: str, version: str) -> dict[str, Any]:
    services = _get(api, f"/v2.1/os-services?host={host}", version)["services"]
    assert len(services) == 1, services
    s: dict[str, Any] = services[0]
    return s


def test_disable_a_host_before_2_53_by_name(api: Api) -> None:
    h = api.headers(version="2.52")
    body = {"host": "h2", "binary": "nova-compute", "disabled_reason": "new kernel"}
    r = api.client.put("/v2.1/os-services/disable-log-reason", json=body, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["service"] == {
        "host": "h2", "binary": "nova-compute", "status": "disabled",
        "disabled_reason": "new kernel",
    }  # fmt: skip
    s = _service(api, "h2", "2.52")
    assert_fields(s, SERVICE_2_1 | {"forced_down"})
    assert isinstance(s["id"], int) and s["status"] == "disabled"
    assert s["disabled_reason"] == "new kernel"
    member = api.client.put("/v2.1/os-services/enable", json=body,
                            headers=api.headers(member=True, version="2.52"))  # fmt: skip
    assert member.status_code == 403
    r = api.client.put("/v2.1/os-services/enable", json={"host": "h2", "binary": "nova-compute"},
                       headers=h)  # fmt: skip
    assert r.json()["service"]["status"] == "enabled"
    assert _service(api, "h2", "2.52")["disabled_reason"] is None
    bad = {"host": "nope", "binary": "nova-compute"}
    _error(api.client.put("/v2.1/os-services/disable", json=bad, headers=h), 404, "nope")
    # the 2.53 form is not there yet, nor the old one after it
    sid = s["id"]
    _error(api.client.put(f"/v2.1/os-services/{sid}", json={"status": "disabled"}, headers=h),
           404)  # fmt: skip
    r = api.client.put("/v2.1/os-services/disable", json=bad, headers=api.headers(version="2.53"))
    _error(r, 400, "host unexpected")


def test_a_disabled_host_takes_no_new_vms_unless_forced(api: Api) -> None:
    h = api.headers(version="2.53")
    service = _service(api, "h2", "2.53")
    assert len(service["id"]) == 36  # a UUID since 2.53
    disable = {"status": "disabled", "disabled_reason": "maintenance"}
    r = api.client.put(f"/v2.1/os-services/{service['id']}", json=disable, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["service"]["status"] == "disabled"
    assert r.json()["service"]["disabled_reason"] == "maintenance"
    hv = _get(api, "/v2.1/os-hypervisors?hypervisor_hostname_pattern=h2", "2.53")["hypervisors"]
    assert [x["status"] for x in hv] == ["disabled"]
    vm1 = api.server_id("vm1")
    # the scheduler skips h2 (h3 has room)
    before = api.snapshot()
    _error(_migrate(api, vm1, "2.53", host="h2", block_migration=False), 409,
           "h2 is disabled (maintenance)")  # fmt: skip
    _error(_migrate(api, vm1, "2.68", host="h2", block_migration=False), 409, "disabled")
    assert api.snapshot() == before
    r = _migrate(api, vm1, "2.53", host=None, block_migration=False)
    assert r.status_code == 202, r.text
    m = api.get(f"/v2.1/servers/{vm1}/migrations").json()["migrations"][0]
    done = api.wait_status(vm1, m["id"], "completed", "failed")
    assert done["status"] == "completed" and done["dest_compute"] == "h3"
    # force (2.30-2.67) sends it to the disabled host all the same
    hot = api.server_id("hot")
    r = _migrate(api, hot, "2.67", host="h2", block_migration=False, force=True, post_copy=True)
    assert r.status_code == 202, r.text
    m = api.get(f"/v2.1/servers/{hot}/migrations").json()["migrations"][0]
    assert m["dest_compute"] == "h2"
    assert api.wait_status(hot, m["id"], "completed", "failed")["status"] == "completed"
    # bad bodies
    url = f"/v2.1/os-services/{service['id']}"
    _error(api.client.put(url, json={"status": "off"}, headers=h), 400, "'status'")
    _error(api.client.put(url, json={"forced_down": True}, headers=h), 400, "forced_down")
    _error(api.client.put(url, json={"status": "enabled", "disabled_reason": "x"}, headers=h),
           400, "only accepted with status 'disabled'")  # fmt: skip
    _error(api.client.put(url, json={"status": "disabled", "disabled_reason": "x" * 256},
                          headers=h), 400, "255")  # fmt: skip
    _error(api.client.put("/v2.1/os-services/not-a-service", json={"status": "enabled"},
                          headers=h), 404)  # fmt: skip
    r = api.client.put(url, json={"status": "enabled"}, headers=h)
    assert r.json()["service"]["status"] == "enabled"
    assert r.json()["service"]["disabled_reason"] is None


# -- hypervisors -----------------------------------------------------------------------------


def test_hypervisors_before_2_53_search_and_servers(api: Api) -> None:
    hv = _get(api, "/v2.1/os-hypervisors/detail", "2.27")["hypervisors"]
    assert_fields(hv[0], HYPERVISOR_DETAIL_2_1)
    assert [x["id"] for x in hv] == [1, 2, 3] and hv[0]["cpu_info"] == "{}"
    assert _get(api, "/v2.1/os-hypervisors/detail", "2.28")["hypervisors"][0]["cpu_info"] == {}
    found = _get(api, "/v2.1/os-hypervisors/h1/search", "2.52")["hypervisors"]
    assert [x["hypervisor_hostname"] for x in found] == ["h1"]
    assert_fields(found[0], HYPERVISOR_SUMMARY)
    with_servers = _get(api, "/v2.1/os-hypervisors/h1/servers", "2.52")["hypervisors"]
    assert sorted(s["name"] for s in with_servers[0]["servers"]) == ["hot", "vm1"]
    assert "servers" not in _get(api, "/v2.1/os-hypervisors/h3/servers", "2.52")["hypervisors"][0]
    r = api.client.get("/v2.1/os-hypervisors/nomatch/search", headers=api.headers(version="2.1"))
    _error(r, 404, "nomatch")
    r = api.client.get("/v2.1/os-hypervisors/h1/search", headers=api.headers(version="2.53"))
    _error(r, 404, "hypervisor_hostname_pattern")
    up = _get(api, "/v2.1/os-hypervisors/1/uptime", "2.52")["hypervisor"]
    assert up["hypervisor_hostname"] == "h1" and "uptime" in up
    stats = _get(api, "/v2.1/os-hypervisors/statistics", "2.87")["hypervisor_statistics"]
    assert stats["count"] == 3 and stats["running_vms"] == 2


def test_hypervisors_since_2_53_and_2_88(api: Api) -> None:
    hv = _get(api, "/v2.1/os-hypervisors/detail", "2.53")["hypervisors"]
    assert all(len(x["id"]) == 36 and x["service"]["id"] == x["id"] for x in hv)
    h1 = next(x for x in hv if x["hypervisor_hostname"] == "h1")
    shown = _get(api, f"/v2.1/os-hypervisors/{h1['id']}?with_servers=true", "2.53")["hypervisor"]
    assert sorted(s["name"] for s in shown["servers"]) == ["hot", "vm1"]
    assert "servers" not in _get(api, f"/v2.1/os-hypervisors/{h1['id']}", "2.53")["hypervisor"]
    listed = _get(api, "/v2.1/os-hypervisors?hypervisor_hostname_pattern=h1&with_servers=1",
                  "2.53")["hypervisors"]  # fmt: skip
    assert [x["hypervisor_hostname"] for x in listed] == ["h1"] and len(listed[0]["servers"]) == 2
    r = api.client.get("/v2.1/os-hypervisors?hypervisor_hostname_pattern=zz",
                       headers=api.headers(version="2.53"))  # fmt: skip
    _error(r, 404, "zz")
    slim = _get(api, "/v2.1/os-hypervisors/detail", "2.88")["hypervisors"]
    assert_fields(slim[0], HYPERVISOR_DETAIL_2_88)
    assert slim[0]["orbit:memory_total_mib"] > 0  # ORBIT keeps the figures under its prefix
    for path in ("/v2.1/os-hypervisors/statistics", f"/v2.1/os-hypervisors/{h1['id']}/uptime"):
        _error(api.client.get(path, headers=api.headers(version="2.88")), 404, "2.88")
    # pagination (2.33): limit and marker, with a next link
    page = _get(api, "/v2.1/os-hypervisors?limit=2", "2.53")
    assert len(page["hypervisors"]) == 2 and "marker=" in page["hypervisors_links"][0]["href"]
    rest = _get(api, f"/v2.1/os-hypervisors?marker={page['hypervisors'][-1]['id']}", "2.53")
    seen = [x["id"] for x in page["hypervisors"] + rest["hypervisors"]]
    assert sorted(seen) == sorted(x["id"] for x in hv)
    r = api.client.get("/v2.1/os-hypervisors?marker=nope", headers=api.headers(version="2.53"))
    _error(r, 400, "marker")


# -- migrations ------------------------------------------------------------------------------


def _two_migrations(api: Api) -> tuple[str, list[int]]:
    sid = api.server_id("vm1")
    ids = []
    for dest in ("h2", "h3"):
        assert _migrate(api, sid, "2.25", host=dest, block_migration=False).status_code == 202
        m = api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]
        api.wait_status(sid, m["id"], "completed")
        ids.append(m["id"])
    return sid, ids


def test_migration_fields_and_os_migrations_pagination(api: Api) -> None:
    sid, (first, second) = _two_migrations(api)
    path = f"/v2.1/servers/{sid}/migrations/{second}"
    assert_fields(_get(api, path, "2.58")["migration"], SERVER_MIGRATION_2_23)
    assert_fields(_get(api, path, "2.59")["migration"], SERVER_MIGRATION_2_23 | {"uuid"})
    owned = _get(api, path, "2.80")["migration"]
    assert_fields(owned, SERVER_MIGRATION_2_23 | {"uuid", "user_id", "project_id"})
    assert owned["user_id"] and owned["project_id"]
    listed = _get(api, "/v2.1/os-migrations", "2.1")["migrations"]
    assert_fields(listed[0], OS_MIGRATION_2_1)
    assert_fields(_get(api, "/v2.1/os-migrations", "2.23")["migrations"][0],
                  OS_MIGRATION_2_1 | {"migration_type"}, optional={"links"})  # fmt: skip
    # 2.59: newest first, limit and marker (a migration's uuid), a next link
    page = _get(api, "/v2.1/os-migrations?limit=1", "2.59")
    assert [m["id"] for m in page["migrations"]] == [second]
    assert "marker=" in page["migrations_links"][0]["href"]
    rest = _get(api, f"/v2.1/os-migrations?marker={page['migrations'][0]['uuid']}", "2.59")
    assert [m["id"] for m in rest["migrations"]] == [first] and "migrations_links" not in rest
    r = api.client.get("/v2.1/os-migrations?marker=nope", headers=api.headers(version="2.59"))
    _error(r, 400, "marker")
    # below 2.59 the paging parameters are ignored, as in Nova
    assert len(_get(api, "/v2.1/os-migrations?limit=1", "2.58")["migrations"]) == 2
    assert _get(api, "/v2.1/os-migrations?changes-since=2999-01-01T00:00:00Z",
                "2.59")["migrations"] == []  # fmt: skip
    assert len(_get(api, "/v2.1/os-migrations?changes-before=2999-01-01T00:00:00Z",
                    "2.66")["migrations"]) == 2  # fmt: skip
    r = api.client.get("/v2.1/os-migrations?changes-since=yesterday",
                       headers=api.headers(version="2.59"))  # fmt: skip
    _error(r, 400, "ISO 8601")
    # 2.80: filtered by user and project
    assert (
        len(_get(api, f"/v2.1/os-migrations?user_id={owned['user_id']}", "2.80")["migrations"]) == 2
    )
    assert _get(api, "/v2.1/os-migrations?project_id=someone-else", "2.80")["migrations"] == []
