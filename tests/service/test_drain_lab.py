"""A host drain on the real lab survives a link cut and an orbit-server kill.

orbit-server runs as a separate process (tests/service/test_server_lab.py's ``server``
fixture); h1 holds a guest that rewrites 200 MiB as fast as it can and a quiet one. The
drain moves them to h2 one at a time (the hosts' limit), hot first (the longer). While the
hot guest is in post-copy, h2's link is cut until ORBIT pauses it; right after the link
returns, orbit-server is killed (SIGKILL) and started again. The drain must still
complete, with both guests on h2 and every page of their memory intact.
"""

from __future__ import annotations

import time
from typing import Any

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import list_domains
from orbit.lab.network import Shaping
from tests.service.test_server_lab import (  # noqa: F401 - fixtures used by name
    HOT,
    RECORD_TIMEOUT_S,
    OrbitServer,
    server,
    shaped,
)

QUIET = GuestSpec("quiet", memory_mib=128, wss_mib=16, rate_mib_s=2)
POLL_S = 0.5


def _drain(srv: OrbitServer, drain_id: int) -> dict[str, Any]:
    d: dict[str, Any] = srv.orbit_json("drain-show", str(drain_id))
    return d


def _until(what: str, check: Any) -> Any:
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)
    return value


def _migration_status(srv: OrbitServer, name: str, mid: int) -> str:
    return str(srv.orbit_json("server-migration-show", name, str(mid))["status"])


def test_drain_survives_a_link_cut_and_an_orbit_server_kill(
    lab: Lab,
    guests: Guests,
    server: OrbitServer,  # noqa: F811 - the imported fixture
    shaped: None,  # noqa: F811 - the imported fixture
) -> None:
    guests.start("h1", HOT)
    guests.start("h1", QUIET)

    def listed() -> bool:
        active = {s["name"] for s in server.orbit_json("list") if s["status"] == "ACTIVE"}
        return active == {"hot", "quiet"}

    _until("both guests listed", listed)
    started = server.orbit_json("host-drain", "h1", "--post-copy")
    drain_id = int(started["id"])
    assert [i["name"] for i in started["items"]] == ["hot", "quiet"]  # the longer first
    hot = _until("hot's migration under way", lambda: next(
        (i for i in _drain(server, drain_id)["items"]
         if i["name"] == "hot" and i["migration_id"]), None))  # fmt: skip
    mid = hot["migration_id"]
    _until("hot in post-copy", lambda: _migration_status(server, "hot", mid) == "running-postcopy")
    lab.cut("h2")
    try:  # cut until ORBIT has paused the broken post-copy
        _until("hot paused", lambda: _migration_status(server, "hot", mid) == "postcopy-paused")
    finally:
        lab.restore("h2")
    before_kill = {i["name"]: i["state"] for i in _drain(server, drain_id)["items"]}
    assert before_kill["quiet"] == "pending", before_kill  # the restarted server starts it
    server.kill()
    lab.shape("h1", Shaping())  # the rest at full speed: the test is about the kill
    server.start()
    done = _until("the drain to end", lambda: (d := _drain(server, drain_id))["status"] in (
        "completed", "incomplete", "cancelled") and d)  # fmt: skip
    assert done["status"] == "completed", done["items"]
    assert [(i["name"], i["state"]) for i in done["items"]] == [
        ("hot", "moved"),
        ("quiet", "moved"),
    ]
    record = server.orbit_json("server-migration-show", "hot", str(hot["migration_id"]))
    actions = [d["action"] for d in record["orbit"]["decisions"]]
    assert "pause-postcopy" in actions and "resume-postcopy" in actions, actions
    assert list_domains(lab.host("h1").uri) == {}
    for name in ("hot", "quiet"):
        assert list_domains(lab.host("h2").uri)[name] == "running"
        assert guests.wait_verified("h2", name).errors == 0
