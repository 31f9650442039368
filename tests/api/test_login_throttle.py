"""Password guessing through the API and the dashboard is throttled: 429 with Retry-After,
no password check while it lasts (tests/identity/test_throttle.py has the rules)."""

from __future__ import annotations

from typing import Any

import pytest

from orbit.identity.throttle import FREE_FAILURES, FREE_SOURCE_FAILURES
from tests.api.conftest import MEMBER_PASSWORD, Api

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _login(api: Api, password: str) -> Any:
    user = {"name": "alice", "password": password}
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
    return api.client.post("/identity/v3/auth/tokens", json=body)


def test_repeated_wrong_passwords_are_throttled(api: Api) -> None:
    clock = [5000.0]
    api.client.app.state.services.throttle.clock = lambda: clock[0]  # type: ignore[attr-defined]
    for _ in range(FREE_FAILURES):
        assert _login(api, "wrong").status_code == 401
    r = _login(api, "wrong")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert "try again in 1 s" in r.json()["error"]["message"]
    # the right password is refused too while the wait lasts: guessing gains nothing
    assert _login(api, MEMBER_PASSWORD).status_code == 429
    clock[0] += 1.0
    assert _login(api, MEMBER_PASSWORD).status_code == 201
    assert _login(api, "wrong").status_code == 401  # a success starts the count again
    # other users are not affected
    assert api.get("/v2.1/servers").status_code == 200


def test_the_dashboard_log_in_is_throttled_too(api: Api) -> None:
    import re

    clock = [5000.0]
    api.client.app.state.services.throttle.clock = lambda: clock[0]  # type: ignore[attr-defined]
    api.client.cookies.clear()
    page = api.client.get("/dashboard/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    form = {"csrf_token": csrf.group(1), "username": "alice", "password": "wrong"}
    for _ in range(FREE_FAILURES):
        assert api.client.post("/dashboard/login", data=form).status_code == 401
    r = api.client.post("/dashboard/login", data=form)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert "Too many failed log-ins" in r.text
    # the API shares the count: alice is throttled there as well
    assert _login(api, MEMBER_PASSWORD).status_code == 429


def test_a_throttled_source_is_refused_before_its_body_is_read(api: Api) -> None:
    """After its free tries, a source guessing many names gets 429 from the middleware: not
    even a malformed body is looked at."""
    throttle = api.client.app.state.services.throttle  # type: ignore[attr-defined]
    for i in range(FREE_SOURCE_FAILURES):
        throttle.failed(f"name{i}", "testclient")
    r = api.client.post("/identity/v3/auth/tokens", content=b"{not json")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["error"]["code"] == 429
    # other requests from it are not affected
    assert api.get("/v2.1/servers").status_code == 200
