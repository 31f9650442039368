"""The stock ``openstack`` CLI and ORBIT's ``openstack orbit`` plugin on the real lab.

orbit-server runs as a separate process (SQLite, libvirt driver) with the lab's two hosts
registered (tests/service/test_server_lab.py's ``server`` fixture); each ``openstack``
command runs in a process of its own with a clouds.yaml, as an operator would run it
(tests/osc.py). Real VMs running the test guest
move between real libvirtd instances, and the guest checks its memory afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import list_domains
from tests.osc import Osc
from tests.service.test_server_lab import (  # noqa: F401 - fixtures used by name
    ADMIN_PASSWORD,
    FINAL,
    HOT,
    RECORD_TIMEOUT_S,
    OrbitServer,
    server,
    shaped,
)

QUIET = GuestSpec("quiet", memory_mib=128, wss_mib=16, rate_mib_s=4)
LISTED_TIMEOUT_S = 60.0
POLL_S = 0.5


def _clouds_yaml(path: Path, srv: OrbitServer) -> Path:
    path.write_text(
        f"""\
clouds:
  orbit:
    auth_type: password
    auth:
      auth_url: {srv.url}/identity
      username: admin
      password: {ADMIN_PASSWORD}
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
""",
        encoding="utf-8",
    )
    return path


def _until(what: str, check: Any, timeout_s: float = RECORD_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)
    return value


def _status(srv: OrbitServer, vm: str, migration: int) -> str:
    """Polled with ORBIT's own CLI: it starts in a fraction of ``openstack``'s ~2 s."""
    return str(srv.orbit_json("server-migration-show", vm, str(migration))["status"])


def _only_on(lab: Lab, guests: Guests, host: str, name: str) -> None:
    running = [h.name for h in lab.hosts() if list_domains(h.uri).get(name) == "running"]
    assert running == [host], running
    assert guests.wait_verified(host, name).errors == 0


def test_openstack_cli_and_plugin_move_real_vms(
    lab: Lab,
    guests: Guests,
    server: OrbitServer,  # noqa: F811 - the imported fixture
    shaped: None,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    with Osc(_clouds_yaml(tmp_path / "clouds.yaml", server)) as osc:
        _move_real_vms(lab, guests, server, osc)


def _move_real_vms(lab: Lab, guests: Guests, server: OrbitServer, osc: Osc) -> None:  # noqa: F811
    guests.start("h1", HOT)
    guests.start("h1", QUIET)
    _until("both guests listed ACTIVE", lambda: {
        s["name"] for s in server.orbit_json("list") if s["status"] == "ACTIVE"
    } == {"hot", "quiet"}, LISTED_TIMEOUT_S)  # fmt: skip
    assert {s["Name"] for s in osc.json("server", "list")} == {"hot", "quiet"}
    assert [h["Hypervisor Hostname"] for h in osc.json("hypervisor", "list")] == ["h1", "h2"]
    assert osc.json("hypervisor", "show", "h2")["state"] == "up"

    # a disabled host is refused, then enabled again
    osc.ok("compute", "service", "set", "--disable", "--disable-reason", "kernel update",
           "h2", "nova-compute")  # fmt: skip
    line = osc.fails("server", "migrate", "--live-migration", "--host", "h2", "--wait", "quiet")
    assert "h2 is disabled (kernel update)" in line, line
    osc.ok("compute", "service", "set", "--enable", "h2", "nova-compute")

    # the plugin: post-copy of a guest that rewrites 200 MiB as fast as it can
    done = osc.json("orbit", "live-migrate", "--post-copy", "--wait", "hot", "h2")
    assert done["status"] == "completed" and done["dest"] == "h2", done
    assert done["switch_at_s"] is not None and done["postcopy_requests"] > 0, done
    _only_on(lab, guests, "h2", "hot")

    # the stock CLI: a targeted live migration, listed and shown
    osc.ok("server", "migrate", "--live-migration", "--host", "h2", "--wait", "quiet")
    _only_on(lab, guests, "h2", "quiet")
    listed = osc.json("server", "migration", "list", "--server", "quiet")
    assert [(m["Source Compute"], m["Dest Compute"], m["Status"]) for m in listed] == [
        ("h1", "h2", "completed")
    ]
    shown = osc.json("server", "migration", "show", "quiet", listed[0]["UUID"])
    assert shown["Status"] == "completed" and shown["Memory Remaining Bytes"] == 0

    # pre-copy that cannot converge, forced; meanwhile a second migration from h2 queues
    # (one outgoing migration per host) and is aborted before it starts
    back = osc.json("orbit", "live-migrate", "--post-copy", "--post-copy-after", "100",
                    "hot", "h1")  # fmt: skip
    _until("hot in pre-copy", lambda: _status(server, "hot", back["id"]) == "running-precopy")
    osc.ok("server", "migrate", "--live-migration", "--host", "h1", "quiet")
    queued = osc.json("server", "migration", "list", "--server", "quiet")[0]
    assert queued["Status"] == "queued", queued
    osc.ok("server", "migration", "abort", "quiet", str(queued["Id"]))
    assert _status(server, "quiet", queued["Id"]) == "cancelled"
    osc.ok("server", "migration", "force", "complete", "hot", str(back["id"]))
    final = _until(
        "hot's migration to end",
        lambda: (s := _status(server, "hot", back["id"])) in FINAL and s,
    )
    assert final == "completed"
    forced = osc.json("orbit", "migration", "show", "hot", str(back["id"]))
    assert "operator: switch-to-postcopy" in forced["decisions"], forced
    _only_on(lab, guests, "h1", "hot")
    _only_on(lab, guests, "h2", "quiet")
