"""``GET /metrics``: Prometheus' text format, admin only, figures that agree with the records."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from orbit.api.metrics import MigrationMetrics
from orbit.db.models import Migration
from orbit.virt.fake import MIB, FakeWorkload
from tests.api.conftest import Api

LABELS = r'\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\}'
SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)({LABELS})? (-?[0-9.e+-]+|\+Inf|NaN)$")


def _parse(text: str) -> dict[str, float]:
    """Every sample line as 'name{labels}' -> value; fails on a line that is not valid, or a
    family sampled without its HELP and TYPE."""
    families, samples = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in families or base in families, f"no TYPE for {name}"
        samples[name + (m.group(2) or "")] = float(m.group(3))
    return samples


def _scrape(api: Api, **headers: str) -> Any:
    return api.client.get("/metrics", headers=headers or {"X-Auth-Token": api.admin_token})


def _migrate(api: Api, name: str, host: str, **extra: Any) -> int:
    sid = api.server_id(name)
    body = {"os-migrateLive": {"host": host, "block_migration": False, **extra}}
    assert api.post(f"/v2.1/servers/{sid}/action", body).status_code == 202
    mid = int(api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]["id"])
    return mid


def test_metrics_agree_with_the_records(api: Api) -> None:
    assert _scrape(api, **{"X-Auth-Token": api.member_token}).status_code == 403
    assert api.client.get("/metrics").status_code == 401
    hot = _migrate(api, "hot", "h2", post_copy=True, post_copy_after_iterations=0)
    api.wait_status(api.server_id("hot"), hot, "completed")
    vm1 = _migrate(api, "vm1", "h3")
    api.wait_status(api.server_id("vm1"), vm1, "completed")
    r = _scrape(api, Authorization=f"Bearer {api.admin_token}")  # as Prometheus sends it
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _parse(r.text)
    assert m['orbit_migrations_total{outcome="completed",policy="postcopy"}'] == 1
    assert m['orbit_migrations_total{outcome="completed",policy="precopy"}'] == 1
    assert m['orbit_migration_duration_seconds_count{policy="postcopy"}'] == 1
    assert m["orbit_migration_postcopy_seconds_count"] == 1  # only hot switched
    assert m["orbit_migration_memory_transferred_bytes_count"] == 2
    buckets = [v for k, v in m.items() if k.startswith("orbit_migration_downtime_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == m["orbit_migration_downtime_seconds_count"]
    assert m['orbit_hosts{state="up"}'] == 3 and m['orbit_host_queue_depth{host="h1"}'] == 0
    assert m['orbit_migrations_in_phase{phase="running-postcopy"}'] == 0
    action = '{method="POST",route="/servers/{server_id}/action",code="202"}'
    assert m[f"orbit_api_request_duration_seconds_count{action}"] == 2
    # a third migration: counted once more, and a new process (a restart) agrees
    slow = FakeWorkload(memory_bytes=512 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=0)
    api.driver.hosts["fake://h2"].workloads["hot"] = slow
    running = _migrate(api, "hot", "h1")
    hot_id = api.server_id("hot")
    api.wait_for(
        lambda: bool(api.migration(hot_id, running)["memory_processed_bytes"]), "under way"
    )
    during = _parse(_scrape(api).text)
    key = f'{{migration="{running}",server="{api.server_id("hot")}"}}'
    assert during[f"orbit_migration_data_processed_bytes{key}"] > 0
    assert during[f"orbit_migration_data_remaining_bytes{key}"] > 0
    r = api.client.delete(f"/v2.1/servers/{api.server_id('hot')}/migrations/{running}",
                          headers=api.headers())  # fmt: skip
    assert r.status_code == 202
    api.wait_status(api.server_id("hot"), running, "cancelled", "failed")
    after = _parse(_scrape(api).text)
    outcomes = {k: v for k, v in after.items() if k.startswith("orbit_migrations_total")}
    assert sum(outcomes.values()) == 3
    with api.db.session() as s:
        fresh = _parse("\n".join(MigrationMetrics().lines(s)))
        assert int(s.scalar(select(func.count(Migration.id))) or 0) == 3
    assert {k: v for k, v in fresh.items() if k.startswith("orbit_migrations_total")} == outcomes
