"""The compute API on SQLite and PostgreSQL: every endpoint, and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from orbit.migration.predict import LINK_PAYLOAD_SHARE
from tests.api.conftest import Api


def _migrate(api: Api, server_id: str, body: Any, **kw: Any) -> Any:
    """os-migrateLive at 2.25, with Nova's required keys filled in as stock clients send them."""
    if isinstance(body, dict):
        body = {"host": None, "block_migration": False, **body}
    return api.post(f"/v2.1/servers/{server_id}/action", {"os-migrateLive": body}, **kw)


def _only_migration(api: Api, server_id: str) -> dict[str, Any]:
    ms = api.get(f"/v2.1/servers/{server_id}/migrations").json()["migrations"]
    assert len(ms) == 1, ms
    m: dict[str, Any] = ms[0]
    return m


def _error(r: Any, status: int, key: str, *needles: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == [key], body
    assert body[key]["code"] == status
    for needle in needles:
        assert needle in body[key]["message"], body[key]["message"]


# -- discovery, servers, hypervisors -----------------------------------------------------------


def test_versions_are_public_and_name_the_microversion_range(api: Api) -> None:
    doc = api.client.get("/").json()
    current = next(v for v in doc["versions"] if v["status"] == "CURRENT")
    assert (current["min_version"], current["version"]) == ("2.1", "2.96")
    assert api.client.get("/v2.1/").json()["version"]["id"] == "v2.1"
    r = api.client.get("/v2.1/servers", headers={"OpenStack-API-Version": "compute 2.99",
                                                   "X-Auth-Token": api.admin_token})  # fmt: skip
    _error(r, 406, "notAcceptable", "2.99")


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail"])
def test_server_lists_page_with_limit_and_marker(api: Api, path: str) -> None:
    """Nova's paging: ``limit`` fills a page and links the next one (``marker``)."""
    everyone = [s["id"] for s in api.get(path).json()["servers"]]
    assert len(everyone) == 2
    first = api.get(f"{path}?limit=1").json()
    assert [s["id"] for s in first["servers"]] == everyone[:1]
    link = first["servers_links"][0]
    assert link["rel"] == "next" and f"marker={everyone[0]}" in link["href"]
    assert link["href"].split("?")[0].endswith(path)  # the same list's next page
    second = api.get(f"{path}?limit=1&marker={everyone[0]}").json()
    assert [s["id"] for s in second["servers"]] == everyone[1:]
    last = api.get(f"{path}?limit=1&marker={everyone[1]}").json()
    assert last["servers"] == [] and "servers_links" not in last
    assert "servers_links" not in api.get(f"{path}?limit=5").json()
    for bad in ("limit=-1", "limit=x", "marker=no-such-server"):
        r = api.get(f"{path}?{bad}")
        assert r.status_code == 400, (bad, r.text)


def test_servers_are_discovered_from_the_hosts(api: Api) -> None:
    servers = api.get("/v2.1/servers/detail").json()["servers"]
    by_name = {s["name"]: s for s in servers}
    assert set(by_name) == {"vm1", "hot"}
    vm1 = by_name["vm1"]
    assert vm1["status"] == "ACTIVE" and vm1["OS-EXT-SRV-ATTR:host"] == "h1"
    assert vm1["OS-EXT-STS:power_state"] == 1 and vm1["orbit:memory_mib"] == 64
    shown = api.get(f"/v2.1/servers/{vm1['id']}").json()["server"]
    assert shown["id"] == vm1["id"]
    # the same under the project-scoped prefixes, with the token's project (as Nova)
    project = api.project_id("admin")
    for prefix in ("/v2.1", f"/v2.1/{project}", f"/v2/{project}"):
        assert api.get(f"{prefix}/servers").status_code == 200, prefix
    for prefix in ("/v2.1/anything", f"/v2/{api.project_id('demo')}"):
        _error(api.get(f"{prefix}/servers"), 400, "badRequest", "does not match")
    assert [s["name"] for s in api.get("/v2.1/servers?host=h1").json()["servers"]] == [
        "hot",
        "vm1",
    ]


def test_hypervisors_services_and_hosts(api: Api) -> None:
    hvs = api.get("/v2.1/os-hypervisors/detail").json()["hypervisors"]
    assert [h["hypervisor_hostname"] for h in hvs] == ["h1", "h2", "h3"]
    h1 = hvs[0]
    assert h1["state"] == "up" and h1["running_vms"] == 2 and h1["memory_mb"] == 16384
    assert h1["free_ram_mb"] == 16384 - 128
    assert api.get("/v2.1/os-hypervisors").json()["hypervisors"][1]["state"] == "up"
    assert api.get("/v2.1/os-hypervisors/h2").json()["hypervisor"]["hypervisor_hostname"] == "h2"
    services = api.get("/v2.1/os-services").json()["services"]
    assert {(s["host"], s["state"], s["binary"]) for s in services} == {
        ("h1", "up", "nova-compute"),
        ("h2", "up", "nova-compute"),
        ("h3", "up", "nova-compute"),
    }


def test_a_host_that_does_not_answer_is_down_and_keeps_its_servers(api: Api) -> None:
    api.driver.hosts["fake://h1"].up = False
    api.conductor.sync()
    hvs = {
        h["hypervisor_hostname"]: h for h in api.get("/v2.1/os-hypervisors").json()["hypervisors"]
    }
    assert hvs["h1"]["state"] == "down"
    servers = api.get("/v2.1/servers/detail").json()["servers"]
    assert {s["name"]: (s["status"], s["OS-EXT-SRV-ATTR:host"]) for s in servers} == {
        "vm1": ("UNKNOWN", "h1"),
        "hot": ("UNKNOWN", "h1"),
    }


# -- live migration -------------------------------------------------------------------------


def test_live_migration_with_post_copy_completes(api: Api) -> None:
    sid = api.server_id("hot")
    # the seed's body, at the seed's microversion (2.1: disk_over_commit still exists)
    r = _migrate(api, sid, {"host": "h2", "block_migration": False,
                            "disk_over_commit": False, "post_copy": True},
                 headers=api.headers(version="2.1"))  # fmt: skip
    assert r.status_code == 202, r.text
    m = _only_migration(api, sid)
    assert m["source_compute"] == "h1" and m["dest_compute"] == "h2"
    settings = m["orbit"]["settings"]
    assert settings["post_copy"] is True and settings["migration_policy"] == "auto"
    done = api.wait_status(sid, m["id"], "completed", "failed", "error")
    assert done["status"] == "completed", done["orbit"]["error"]
    assert done["orbit"]["switch_at_s"] is not None  # the hot guest needed post-copy
    plan = done["orbit"]["prediction"]  # auto measured the guest and chose before starting
    assert plan is not None and plan["strategy"].startswith("postcopy-after-"), plan
    assert plan["dirty_rate_bytes_s"] > 0 and plan["total_s"] > 0
    assert plan["link_source"] == "configured for h2" and plan["link_bytes_s"] == round(
        8 * 2**20 * LINK_PAYLOAD_SHARE
    )
    assert done["orbit"]["decisions"][0]["action"] == "plan"
    assert done["orbit"]["settings"]["postcopy_weight"] == 1.0
    assert done["memory_processed_bytes"] > 0 and done["memory_remaining_bytes"] == 0
    reasons = [d["reason"] for d in done["orbit"]["decisions"] if d["action"] != "continue"]
    assert reasons, done["orbit"]["decisions"]
    samples = api.get(f"/v2.1/servers/{sid}/migrations/{m['id']}/samples").json()["samples"]
    assert samples and any(s["postcopy"] for s in samples)
    api.wait_for(
        lambda: api.get(f"/v2.1/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"] == "h2",
        "the server on h2",
    )
    listed = api.get("/v2.1/os-migrations?host=h2").json()["migrations"]
    assert [x["id"] for x in listed] == [m["id"]]
    assert api.get("/v2.1/os-migrations?status=failed").json()["migrations"] == []


def test_post_copy_after_iterations_and_scheduler(api: Api) -> None:
    sid = api.server_id("vm1")
    r = _migrate(api, sid, {"host": None, "post_copy": True, "post_copy_after_iterations": 0})
    assert r.status_code == 202, r.text
    m = _only_migration(api, sid)
    assert m["orbit"]["settings"]["migration_policy"] == "postcopy"
    # the scheduler chooses as the migration starts (the queued record names no host yet)
    assert m["dest_compute"] in (None, "h2", "h3")
    done = api.wait_status(sid, m["id"], "completed", "failed", "error")
    assert done["status"] == "completed", done
    assert done["dest_compute"] in ("h2", "h3")  # most free memory, not the source


def test_precopy_default_and_the_v2_prefix(api: Api) -> None:
    sid = api.server_id("vm1")
    r = api.post(f"/v2/{api.project_id('admin')}/servers/{sid}/action",
                 {"os-migrateLive": {"host": "h3", "block_migration": False,
                                     "disk_over_commit": False}},
                 headers=api.headers(version="2.1"))  # fmt: skip
    assert r.status_code == 202, r.text
    m = _only_migration(api, sid)
    assert m["orbit"]["settings"]["post_copy"] is False
    done = api.wait_status(sid, m["id"], "completed", "failed", "error")
    assert done["status"] == "completed" and done["orbit"]["switch_at_s"] is None


def test_force_complete_and_abort(api: Api) -> None:
    from orbit.virt.fake import MIB, FakeWorkload

    # big and slow: its post-copy lasts long enough (~2.5 s) to try an abort in it
    slow = FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=2 * MIB)
    api.driver.add_domain("fake://h1", "big", workload=slow)
    api.conductor.sync()
    sid = api.server_id("big")
    # pre-copy only, with a long timeout: it runs until the operator acts
    r = _migrate(api, sid, {"host": "h2", "post_copy": True, "post_copy_after_iterations": 100})
    assert r.status_code == 202
    m = _only_migration(api, sid)
    api.wait_status(sid, m["id"], "running-precopy")
    r = api.post(f"/v2.1/servers/{sid}/migrations/{m['id']}/action", {"force_complete": None})
    assert r.status_code == 202, r.text
    api.wait_status(sid, m["id"], "running-postcopy")
    before = api.snapshot()
    r = api.client.delete(f"/v2.1/servers/{sid}/migrations/{m['id']}", headers=api.headers())
    _error(r, 409, "conflictingRequest", "post-copy", "split")
    assert api.snapshot()["Migration"] == before["Migration"]
    done = api.wait_status(sid, m["id"], "completed", "failed")
    assert done["status"] == "completed"
    switch = [d for d in done["orbit"]["decisions"] if d["action"] == "switch-to-postcopy"]
    assert switch and switch[0]["source"] == "operator"


def test_abort_in_precopy_keeps_the_vm_on_the_source(api: Api) -> None:
    sid = api.server_id("hot")
    assert _migrate(api, sid, {"host": "h2"}).status_code == 202
    m = _only_migration(api, sid)
    api.wait_status(sid, m["id"], "running-precopy")
    r = api.client.delete(f"/v2.1/servers/{sid}/migrations/{m['id']}", headers=api.headers())
    assert r.status_code == 202, r.text
    done = api.wait_status(sid, m["id"], "cancelled", "failed", "completed")
    assert done["status"] == "cancelled"
    assert "hot" in api.driver.hosts["fake://h1"].domains
    api.wait_for(
        lambda: api.get(f"/v2.1/servers/{sid}").json()["server"]["status"] == "ACTIVE",
        "server ACTIVE again",
    )


# -- bad input: the right status, a clear message, nothing changed ---------------------------


def test_bad_requests_change_nothing(api: Api) -> None:
    sid = api.server_id("vm1")
    before = api.snapshot()

    def bad(r: Any, status: int, key: str, *needles: str) -> None:
        _error(r, status, key, *needles)
        assert api.snapshot() == before

    url = f"/v2.1/servers/{sid}/action"
    hdr = api.headers()
    bad(api.client.post(url, content=b"{not json", headers=hdr), 400, "badRequest", "malformed")
    bad(api.client.post(url, content=b"[1]", headers=hdr), 400, "badRequest", "JSON object")
    bad(_migrate(api, "no-such-server", {"host": "h2"}), 404, "itemNotFound", "no-such-server")
    bad(_migrate(api, sid, {"host": "h9"}), 400, "badRequest", "h9")
    bad(_migrate(api, sid, {"host": "h1"}), 400, "badRequest", "current host")
    bad(_migrate(api, sid, {"host": "h2", "post_copy": "yes"}), 400, "badRequest",
        "post_copy", "not a boolean")  # fmt: skip
    bad(_migrate(api, sid, {"host": "h2", "block_migration": "maybe"}), 400, "badRequest",
        "block_migration")  # fmt: skip
    bad(_migrate(api, sid, {"host": "h2", "force": True}), 400, "badRequest", "force")
    bad(_migrate(api, sid, {"host": "h2", "post_copy": True, "migration_policy": "fast"}), 400,
        "badRequest", "migration_policy")  # fmt: skip
    bad(_migrate(api, sid, {"host": "h2", "post_copy_after_iterations": 1}), 400,
        "badRequest", "needs post_copy")  # fmt: skip
    bad(_migrate(api, sid, {"host": "h2", "post_copy": True, "postcopy_weight": "x"}), 400,
        "badRequest", "postcopy_weight", "not a number")  # fmt: skip
    bad(_migrate(api, sid, {"host": "h2", "post_copy": True, "postcopy_weight": -1}), 400,
        "badRequest", "post-copy weight must be 0..1000")  # fmt: skip
    bad(api.post(url, {"os-stop": None}), 400, "badRequest", "os-migrateLive")
    bad(api.get(f"/v2.1/servers/{sid}/migrations/999"), 404, "itemNotFound", "999")


def test_vm_not_running_and_migration_in_progress_are_409(api: Api) -> None:
    sid = api.server_id("vm1")
    dom = api.driver.hosts["fake://h1"].domains["vm1"]
    from dataclasses import replace

    from orbit.virt.driver import DomainState

    api.driver.hosts["fake://h1"].domains["vm1"] = replace(dom, state=DomainState.PAUSED)
    api.conductor.sync()
    before = api.snapshot()
    _error(_migrate(api, sid, {"host": "h2"}), 409, "conflictingRequest", "PAUSED")
    assert api.snapshot() == before

    hot = api.server_id("hot")
    assert _migrate(api, hot, {"host": "h2", "post_copy": True,
                               "post_copy_after_iterations": 100}).status_code == 202  # fmt: skip
    before = api.snapshot()
    _error(_migrate(api, hot, {"host": "h3"}), 409, "conflictingRequest", "already")
    assert api.snapshot()["Migration"] == before["Migration"]
    m = _only_migration(api, hot)
    api.wait_status(hot, m["id"], "running-precopy")
    api.post(f"/v2.1/servers/{hot}/migrations/{m['id']}/action", {"force_complete": None})
    api.wait_status(hot, m["id"], "completed")


@pytest.mark.parametrize(
    ("token", "status", "key"), [(None, 401, "unauthorized"), ("bogus", 401, "unauthorized")]
)
def test_tokens_are_required(api: Api, token: str | None, status: int, key: str) -> None:
    headers = {} if token is None else {"X-Auth-Token": token}
    before = api.snapshot()
    sid = api.server_id("vm1")
    _error(api.client.get("/v2.1/servers", headers=headers), status, key)
    r = api.client.post(f"/v2.1/servers/{sid}/action", json={"os-migrateLive": {"host": "h2"}},
                        headers=headers)  # fmt: skip
    _error(r, status, key)
    assert api.snapshot() == before


def test_expired_token_is_401(api: Api) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from orbit.db.models import Token
    from orbit.db.types import utcnow
    from orbit.identity.service import forget_tokens

    with api.db.session() as s:
        s.execute(update(Token).values(expires_at=utcnow() - timedelta(seconds=1)))
    # changed behind the API's back (as another instance would): the validation it made
    # is reused for up to TOKEN_CACHE_S; forgotten here, as a change through it would
    forget_tokens()
    _error(api.get("/v2.1/servers"), 401, "unauthorized", "expired")


def test_member_role_cannot_migrate(api: Api) -> None:
    sid = api.server_id("vm1")
    before = api.snapshot()
    assert api.get("/v2.1/servers", headers=api.headers(member=True)).status_code == 200
    r = _migrate(api, sid, {"host": "h2"}, headers=api.headers(member=True))
    _error(r, 403, "forbidden", "admin role")
    r = api.post("/v2.1/orbit-hosts", {"name": "h4", "uri": "fake://h4"},
                 headers=api.headers(member=True))  # fmt: skip
    _error(r, 403, "forbidden")
    assert api.snapshot() == before


def test_host_registry(api: Api) -> None:
    before = api.snapshot()
    _error(api.post("/v2.1/orbit-hosts", {"name": "h1", "uri": "fake://x"}), 409,
           "conflictingRequest", "already")  # fmt: skip
    _error(api.post("/v2.1/orbit-hosts", {"name": "bad name", "uri": "qemu:///system"}), 400,
           "badRequest", "host name")  # fmt: skip
    _error(api.post("/v2.1/orbit-hosts", {"name": "h4", "uri": "http://x"}), 400,
           "badRequest", "URI")  # fmt: skip
    assert api.snapshot() == before
    r = api.post("/v2.1/orbit-hosts", {"name": "h4", "uri": "qemu+tcp://127.0.0.9/system"})
    assert r.status_code == 201 and r.json()["host"]["state"] == "down"  # nothing listens
    r = api.client.delete("/v2.1/orbit-hosts/h4", headers=api.headers())
    assert r.status_code == 204
    _error(api.client.delete("/v2.1/orbit-hosts/h4", headers=api.headers()), 404,
           "itemNotFound", "h4")  # fmt: skip
    names = [h["name"] for h in api.get("/v2.1/orbit-hosts").json()["hosts"]]
    assert names == ["h1", "h2", "h3"]


def test_openapi_document(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert "/v2.1/servers/{server_id}/action" in doc["paths"]
    assert "/identity/v3/auth/tokens" in doc["paths"]


def test_per_host_limit_queues_the_second_migration(api: Api) -> None:
    hot, vm1 = api.server_id("hot"), api.server_id("vm1")
    body = {"host": "h2", "post_copy": True, "post_copy_after_iterations": 100}
    assert _migrate(api, hot, body).status_code == 202
    first = _only_migration(api, hot)
    api.wait_status(hot, first["id"], "running-precopy")
    assert _migrate(api, vm1, {"host": "h3"}).status_code == 202
    second = _only_migration(api, vm1)
    # one outgoing migration per host (the default): vm1 waits for hot's to end
    assert api.migration(vm1, second["id"])["status"] == "queued"
    api.post(f"/v2.1/servers/{hot}/migrations/{first['id']}/action", {"force_complete": None})
    assert api.wait_status(hot, first["id"], "completed", "failed")["status"] == "completed"
    done = api.wait_status(vm1, second["id"], "completed", "failed")
    assert done["status"] == "completed"
    started = done["orbit"]["started_at"]
    assert (
        started is not None and started >= api.migration(hot, first["id"])["orbit"]["finished_at"]
    )


def test_abort_of_a_queued_migration_cancels_it(api: Api) -> None:
    hot, vm1 = api.server_id("hot"), api.server_id("vm1")
    body = {"host": "h2", "post_copy": True, "post_copy_after_iterations": 100}
    assert _migrate(api, hot, body).status_code == 202
    first = _only_migration(api, hot)
    api.wait_status(hot, first["id"], "running-precopy")
    assert _migrate(api, vm1, {"host": "h3"}).status_code == 202
    second = _only_migration(api, vm1)
    url = f"/v2.1/servers/{vm1}/migrations/{second['id']}"
    # Nova: a migration that has not started can be aborted from microversion 2.65 on
    # hot's running migration keeps adding samples: compare everything else
    before = api.snapshot() | {"MigrationSample": 0}
    _error(api.client.delete(url, headers=api.headers(version="2.64")), 400, "badRequest",
           "queued", "2.65")  # fmt: skip
    assert api.snapshot() | {"MigrationSample": 0} == before
    assert api.migration(vm1, second["id"])["status"] == "queued"
    r = api.client.delete(url, headers=api.headers(version="2.65"))
    assert r.status_code == 202, r.text
    assert api.migration(vm1, second["id"])["status"] == "cancelled"
    assert api.get(f"/v2.1/servers/{vm1}").json()["server"]["status"] == "ACTIVE"
    api.client.delete(f"/v2.1/servers/{hot}/migrations/{first['id']}", headers=api.headers())
    assert api.wait_status(hot, first["id"], "cancelled", "failed")["status"] == "cancelled"


def test_no_host_fits_is_400_with_the_reasons(api: Api) -> None:
    for uri in ("fake://h2", "fake://h3"):
        api.driver.hosts[uri].up = False
    api.conductor.sync()
    sid = api.server_id("vm1")
    before = api.snapshot()
    _error(_migrate(api, sid, {"host": None}), 400, "badRequest", "no host can take",
           "h2 is down", "h3 is down")  # fmt: skip
    _error(_migrate(api, sid, {"host": "h2"}), 400, "badRequest", "h2 is down")
    assert api.snapshot() == before


def test_hostile_input_is_4xx_not_500(api: Api) -> None:
    sid = api.server_id("vm1")
    hdr = api.headers()
    before = api.snapshot()
    huge_number = b'{"os-migrateLive": {"host": ' + b"9" * 5000 + b"}}"
    _error(api.client.post(f"/v2.1/servers/{sid}/action", content=huge_number, headers=hdr),
           400, "badRequest", "malformed")  # fmt: skip
    deep = b"[" * 50_000 + b"]" * 50_000  # 100 KB: under the body limit, too deep to parse
    _error(api.client.post(f"/v2.1/servers/{sid}/action", content=deep, headers=hdr),
           400, "badRequest", "malformed")  # fmt: skip
    _error(api.get(f"/v2.1/servers/{sid}/migrations/99999999999999999999"), 404, "itemNotFound")
    _error(api.post("/v2.1/orbit-hosts", {"name": "h9", "uri": "qemu+tcp://h:abc/system"}),
           400, "badRequest", "URI")  # fmt: skip
    r = api.client.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": None, "password": {"user": {"name": "admin", "password": "x"}}}}})  # fmt: skip
    assert r.status_code == 400 and "password" in r.json()["error"]["message"]
    assert api.snapshot() == before


def test_simultaneous_requests_queue_one_migration(api: Api) -> None:
    import threading

    sid = api.server_id("hot")
    body = {"host": "h2", "post_copy": True, "post_copy_after_iterations": 100}
    codes: list[int] = []
    barrier = threading.Barrier(4)

    def request() -> None:
        barrier.wait()
        codes.append(_migrate(api, sid, body).status_code)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 409, 409, 409], codes
    m = _only_migration(api, sid)  # exactly one record
    api.wait_status(sid, m["id"], "running-precopy")
    api.client.delete(f"/v2.1/servers/{sid}/migrations/{m['id']}", headers=api.headers())
    assert api.wait_status(sid, m["id"], "cancelled", "failed")["status"] == "cancelled"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("198.18.0.9", "tcp://198.18.0.9"),  # bare, as Nova's live_migration_inbound_addr
        ("h9.example", "tcp://h9.example"),
        ("fd00::9", "tcp://[fd00::9]"),
        ("tcp://198.18.0.9", "tcp://198.18.0.9"),
        ("tcp://198.18.0.9:49152", "tcp://198.18.0.9:49152"),
    ],
)
def test_host_migration_address_bare_or_uri(api: Api, given: str, stored: str) -> None:
    r = api.post(
        "/v2.1/orbit-hosts",
        {"name": "h9", "uri": "qemu+tcp://127.0.0.9/system", "migration_address": given},
    )
    assert r.status_code == 201, r.text
    assert r.json()["host"]["migration_address"] == stored
    assert api.client.delete("/v2.1/orbit-hosts/h9", headers=api.headers()).status_code == 204


@pytest.mark.parametrize("given", ["", "tcp://", "ftp://198.18.0.9", "198.18.0.9 x", 42, "a/b"])
def test_host_bad_migration_address(api: Api, given: object) -> None:
    before = api.snapshot()
    r = api.post(
        "/v2.1/orbit-hosts",
        {"name": "h9", "uri": "qemu+tcp://127.0.0.9/system", "migration_address": given},
    )
    _error(r, 400, "badRequest", "migration address")
    assert api.snapshot() == before
