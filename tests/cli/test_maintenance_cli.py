"""``orbit host-disable``, ``host-enable``, ``host-drain`` and the drain commands, against
orbit-server with the fake driver (``live_server``)."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import ADMIN_PASSWORD, H1, LiveServer
from tests.helpers import assert_one_line_error, run_orbit

#: the API's drains run on both databases in tests/api/test_drains.py
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _env(server: LiveServer) -> dict[str, str]:
    return {"ORBIT_URL": server.url, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PASSWORD}


def test_disable_enable_and_drain_a_host(live_server: LiveServer) -> None:
    env = _env(live_server)
    proc = run_orbit("host-disable", "h3", "--reason", "fan replaced", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "disabled" in proc.stdout and "fan replaced" in proc.stdout
    hvs = json.loads(run_orbit("hypervisor-list", "--format", "json", env=env).stdout)
    assert {h["hypervisor_hostname"]: h["status"] for h in hvs}["h3"] == "disabled"

    # the plan: nothing changes, h3 (disabled) is not a destination
    proc = run_orbit("host-drain", "h1", "--post-copy", "--plan", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plan of h1: planned"), proc.stdout
    assert "hot" in proc.stdout and "vm1" in proc.stdout and "h3" not in proc.stdout

    proc = run_orbit("host-enable", "h3", env=env)
    assert proc.returncode == 0 and "enabled" in proc.stdout, proc.stderr

    proc = run_orbit("host-drain", "h1", "--post-copy", "--wait", "--to", "h2,h3", env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "drain 1 of h1: completed" in proc.stdout, proc.stdout
    assert "hot: moved to h2" in proc.stderr and "vm1: moved to h" in proc.stderr
    assert live_server.driver.hosts[H1].domains == {}
    drains = json.loads(run_orbit("drain-list", "--format", "json", env=env).stdout)
    assert [(d["id"], d["status"], d["counts"]["moved"]) for d in drains] == [(1, "completed", 2)]
    shown = run_orbit("drain-show", "1", env=env)
    assert shown.returncode == 0 and "moved to" in shown.stdout
    assert_one_line_error(run_orbit("drain-cancel", "1", env=env), "already completed")


def test_maintenance_errors_are_one_line(live_server: LiveServer) -> None:
    env = _env(live_server)
    assert_one_line_error(run_orbit("host-disable", "nope", env=env), "no host named 'nope'")
    assert_one_line_error(run_orbit("host-drain", "h1", "--to", "h9", env=env), "h9")
    assert_one_line_error(run_orbit("drain-show", "42", env=env), "drain 42 could not be found")
