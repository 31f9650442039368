"""The lab's life cycle on the real machine: up, status, down (also after a crash)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orbit.lab import network
from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import connection
from orbit.lab.system import pid_alive, pids_in_netns
from tests.helpers import assert_one_line_error, run_orbit


def _process_name(pid: int) -> str:
    """The process's name; "" if it ended meanwhile (listed, then gone before it was read)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _assert_nothing_left(names: list[str], pids: list[int]) -> None:
    for pid in pids:
        assert not pid_alive(pid), f"process {pid} of the lab still runs"
        # and it is gone from the process table, not a zombie waiting for PID 1
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} of the lab is not reaped"
    for name in names:
        assert not network.netns_exists(name), f"namespace {name} remains"
        assert not network.link_exists(network.veth_name(name)), f"veth of {name} remains"
    assert not network.link_exists(network.BRIDGE), "bridge remains"


def test_up_status_down_leaves_nothing(no_lab: Lab) -> None:
    proc = run_orbit("lab", "up", "--hosts", "3")
    assert proc.returncode == 0, proc.stderr
    try:
        statuses = no_lab.status()
        assert [s.name for s in statuses] == ["h1", "h2", "h3"]
        assert [s.address for s in statuses] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
        status = run_orbit("lab", "status", "--format", "json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["accelerator"] == no_lab.accelerator()[0] and doc["accelerator_why"]
        if os.environ.get("ORBIT_LAB_ACCEL"):
            assert doc["accelerator"] == os.environ["ORBIT_LAB_ACCEL"]
        elif not Path("/dev/kvm").exists():
            assert doc["accelerator"] == "tcg"
        for s in statuses:
            assert s.answers and s.libvirtd_alive and s.link_up
            with connection(s.uri) as conn:
                assert conn.getLibVersion() >= 9_000_000
                # every host is a distinct machine to libvirt (else it refuses to migrate)
            assert s.domains == {}
        uuids = set()
        for s in statuses:
            with connection(s.uri) as conn:
                uuids.add(conn.getCapabilities().split("<uuid>")[1].split("</uuid>")[0])
        assert len(uuids) == 3

        Guests(no_lab).start("h2", GuestSpec("lifecycle", memory_mib=128, wss_mib=8, rate_mib_s=1))
        pids = [p for h in ("h1", "h2", "h3") for p in pids_in_netns(h)]
        names = {_process_name(p) for p in pids}
        assert "libvirtd" in names and any(n.startswith("qemu") for n in names), names
    finally:
        down = run_orbit("lab", "down")
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(["h1", "h2", "h3"], pids)
    assert not no_lab.is_up()
    assert run_orbit("lab", "down").returncode == 0  # idempotent


def test_down_cleans_up_after_a_crashed_daemon(no_lab: Lab) -> None:
    """libvirtd killed with SIGKILL while its QEMU runs: down still removes everything."""
    no_lab.up(2)
    try:
        Guests(no_lab).start("h1", GuestSpec("orphan", memory_mib=128, wss_mib=8, rate_mib_s=1))
        pids = pids_in_netns("h1") + pids_in_netns("h2")
        daemon_pid = no_lab.host("h1").libvirtd_pid
        assert daemon_pid is not None
        os.kill(daemon_pid, signal.SIGKILL)
        qemu = [p for p in pids if _process_name(p).startswith("qemu")]
        assert qemu and all(pid_alive(p) for p in qemu)  # the guest outlives its daemon
    finally:
        # a fresh Lab object, as a new process after a crash would have
        Lab(no_lab.lab_dir).down()
    _assert_nothing_left(["h1", "h2"], pids)


def test_up_refuses_a_bad_host_count(no_lab: Lab) -> None:
    assert_one_line_error(run_orbit("lab", "up", "--hosts", "0"), "--hosts must be between")
    assert not no_lab.is_up() and not network.link_exists(network.BRIDGE)


def test_commands_need_a_lab(no_lab: Lab) -> None:
    for args in (("lab", "status"), ("lab", "cut", "h1"), ("lab", "guest", "heartbeat", "nothing")):
        assert_one_line_error(run_orbit(*args), "no lab is up")


def test_bad_accelerator_override_is_refused(no_lab: Lab) -> None:
    proc = run_orbit("lab", "up", env={"ORBIT_LAB_ACCEL": "xen"})
    assert_one_line_error(proc, "ORBIT_LAB_ACCEL must be 'kvm' or 'tcg'")
    assert not no_lab.is_up() and not network.link_exists(network.BRIDGE)


def test_accelerator_override_skips_the_probe(no_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBIT_LAB_ACCEL", "tcg")
    assert Guests(no_lab).probe_accelerator("h1") == ("tcg", "forced by ORBIT_LAB_ACCEL")
    assert no_lab.accelerator() == ("tcg", "forced by ORBIT_LAB_ACCEL")


def test_output_to_a_closed_pipe_is_no_traceback(no_lab: Lab) -> None:
    """``orbit lab status | head -0``: the reader is gone before orbit writes."""
    no_lab.up(1)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orbit.cli.main", "lab", "status"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # long before the interpreter has even imported orbit
        stderr = proc.stderr.read().decode()
        proc.wait(60)
    finally:
        no_lab.down()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert proc.returncode == 1
