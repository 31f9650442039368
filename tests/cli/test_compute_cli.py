"""The compute CLI: its failures (one readable line and a non-zero exit, never a traceback),
and what it shows of a migration, against orbit-server with the fake driver (``live_server``).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from tests.api.conftest import ADMIN_PASSWORD, LiveServer
from tests.helpers import assert_one_line_error, run_orbit

#: the line ``server-migration-show`` prints for auto's plan of a guest that needs post-copy
PREDICTION_LINE = re.compile(
    r"^  prediction +: (postcopy-after-\d), predicted (\d+\.\d) s"
    r"(?: \(\d+\.\d s in post-copy\))?(?:, planned \d+\.\d s in)?, took (\d+\.\d) s$",
    re.MULTILINE,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


#: the CLI's requests are the API's, tested on both databases in tests/api
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


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


def _env(server: LiveServer) -> dict[str, str]:
    return {"ORBIT_URL": server.url, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PASSWORD}


def _unreachable() -> dict[str, str]:
    return {"ORBIT_URL": f"http://127.0.0.1:{_closed_port()}", "ORBIT_TOKEN": "t"}


def _ok(*args: str, env: dict[str, str]) -> str:
    proc = run_orbit(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@SQLITE_ONLY
def test_auto_migration_of_a_hot_guest_shows_its_prediction(live_server: LiveServer) -> None:
    env = _env(live_server)
    proc = run_orbit("live-migration", "--post-copy", "--postcopy-weight", "0.5", "--wait",
                     "hot", "h2", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    waited = proc.stdout
    assert PREDICTION_LINE.search(waited), waited  # --wait ends with the same record
    # while it runs, the plan and then the switch are printed as they are decided
    live = re.findall(r"^t= *\d+\.\d\d s  ([a-z-]+): (.*)$", proc.stderr, re.MULTILINE)
    assert [action for action, _reason in live] == ["plan", "switch-to-postcopy"], proc.stderr
    assert live[0][1].startswith("plan postcopy-after-")

    listed = json.loads(_ok("server-migration-list", "hot", "--format", "json", env=env))
    assert len(listed) == 1
    mid = str(listed[0]["id"])
    shown = _ok("server-migration-show", "hot", mid, env=env)
    match = PREDICTION_LINE.search(shown)
    assert match, shown
    record: dict[str, Any] = json.loads(
        _ok("server-migration-show", "hot", mid, "--format", "json", env=env)
    )
    o = record["orbit"]
    assert record["status"] == "completed", o["error"]
    assert o["settings"]["postcopy_weight"] == 0.5  # --postcopy-weight reached the record
    plan = o["prediction"]
    assert match.group(1) == plan["strategy"]
    assert match.group(2) == f"{plan['total_s']:.1f}" and match.group(3) == f"{o['total_s']:.1f}"
    reason = next(d["reason"] for d in o["decisions"] if d["action"] == "plan")
    assert f"  plan reason       : {reason}\n" in shown
    assert shown.count(reason) == 1  # not repeated among the decisions
    assert "post-copy weight 0.5" in shown
    link = re.search(r"^  link rate +: (.+)$", shown, re.MULTILINE)
    assert link, shown
    achieved = o["transfer_rate_bytes_s"]
    expected = (
        "not measured in pre-copy"
        if achieved is None
        else f"{achieved / 1024**2:.1f} MiB/s achieved"
    )
    assert link.group(1).startswith(f"{expected} (planned with "), link[1]
    assert link.group(1).endswith(f", {plan['link_source']})"), link[1]


@SQLITE_ONLY
def test_a_precopy_migration_has_no_prediction(live_server: LiveServer) -> None:
    env = _env(live_server)
    shown = _ok("live-migration", "--wait", "vm1", "h3", env=env)
    assert "  prediction        : - (policy precopy makes no plan)\n" in shown, shown
    assert "plan reason" not in shown


@SQLITE_ONLY
def test_host_add_takes_the_link_rate(live_server: LiveServer) -> None:
    env = _env(live_server)
    host = json.loads(
        _ok("host-add", "h4", "fake://h4", "--link-mib-s", "120", "--format", "json", env=env)
    )
    assert host["link_mib_s"] == 120
    hosts = json.loads(_ok("host-list", "--format", "json", env=env))
    assert {h["name"]: h["link_mib_s"] for h in hosts}["h4"] == 120
    assert "link_mib_s" in _ok("host-list", env=env).splitlines()[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--postcopy-weight", "2"], "--postcopy-weight needs --post-copy"),
        (["--post-copy", "--postcopy-weight", "1001"], "--postcopy-weight must be 0..1000"),
        (["--post-copy", "--postcopy-weight", "-1"], "--postcopy-weight must be 0..1000"),
        (["--post-copy", "--postcopy-weight", "nan"], "--postcopy-weight must be 0..1000"),
        (["--post-copy", "--policy", "postcopy", "--postcopy-weight", "2"],
         "applies to policy auto, not 'postcopy'"),
        (["--post-copy", "--post-copy-after", "1", "--postcopy-weight", "2"],
         "applies to policy auto, not 'postcopy'"),
    ],
)  # fmt: skip
def test_bad_postcopy_weight_is_one_line(args: list[str], needle: str) -> None:
    # refused before any request: the server is unreachable, so reaching it would fail otherwise
    assert_one_line_error(run_orbit("live-migration", *args, "vm", env=_unreachable()), needle)


def test_postcopy_weight_must_be_a_number() -> None:
    proc = run_orbit("live-migration", "--post-copy", "--postcopy-weight", "heavy", "vm")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "invalid float value: 'heavy'" in proc.stderr


def test_bad_link_rate_is_one_line() -> None:
    proc = run_orbit("host-add", "h4", "fake://h4", "--link-mib-s", "0", env=_unreachable())
    assert_one_line_error(proc, "--link-mib-s must be >= 1 MiB/s, got 0")


def _record(status: str, total_s: float | None, rate: int | None) -> dict[str, Any]:
    plan = {"strategy": "postcopy-after-1", "total_s": 10.24, "postcopy_s": 3.0,
            "link_bytes_s": 50 * 1024**2, "link_source": "configured for h2",
            "made_at_s": 1.1}  # fmt: skip
    return {
        "status": status,
        "orbit": {
            "settings": {"migration_policy": "auto"},
            "prediction": plan,
            "total_s": total_s,
            "transfer_rate_bytes_s": rate,
        },
    }


def test_prediction_and_link_lines_while_running_and_after() -> None:
    from orbit.cli.compute import _link_line, prediction_line

    running = _record("running-precopy", None, None)
    assert prediction_line(running) == (
        "postcopy-after-1, predicted 10.2 s (3.0 s in post-copy), planned 1.1 s in, took -"
    )
    assert _link_line(running["orbit"]) == (
        "not measured in pre-copy (planned with 50.0 MiB/s, configured for h2)"
    )
    done = _record("completed", 9.81, 47 * 1024**2 + 512 * 1024)
    assert prediction_line(done).endswith("took 9.8 s")
    assert _link_line(done["orbit"]).startswith("47.5 MiB/s achieved (planned with 50.0 MiB/s")
    assert prediction_line(_record("failed", 4.0, None)).endswith("took 4.0 s (failed)")
    unmeasured = _record("running-precopy", None, None)
    unmeasured["orbit"]["prediction"] = None
    assert prediction_line(unmeasured) == "- (not measured yet)"
