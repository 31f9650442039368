"""The stock ``openstack`` CLI (python-openstackclient, a process per command: tests/osc.py;
a clouds.yaml) and
ORBIT's ``openstack orbit`` plugin against orbit-server over HTTP on 127.0.0.1.

The hypervisors are the fake driver's here: the plugin's commands and errors, and novaclient's
``host-evacuate-live``. The stock verbs (targeted migration, migration list/show/abort/force
complete, service disable/enable, hypervisors) run on the real lab in
tests/service/test_openstack_lab.py. SQLite only: the API's behaviour on PostgreSQL is
covered by the other API tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from orbit.db.models import Migration
from tests.api.conftest import ADMIN_PASSWORD, H1, LiveServer
from tests.api.test_stock_clients import _clouds_yaml, _wait
from tests.osc import Osc

CLI_TIMEOUT_S = 60.0

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def osc(live_server: LiveServer, tmp_path: Path) -> Iterator[Osc]:
    with Osc(_clouds_yaml(tmp_path / "clouds.yaml", live_server)) as cli:
        yield cli


def test_the_orbit_plugin(live_server: LiveServer, osc: Osc) -> None:
    done = osc.json("orbit", "live-migrate", "--post-copy", "--wait", "hot", "h2")
    assert done["status"] == "completed" and done["dest"] == "h2"
    assert done["policy"] == "auto" and done["post_copy"] is True
    assert done["switch_at_s"] is not None  # the hot guest needed post-copy
    assert done["memory_sent_mib"] > 0 and "plan" not in done["decisions"].split(":")[0]
    rows = osc.json("orbit", "migration", "list", "--server", "hot")
    assert [(r["id"], r["status"]) for r in rows] == [(done["id"], "completed")]
    assert osc.json("orbit", "migration", "list", "--host", "h3") == []
    value = osc.ok("orbit", "migration", "show", "hot", str(done["id"]), "-f", "value",
                   "-c", "status")  # fmt: skip
    assert value.strip() == "completed"
    # bad input: one line, exit code 1, nothing started
    line = osc.fails("orbit", "live-migrate", "--postcopy-weight", "5", "vm1")
    assert "--postcopy-weight needs --post-copy" in line
    assert "no server with id or name 'nope'" in osc.fails("orbit", "live-migrate", "nope")
    # the drain, planned and then run: vm1 is the only VM left on h1
    plan = osc.json("orbit", "host", "drain", "--plan", "--post-copy", "h1")
    assert [(r["name"], r["state"]) for r in plan] == [("vm1", "pending")]
    drained = osc.json("orbit", "host", "drain", "--wait", "--to", "h3", "h1")
    assert [(r["name"], r["dest"], r["state"]) for r in drained] == [("vm1", "h3", "moved")]
    assert "host nope is not registered" in osc.fails("orbit", "host", "drain", "nope")
    line = osc.fails("orbit", "migration", "resume", "hot", str(done["id"]))
    assert "HTTP 409" in line, line
    assert [r["dest"] for r in osc.json("orbit", "migration", "list", "--server", "vm1")] == ["h3"]


def test_nova_host_evacuate_live_empties_a_host(live_server: LiveServer) -> None:
    """novaclient's ``host-evacuate-live`` finds the host's servers through
    os-hypervisors (by name pattern, with servers) and live-migrates each of them."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OS_")},
        "OS_AUTH_URL": live_server.auth_url,
        "OS_USERNAME": "admin",
        "OS_PASSWORD": ADMIN_PASSWORD,
        "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }
    nova = str(Path(sys.executable).with_name("nova"))
    r = subprocess.run(
        [nova, "host-evacuate-live", "--strict", "h1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    accepted = [line for line in r.stdout.splitlines() if "| True" in line]
    assert len(accepted) == 2, r.stdout  # vm1 and hot, each "Live Migration Accepted: True"

    # both were asked for; h1 sends one at a time. hot dirties faster than its link sends
    # and novaclient asks for no post-copy: it stays in pre-copy, migrating, not lost
    def records() -> dict[str, Migration]:
        with live_server.db.session() as s:
            rows = s.scalars(select(Migration).options(joinedload(Migration.server)))
            return {m.server.name: m for m in rows}

    _wait(lambda: set(records()) == {"hot", "vm1"}, "both migrations recorded")
    _wait(lambda: records()["hot"].status == "running-precopy" or records()["vm1"].status
          == "completed", "the first migration under way")  # fmt: skip
    hot = records()["hot"]
    if hot.status == "running-precopy":  # the operator gives up on hot: vm1 then goes
        with live_server.db.session() as s:
            live_server.conductor.abort(s, s.get_one(Migration, hot.id))
    _wait(lambda: records()["vm1"].status == "completed", "vm1 moved off h1")
    _wait(lambda: records()["hot"].phase.is_final, "hot's migration ended")
    assert sorted(live_server.driver.hosts[H1].domains) == ["hot"]
