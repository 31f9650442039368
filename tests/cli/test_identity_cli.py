"""``orbit project-create``, ``user-create``, ``role-add`` ... against a live orbit-server:
an admin sets up a member who then logs in with the CLI and sees its project only."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import ADMIN_PASSWORD, LiveServer
from tests.helpers import assert_one_line_error, run_orbit

GINA_PASSWORD = "lantern-by-the-sea-8"

#: the CLI's requests are the API's, tested on both databases in tests/api/test_directory.py
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _admin(server: LiveServer) -> dict[str, str]:
    return {"ORBIT_URL": server.url, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PASSWORD}


def _ok(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    proc = run_orbit(*args, env=env, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert GINA_PASSWORD not in proc.stdout + proc.stderr
    return proc.stdout


def test_an_admin_sets_up_a_member_who_then_logs_in(live_server: LiveServer) -> None:
    admin = _admin(live_server)
    _ok("project-create", "red", env=admin)
    # the password from stdin, never an argument; the policy's refusal is one line
    assert_one_line_error(
        run_orbit("user-create", "gina", "--project", "red", env=admin, stdin="short\n"),
        "at least 12 characters",
    )
    out = _ok("user-create", "gina", "--project", "red", env=admin, stdin=GINA_PASSWORD + "\n")
    assert "gina" in out and "member" in out
    _ok("server-assign-project", "vm1", "red", env=admin)
    listed = json.loads(_ok("role-assignment-list", "--user", "gina", "--format", "json",
                            env=admin))  # fmt: skip
    assert [(a["scope"]["project"]["name"], a["role"]["name"]) for a in listed] == [
        ("red", "member")
    ]
    gina = {"ORBIT_URL": live_server.url, "OS_USERNAME": "gina", "OS_PASSWORD": GINA_PASSWORD}
    servers = json.loads(_ok("list", "--format", "json", env=gina))
    assert [s["name"] for s in servers] == ["vm1"]
    assert_one_line_error(run_orbit("hypervisor-list", env=gina), "admin role", "HTTP 403")
    assert_one_line_error(run_orbit("user-list", env=gina), "admin role")
    # her own password, then the new one works and the old one no longer does
    _ok("password-change", env=gina, stdin=f"{GINA_PASSWORD}\nharbour-lights-9x\n")
    assert_one_line_error(run_orbit("list", env=gina), "incorrect", "HTTP 401")
    _ok("list", env={**gina, "OS_PASSWORD": "harbour-lights-9x"})
    # an admin role makes her an admin; disabling and deleting her
    _ok("role-add", "gina", "red", "admin", env=admin)
    _ok("hypervisor-list", env={**gina, "OS_PASSWORD": "harbour-lights-9x"})
    _ok("user-set", "gina", "--disable", env=admin)
    assert_one_line_error(run_orbit("list", env={**gina, "OS_PASSWORD": "harbour-lights-9x"}))
    assert_one_line_error(run_orbit("user-delete", "admin", env=admin), "no enabled user")
    assert_one_line_error(run_orbit("project-delete", "red", env=admin), "owns 1 servers")
    _ok("user-delete", "gina", env=admin)
    users = json.loads(_ok("user-list", "--format", "json", env=admin))
    assert {u["name"] for u in users} == {"admin", "alice"}
    assert_one_line_error(run_orbit("user-set", "nobody-here", "--enable", env=admin),
                          "no user")  # fmt: skip
