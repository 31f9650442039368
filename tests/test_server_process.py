"""orbit-server as a process: fake hosts from the command line (for demos and the
control-plane benchmark), and SQLite's one-instance rule (issue 12)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers import ServerProcess

PASSWORD = "process-root-pass-5"
ENV = {"ORBIT_ADMIN_PASSWORD": PASSWORD, "ORBIT_SYNC_INTERVAL_S": "0.5"}


def _token(url: str) -> dict[str, str]:
    user = {"name": "admin", "password": PASSWORD}
    r = httpx.post(f"{url}/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": user}}}})  # fmt: skip
    assert r.status_code == 201, r.text
    return {"X-Auth-Token": r.headers["X-Subject-Token"], "OpenStack-API-Version": "compute 2.65"}


def test_fake_hosts_from_the_command_line_and_one_instance_per_sqlite_file(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path}/orbit.db"
    first = ServerProcess(tmp_path, "--database-url", db, "--driver", "fake",
                          "--fake-hosts", "3", "--fake-vms", "2", env=ENV)  # fmt: skip
    try:
        first.wait_ready()
        headers = _token(first.url)
        hvs = httpx.get(f"{first.url}/v2.1/os-hypervisors", headers=headers).json()
        assert sorted(h["hypervisor_hostname"] for h in hvs["hypervisors"]) == ["h1", "h2", "h3"]

        def names() -> list[str]:
            r = httpx.get(f"{first.url}/v2.1/servers", headers=headers)
            return sorted(str(s["name"]) for s in r.json()["servers"])

        deadline = time.monotonic() + 10
        while len(names()) < 6:  # the first sync
            assert time.monotonic() < deadline, names()
            time.sleep(0.1)
        assert names() == ["vm-h1-1", "vm-h1-2", "vm-h2-1", "vm-h2-2", "vm-h3-1", "vm-h3-2"]
        # a second orbit-server on the same SQLite file: refused, one line, exit 1
        second = ServerProcess(tmp_path, "--database-url", db, "--driver", "fake", env=ENV)
        assert second.proc.wait(30) == 1
        said = second.log.read_text().strip().splitlines()
        assert len(said) == 1 and "in use by orbit-server (pid" in said[0], said
        assert str(first.proc.pid) in said[0]
    finally:
        first.stop()
    # fake hosts need the fake driver
    wrong = ServerProcess(tmp_path, "--database-url", db, "--driver", "libvirt",
                          "--fake-hosts", "2", env=ENV)  # fmt: skip
    assert wrong.proc.wait(30) == 1
    assert "need --driver fake" in wrong.log.read_text()


def test_a_weak_admin_password_is_refused_at_start(tmp_path: Path) -> None:
    """``ORBIT_ADMIN_PASSWORD`` must pass the password policy: orbit-server says why in one
    line (after the schema's log lines) and exits 1, with no traceback."""
    weak = ServerProcess(tmp_path, "--database-url", f"sqlite:///{tmp_path}/orbit.db",
                         "--driver", "fake", env={"ORBIT_ADMIN_PASSWORD": "x"})  # fmt: skip
    assert weak.proc.wait(30) == 1
    said = weak.log.read_text()
    last = said.strip().splitlines()[-1]
    assert last.startswith("orbit-server: $ORBIT_ADMIN_PASSWORD is refused"), said
    assert "at least 12 characters" in last and "Traceback" not in said


def test_start_up_objects_are_exempt_from_the_garbage_collector() -> None:
    """What start-up built is frozen (a full collection walked ~170,000 objects, 107-125 ms
    with the GIL held, in the middle of a burst), and young objects are collected ten
    times less often; put back afterwards (this is the test process)."""
    import gc

    from orbit.server.main import GC_GEN0_THRESHOLD, _settle_garbage_collector

    before = gc.get_threshold()
    try:
        _settle_garbage_collector()
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
