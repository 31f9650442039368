"""The compute CLI's failures: one readable line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

from tests.helpers import assert_one_line_error, run_orbit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_no_credentials() -> None:
    empty = {"ORBIT_URL": "", "OS_CLOUD": "", "OS_AUTH_URL": ""}
    assert_one_line_error(run_orbit("list", env=empty), "no credentials")


def test_unreachable_server() -> None:
    env = {"ORBIT_URL": f"http://127.0.0.1:{_closed_port()}", "ORBIT_TOKEN": "t"}
    assert_one_line_error(run_orbit("hypervisor-list", env=env), "cannot reach")


def test_usage_errors_exit_2() -> None:
    proc = run_orbit("live-migration")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_orbit("live-migration", "--policy", "fast", "vm")
    assert proc.returncode == 2 and "fast" in proc.stderr


def test_unknown_cloud(tmp_path: object) -> None:
    env = {"OS_CLOUD": "nowhere-cloud-xyz", "ORBIT_URL": ""}
    assert_one_line_error(run_orbit("list", env=env), "nowhere-cloud-xyz")
