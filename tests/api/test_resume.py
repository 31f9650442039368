"""The operator's resume of a paused post-copy through the API and the CLI (the engine's own
recovery runs on real libvirt in tests/migration/test_faults_lab.py).

Each test pauses a post-copy and lets the engine's first resume be refused, with its next
automatic attempt a minute away (tests/paused.py): a migration that completes within
seconds after the request was resumed by it.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import ADMIN_PASSWORD, Api, LiveServer
from tests.helpers import run_orbit
from tests.paused import (
    long_backoff,  # noqa: F401
    migration,
    paused_after_a_refused_resume,
    resumed_by_the_operator,
    wait_for,
)

# the path is the same on both databases (tests/api/test_compute.py covers both)
pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.usefixtures("long_backoff"),
]


def test_api_resume_retries_at_once_and_says_how_long_it_was_paused(api: Api) -> None:
    headers = api.headers()
    paused = paused_after_a_refused_resume(api.client, headers, api.driver, api.conductor)
    sid, mid = paused.sid, paused.mid
    # paused_for_s: seconds since the pause (which came a post-copy stall timeout, 2 s,
    # after the cut; not since the migration began), growing with the wall clock
    first = migration(api.client, headers, sid, mid)["orbit"]
    seen_at = time.monotonic()
    assert first["paused_for_s"] is not None
    assert 0 <= first["paused_for_s"] <= seen_at - paused.cut_at - 1.5, first
    time.sleep(1.0)  # the figure under test is an elapsed time: let one second pass
    second = migration(api.client, headers, sid, mid)["orbit"]
    waited_s = time.monotonic() - seen_at
    assert waited_s - 0.2 <= second["paused_for_s"] - first["paused_for_s"] <= waited_s + 0.2
    assert second["resume_attempts"] == 1

    path = f"/v2.1/servers/{sid}/migrations/{mid}/action"
    r = api.post(path, {"resume": None})
    assert r.status_code == 202, r.text
    wait_for(lambda: resumed_by_the_operator(migration(api.client, headers, sid, mid)),
             "completed after the operator's resume", timeout_s=20)  # fmt: skip
    done = migration(api.client, headers, sid, mid)["orbit"]
    assert done["paused_for_s"] is None and done["resume_attempts"] == 2
    assert "slow" in api.driver.hosts["fake://h2"].domains

    # nothing to resume any more: 409 with the reason
    r = api.post(path, {"resume": None})
    assert r.status_code == 409, r.text
    assert "nothing to resume" in r.text


def test_cli_live_migration_resume(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10.0, trust_env=False) as http:
        user = {"name": "admin", "password": ADMIN_PASSWORD}
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
        token = http.post("/identity/v3/auth/tokens", json=body).headers["X-Subject-Token"]
        headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.65"}
        paused = paused_after_a_refused_resume(
            http, headers, live_server.driver, live_server.conductor
        )
        sid, mid = paused.sid, paused.mid
        env = {"ORBIT_URL": live_server.url, "OS_USERNAME": "admin",
               "OS_PASSWORD": ADMIN_PASSWORD}  # fmt: skip
        proc = run_orbit("live-migration-resume", "slow", str(mid), env=env)
        assert proc.returncode == 0, proc.stderr
        assert "resum" in proc.stdout + proc.stderr
        wait_for(lambda: resumed_by_the_operator(migration(http, headers, sid, mid)),
                 "completed after orbit live-migration-resume", timeout_s=20)  # fmt: skip
        # again: nothing to resume, one readable line and a non-zero exit
        again = run_orbit("live-migration-resume", "slow", str(mid), env=env)
        assert again.returncode != 0 and "nothing to resume" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
