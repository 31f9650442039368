"""Host drains through the API, on SQLite and PostgreSQL with the fake hypervisors.

h1 holds vm1 (quiet) and hot (rewrites memory faster than its link sends it): a drain of
h1 with post-copy moves both; without it, hot cannot leave and the drain says so.
"""

from __future__ import annotations

from typing import Any

from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.virt.fake import MIB, FakeWorkload
from tests.api.conftest import H1, Api

FINAL = ("completed", "incomplete", "cancelled")


def _drain(api: Api, host: str, body: dict[str, Any], **kw: Any) -> Any:
    return api.post(f"/v2.1/orbit-hosts/{host}/drain", body, **kw)


def _show(api: Api, drain_id: int) -> dict[str, Any]:
    r = api.get(f"/v2.1/orbit-drains/{drain_id}")
    assert r.status_code == 200, r.text
    d: dict[str, Any] = r.json()["drain"]
    return d


def _wait_final(api: Api, drain_id: int) -> dict[str, Any]:
    api.wait_for(lambda: _show(api, drain_id)["status"] in FINAL, f"drain {drain_id} to end")
    return _show(api, drain_id)


def _service(api: Api, host: str) -> dict[str, Any]:
    services = api.get(f"/v2.1/os-services?host={host}").json()["services"]
    s: dict[str, Any] = services[0]
    return s


def test_plan_only_changes_nothing(api: Api) -> None:
    before = api.snapshot()
    r = _drain(api, "h1", {"post_copy": True, "plan_only": True, "deadline_s": 600})
    assert r.status_code == 200, r.text
    plan = r.json()["drain"]
    assert plan["status"] == "planned" and plan["id"] is None and plan["host"] == "h1"
    assert sorted(i["name"] for i in plan["items"]) == ["hot", "vm1"]
    assert all(i["dest"] in ("h2", "h3") and i["state"] == "pending" for i in plan["items"])
    hot = next(i for i in plan["items"] if i["name"] == "hot")
    assert hot["strategy"].startswith("postcopy-after-"), hot  # it was measured dirty
    assert plan["within_deadline"] is True and plan["predicted_s"] > 0
    assert api.snapshot() == before
    assert _service(api, "h1")["status"] == "enabled"
    assert api.get("/v2.1/orbit-drains").json()["drains"] == []


def test_a_drain_with_post_copy_empties_the_host(api: Api) -> None:
    r = _drain(api, "h1", {"post_copy": True, "to": ["h2", "h3"]})
    assert r.status_code == 202, r.text
    drain = r.json()["drain"]
    assert drain["status"] == "running"
    # the host is disabled at once: the scheduler sends it nothing
    service = _service(api, "h1")
    assert service["status"] == "disabled"
    assert service["disabled_reason"] == f"draining (drain {drain['id']})"
    done = _wait_final(api, drain["id"])
    assert done["status"] == "completed", done
    assert done["counts"]["moved"] == 2 and done["elapsed_s"] > 0
    by_name = {i["name"]: i for i in done["items"]}
    assert by_name["hot"]["outcome"].startswith("moved to h")
    assert "switched to post-copy" in by_name["hot"]["outcome"]
    assert api.driver.hosts[H1].domains == {}
    listed = api.get("/v2.1/orbit-drains?host=h1").json()["drains"]
    assert [d["id"] for d in listed] == [drain["id"]]
    # a finished drain leaves the host disabled until the operator enables it
    assert _service(api, "h1")["status"] == "disabled"


def test_without_post_copy_the_hot_vm_stays_and_the_drain_says_why(api: Api) -> None:
    plan = _drain(api, "h1", {"post_copy": False, "plan_only": True}).json()["drain"]
    assert [i["name"] for i in plan["items"]][-1] == "hot"  # at risk: last
    assert plan["items"][-1]["at_risk"] is True
    r = _drain(api, "h1", {"post_copy": False, "deadline_s": 60})
    drain = r.json()["drain"]
    api.wait_for(lambda: _show(api, drain["id"])["counts"]["moved"] == 1, "vm1 moved")
    api.wait_for(
        lambda: _show(api, drain["id"])["counts"]["migrating"] == 1, "hot's pre-copy running"
    )
    # the operator cancels: hot's pre-copy goes on by its own rules (it is aborted here)
    r = api.client.delete(f"/v2.1/orbit-drains/{drain['id']}", headers=api.headers())
    assert r.status_code == 202 and r.json()["drain"]["status"] == "cancelling"
    hot = next(i for i in _show(api, drain["id"])["items"] if i["name"] == "hot")
    sid = api.server_id("hot")
    api.client.delete(f"/v2.1/servers/{sid}/migrations/{hot['migration_id']}",
                      headers=api.headers())  # fmt: skip
    done = _wait_final(api, drain["id"])
    assert done["status"] == "cancelled"
    assert set(api.driver.hosts[H1].domains) == {"hot"}  # on its host, not lost
    r = api.client.delete(f"/v2.1/orbit-drains/{drain['id']}", headers=api.headers())
    assert r.status_code == 409 and "already cancelled" in r.text


def test_a_drain_goes_on_after_the_conductor_restarts(api: Api) -> None:
    slow = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=2 * MIB, dirty_bytes=0)
    api.driver.add_domain(H1, "third", workload=slow)
    api.conductor.sync()
    drain = _drain(api, "h1", {"post_copy": True}).json()["drain"]
    api.wait_for(lambda: _show(api, drain["id"])["counts"]["migrating"] == 1, "one under way")
    api.conductor.stop()  # orbit-server dies; the migrations go on in "libvirt"
    second = Conductor(api.db, api.driver, ServerConfig(sync_interval_s=0.5, driver="fake"))
    api.conductor = second
    api.client.app.state.services.conductor = second  # type: ignore[attr-defined]
    second.start()
    try:
        done = _wait_final(api, drain["id"])
    finally:
        second.stop()  # the fixture stops only the conductor it made
    assert done["status"] == "completed", done
    assert done["counts"]["moved"] == 3 and api.driver.hosts[H1].domains == {}


def test_bad_drain_requests(api: Api) -> None:
    before = api.snapshot()
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("nope", {}, 404, "not registered"),
        ("h1", {"to": ["h9"]}, 400, "unknown target host(s): h9"),
        ("h1", {"to": ["h1"]}, 400, "is the host being drained"),
        ("h1", {"to": "h2"}, 400, "'to' must be a list"),
        ("h1", {"max_parallel": 0}, 400, "max_parallel must be 1..16"),
        ("h1", {"deadline_s": -1}, 400, "deadline must be > 0 s"),
        ("h1", {"post_copy": "yes"}, 400, "not a boolean"),
        ("h1", {"surprise": 1}, 400, "unexpected fields: surprise"),
    ]
    for host, body, status, needle in cases:
        r = _drain(api, host, body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.text, r.text
    r = _drain(api, "h1", {}, headers=api.headers(member=True))
    assert r.status_code == 403
    assert api.get("/v2.1/orbit-drains/12345").status_code == 404
    assert api.snapshot() == before


def test_one_drain_per_host_and_no_unregistering_it(api: Api) -> None:
    api.driver.add_domain(
        H1, "slow", workload=FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=1 * MIB)
    )
    api.conductor.sync()
    first = _drain(api, "h1", {"post_copy": True})
    assert first.status_code == 202
    second = _drain(api, "h1", {"post_copy": True})
    assert second.status_code == 409 and "already being drained" in second.text
    r = api.client.delete("/v2.1/orbit-hosts/h1", headers=api.headers())
    assert r.status_code == 409
    _wait_final(api, first.json()["drain"]["id"])
