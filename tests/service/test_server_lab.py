"""orbit-server on the real lab: the CLI migrates a real VM, and a SIGKILL loses nothing.

orbit-server runs as a separate process (SQLite, libvirt driver) on 127.0.0.1; the CLI
talks to it over HTTP like an operator's would.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import list_domains
from orbit.lab.network import Shaping
from orbit.virt.driver import Owner
from orbit.virt.libvirt_driver import LibvirtDriver
from tests.conftest import require_root
from tests.helpers import run_orbit

ADMIN_PASSWORD = "lab-root-secret-7"
START_TIMEOUT_S = 30.0
RECORD_TIMEOUT_S = 120.0
HOT = GuestSpec("hot", memory_mib=256, wss_mib=200, rate_mib_s=0)
#: orbit-server's stall timeout here: a cut link pauses post-copy after this long
STALL_S = 4.0
FINAL = ("completed", "failed", "cancelled", "error")
#: issue 12: another instance takes a dead one's migrations over within this
TAKEOVER_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrbitServer:
    """An orbit-server process this test started (and only ends by its PID)."""

    def __init__(self, workdir: Path, db_url: str | None = None, lease_s: float = 6.0) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url or f"sqlite:///{workdir}/orbit.db"
        self.lease_s = lease_s
        self.log = workdir / f"orbit-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {"ORBIT_URL": self.url, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PASSWORD}

    def start(self) -> None:
        env = {
            **os.environ,
            "ORBIT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ORBIT_SYNC_INTERVAL_S": "1",
            "ORBIT_STALL_TIMEOUT_S": str(STALL_S),
            "ORBIT_LEASE_S": str(self.lease_s),
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orbit.server.main", "--bind", f"127.0.0.1:{self.port}",
                 "--database-url", self.db_url, "--driver", "libvirt"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"orbit-server did not start: {self.log}"
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def orbit(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        return run_orbit(*args, env=self.env, timeout_s=timeout_s)

    def orbit_json(self, *args: str) -> Any:
        proc = self.orbit(*args, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A three-host lab for this module: h3 is the host that freezes (issue 12)."""
    require_root()
    the_lab = Lab.from_env()
    with the_lab.session(3):
        yield the_lab


@pytest.fixture
def server(lab: Lab, tmp_path: Path) -> Iterator[OrbitServer]:
    srv = OrbitServer(tmp_path)
    srv.start()
    try:
        for host in lab.hosts():
            proc = srv.orbit("host-add", host.name, host.uri,
                             "--migration-address", host.migration_uri)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def shaped(lab: Lab) -> Iterator[None]:
    lab.shape("h1", Shaping(rate="400mbit"))
    yield
    lab.shape("h1", Shaping())


def _wait_listed(srv: OrbitServer, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        servers = srv.orbit_json("list")
        found = [s for s in servers if s["name"] == name and s["status"] == "ACTIVE"]
        if found:
            return dict(found[0])
        assert time.monotonic() < deadline, f"{name} never listed: {servers}"
        time.sleep(0.5)


def _migration(srv: OrbitServer, name: str) -> dict[str, Any]:
    ms = srv.orbit_json("server-migration-list", name)
    assert ms, f"no migration for {name}"
    return dict(ms[0])


def test_cli_live_migration_post_copy_wait(
    lab: Lab, guests: Guests, server: OrbitServer, shaped: None
) -> None:
    guests.start("h1", HOT)
    _wait_listed(server, "hot")
    # its project, written in the domain's metadata by libvirt, goes with it
    assigned = server.orbit("server-assign-project", "hot", "admin")
    assert assigned.returncode == 0, assigned.stderr
    project_id = server.orbit_json("show", "hot")["tenant_id"]
    assert project_id and project_id in assigned.stdout
    proc = server.orbit("live-migration", "--post-copy", "--wait", "hot", "h2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "status            : completed" in proc.stdout, proc.stdout
    assert "remaining" in proc.stderr  # the progress lines
    record = _migration(server, "hot")
    orbit = record["orbit"]
    assert record["status"] == "completed" and record["dest_compute"] == "h2"
    assert orbit["switch_at_s"] is not None and orbit["postcopy_requests"] > 0
    switch = [d for d in orbit["decisions"] if d["action"] == "switch-to-postcopy"]
    assert switch and switch[0]["reason"], orbit["decisions"]
    assert list_domains(lab.host("h2").uri) == {"hot": "running"}
    assert guests.wait_verified("h2", "hot").errors == 0
    shown = server.orbit_json("show", "hot")
    assert shown["OS-EXT-SRV-ATTR:host"] == "h2" and shown["tenant_id"] == project_id
    owner = LibvirtDriver().domain_info(lab.host("h2").uri, "hot").owner
    assert owner == Owner(project_id, "admin")


def test_sigkill_during_a_migration_loses_nothing(
    lab: Lab, guests: Guests, server: OrbitServer, shaped: None
) -> None:
    guests.start("h1", HOT)
    _wait_listed(server, "hot")
    # post-copy after 2 passes over a shaped link: several seconds of pre-copy first
    proc = server.orbit("live-migration", "--post-copy", "--post-copy-after", "2", "hot", "h2")
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while _migration(server, "hot")["status"] != "running-precopy":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    server.kill()
    server.start()
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while (record := _migration(server, "hot"))["status"] not in ("completed", "failed",
                                                                 "cancelled", "error"):  # fmt: skip
        assert time.monotonic() < deadline, record
        time.sleep(0.5)
    # libvirt's peer-to-peer job outlives the process that asked for it; the restarted
    # server adopts it, applies the policy (post-copy after 2 passes) and completes it
    assert record["status"] == "completed", record["orbit"]["error"]
    switch = [d for d in record["orbit"]["decisions"] if d["action"] == "switch-to-postcopy"]
    assert switch and "post_copy_after_iterations=2" in switch[0]["reason"], switch
    _assert_only_on(lab, guests, "h2", "hot")
    log = server.log.read_text()
    assert "adopting migration" in log


def _wait_status(srv: OrbitServer, name: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while (record := _migration(srv, name))["status"] not in statuses:
        assert record["status"] not in FINAL or record["status"] in statuses, record
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    return record


def _assert_only_on(lab: Lab, guests: Guests, host: str, name: str) -> None:
    running = [h.name for h in lab.hosts() if list_domains(h.uri).get(name) == "running"]
    assert running == [host]
    assert guests.wait_verified(host, name).errors == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sigkill_of_the_instance_driving_a_postcopy_another_takes_over(
    lab: Lab, guests: Guests, shaped: None, db_url: str, tmp_path: Path
) -> None:
    """Two orbit-server instances on one PostgreSQL: the one driving a post-copy is
    SIGKILLed; the other claims the migration when its lease runs out (<= 10 s) and
    completes it, with every page of the guest intact."""
    # a 2 s lease (the default is 6 s): the take-over comes within ~3 s
    first = OrbitServer(tmp_path, db_url, lease_s=2.0)
    second = OrbitServer(tmp_path, db_url, lease_s=2.0)
    try:
        first.start()
        for host in lab.hosts():
            proc = first.orbit("host-add", host.name, host.uri,
                               "--migration-address", host.migration_uri)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        second.start()
        guests.start("h1", HOT)
        _wait_listed(second, "hot")
        proc = first.orbit("live-migration", "--post-copy", "--post-copy-after", "0",
                           "hot", "h2")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        owner = _wait_status(first, "hot", "running-postcopy")["orbit"]["owner"]
        driving, other = (first, second) if f":{first.pid}:" in owner else (second, first)
        assert f":{driving.pid}:" in owner, owner
        driving.kill()
        killed_at = time.monotonic()
        while f":{other.pid}:" not in str(_migration(other, "hot")["orbit"]["owner"]):
            assert time.monotonic() - killed_at < TAKEOVER_S, _migration(other, "hot")
            time.sleep(0.2)
        print(f"take-over {time.monotonic() - killed_at:.1f} s after the SIGKILL")
        record = _wait_status(other, "hot", *FINAL)
        assert record["status"] == "completed", record["orbit"]["error"]
        _assert_only_on(lab, guests, "h2", "hot")
        assert "adopting migration" in other.log.read_text()
    finally:
        first.stop()
        second.stop()


def test_sigkill_while_postcopy_is_paused(lab: Lab, guests: Guests, server: OrbitServer) -> None:
    lab.shape("h1", Shaping(rate="100mbit"))  # a long post-copy, to cut in the middle of
    try:
        guests.start("h1", HOT)
        _wait_listed(server, "hot")
        proc = server.orbit("live-migration", "--post-copy", "--post-copy-after", "0",
                            "hot", "h2")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        _wait_status(server, "hot", "running-postcopy")
        lab.cut("h2")
        paused = _wait_status(server, "hot", "postcopy-paused")
        assert any(d["action"] == "pause-postcopy" for d in paused["orbit"]["decisions"])
        server.kill()
        lab.restore("h2")
        lab.shape("h1", Shaping())  # the rest at full speed: the test is about the kill
        server.start()
        record = _wait_status(server, "hot", *FINAL)
        assert record["status"] == "completed", record["orbit"]["error"]
        assert any(d["action"] == "resume-postcopy" for d in record["orbit"]["decisions"])
        _assert_only_on(lab, guests, "h2", "hot")
        assert server.log.read_text().count("adopting migration") >= 1
    finally:
        lab.restore("h2")
        lab.shape("h1", Shaping())


def _samples(srv: OrbitServer, record: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False) as http:
        r = http.post(
            "/identity/v3/auth/tokens",
            json={"auth": {"identity": {"methods": ["password"], "password": {
                "user": {"name": "admin", "password": ADMIN_PASSWORD}}}}},
        )  # fmt: skip
        token = r.headers["X-Subject-Token"]
        path = f"/v2.1/servers/{record['server_uuid']}/migrations/{record['id']}/samples"
        samples = http.get(path, headers={"X-Auth-Token": token}).json()["samples"]
    return list(samples)


def test_a_frozen_third_host_does_not_delay_a_migration(
    lab: Lab, guests: Guests, server: OrbitServer, shaped: None
) -> None:
    """h3's libvirtd is stopped (SIGSTOP: its port still accepts, it never answers). A
    migration h1 -> h2 is sampled every 250 ms without a gap over 1 s, and completes; the
    API answers meanwhile."""
    h3 = next(h for h in lab.hosts() if h.name == "h3")
    assert h3.libvirtd_pid is not None
    guests.start("h1", HOT)
    _wait_listed(server, "hot")
    os.kill(h3.libvirtd_pid, signal.SIGSTOP)
    try:
        proc = server.orbit("live-migration", "--post-copy", "--post-copy-after", "0",
                            "hot", "h2")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        record = _wait_status(server, "hot", *FINAL)
        assert record["status"] == "completed", record["orbit"]["error"]
        times = [s["elapsed_s"] for s in _samples(server, record)]
        assert len(times) >= 4, times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= 1.0, gaps
    finally:
        os.kill(h3.libvirtd_pid, signal.SIGCONT)
    _assert_only_on(lab, guests, "h2", "hot")
