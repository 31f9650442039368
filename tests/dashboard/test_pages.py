"""What every dashboard page and form promises, checked over all of them: the routes are
enumerated from the router, so a page or form added later is checked too.

- every page: the Content-Security-Policy and the other security headers, and nothing
  referenced from another site;
- every form that posts carries the session's CSRF token, and every POST route refuses a
  missing or forged one (403) and changes nothing;
- restarting orbit-server (a new application on the same database) logs browsers out;
- the Hypervisors page shows each host's memory figures as the host reports them.

No browser: FastAPI's TestClient (the API tests' ``api`` fixture), the fake driver and
SQLite (tests/dashboard/test_dashboard.py drives the same pages in Chromium on both
databases).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.dashboard import routes as dashboard
from orbit.dashboard.errors import CSRF_MESSAGE
from orbit.dashboard.sessions import COOKIE_NAME
from orbit.db.models import Host
from tests.api.conftest import ADMIN_PASSWORD, H1, MEMBER_PASSWORD, Api

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class _Page(HTMLParser):
    """The references (src, href, action) and the POST forms of a page, with their fields."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.forms: list[dict[str, Any]] = []
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.references += [a[k] for k in ("src", "href", "action") if k in a]
        if tag == "form" and a.get("method", "get").lower() == "post":
            self._form = {"action": a.get("action", ""), "fields": {}}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and "name" in a:
            self._form["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def _csrf(html: str) -> str:
    forms = [f for f in _parse(html).forms if "csrf_token" in f["fields"]]
    assert forms, "no form with a CSRF token"
    return str(forms[0]["fields"]["csrf_token"])


def _log_in(client: TestClient, user: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    login = client.get("/dashboard/login")
    assert login.status_code == 200
    r = client.post(
        "/dashboard/login",
        data={"csrf_token": _csrf(login.text), "username": user, "password": password},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].endswith("/dashboard/instances"), r.text


def _route_params(api: Api) -> dict[str, str]:
    """A real value for each path parameter: vm1, its finished migration, h1, a drain."""
    sid = api.server_id("vm1")
    r = api.post(f"/v2.1/servers/{sid}/action", {"os-migrateLive": {"host": "h2",
                 "block_migration": "auto"}})  # fmt: skip
    assert r.status_code == 202, r.text
    mid = api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]["id"]
    api.wait_status(sid, mid, "completed")
    r = api.post("/v2.1/orbit-hosts/h3/drain", {"post_copy": True})  # h3 holds no VM
    assert r.status_code == 202, r.text
    return {
        "server_id": sid,
        "migration_id": str(mid),
        "name": "h1",
        "drain_id": str(r.json()["drain"]["id"]),
    }


def _routes(method: str) -> list[APIRoute]:
    routes = [r for r in dashboard.router.routes if isinstance(r, APIRoute)]
    return [r for r in routes if method in (r.methods or set())]


def _path(route: APIRoute, params: dict[str, str]) -> str:
    return "/dashboard" + route.path.format(**params)


def test_every_page_sends_the_security_headers_and_loads_nothing_from_elsewhere(
    api: Api,
) -> None:
    params = _route_params(api)
    client = api.client
    client.cookies.clear()
    pages = [*_routes("GET")]
    assert len(pages) >= 9, [r.path for r in pages]
    logged_out = client.get("/dashboard/login")
    checked = [("/dashboard/login", logged_out)]
    _log_in(client)
    for route in pages:
        path = _path(route, params)
        r = client.get(path, follow_redirects=False)
        assert r.status_code in (200, 303), (path, r.status_code, r.text[:300])
        checked.append((path, r))
    for path, r in checked:
        for header, value in dashboard.SECURITY_HEADERS.items():
            assert r.headers.get(header) == value, (path, header)
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        if r.headers.get("content-type", "").startswith("text/html"):
            foreign = [ref for ref in _parse(r.text).references if EXTERNAL.match(ref)]
            assert foreign == [], (path, foreign)


def test_every_form_carries_the_csrf_token_and_every_post_refuses_without_it(
    api: Api,
) -> None:
    params = _route_params(api)
    client = api.client
    client.cookies.clear()
    _log_in(client)
    token = None
    forms = 0
    for route in _routes("GET"):
        r = client.get(_path(route, params))
        if not r.headers.get("content-type", "").startswith("text/html"):
            continue
        for form in _parse(r.text).forms:
            forms += 1
            assert form["fields"].get("csrf_token"), (route.path, form["action"])
            token = token or form["fields"]["csrf_token"]
            assert form["fields"]["csrf_token"] == token  # the session's, on every form
    assert forms >= 5  # log-out on every page, live migrate, force complete, abort, drain
    posts = _routes("POST")
    assert {r.name for r in posts} >= {"login_submit", "logout", "live_migrate_submit",
                                       "force_complete", "resume", "abort", "drain_submit",
                                       "drain_cancel"}  # fmt: skip
    before = api.snapshot()
    for route in posts:
        path = _path(route, params)
        for data in ({}, {"csrf_token": "forged-" + str(token)}):
            r = client.post(path, data={**data, "dest_host": "h3", "username": "admin"},
                            follow_redirects=False)  # fmt: skip
            assert r.status_code == 403, (path, data, r.status_code)
            assert CSRF_MESSAGE.split(":")[0] in r.text, path
    assert api.snapshot() == before
    # still logged in: the forged log-out did nothing
    assert client.get("/dashboard/instances", follow_redirects=False).status_code == 200


def test_another_instance_or_a_restart_keeps_the_browser_logged_in(api: Api) -> None:
    """Sessions live in the database: a second orbit-server (or the same one restarted)
    serves the browser, accepts the forms of pages the first one made, and the message it
    leaves is shown by the first."""
    client = api.client
    client.cookies.clear()
    _log_in(client)
    cookie = client.cookies.get(COOKIE_NAME)
    assert cookie
    sid = api.server_id("vm1")
    body = {"os-migrateLive": {"host": "h2", "block_migration": False}}
    r = api.post(f"/v2.1/servers/{sid}/action", body)
    assert r.status_code == 202, r.text
    mid = api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]["id"]
    done = api.wait_status(sid, mid, "completed", "failed", "error")
    assert done["status"] == "completed"
    page = client.get(f"/dashboard/migrations/{mid}")
    assert page.status_code == 200
    other = create_app(Services(config=api.conductor.config, db=api.db, conductor=api.conductor))
    with TestClient(other) as again:
        again.cookies.set(COOKIE_NAME, cookie)
        assert again.get("/dashboard/instances", follow_redirects=False).status_code == 200
        r = again.post(f"/dashboard/migrations/{mid}/resume",
                       data={"csrf_token": _csrf(page.text)}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303, r.text
    shown = client.get(f"/dashboard/migrations/{mid}").text
    assert "Resume refused" in shown
    assert "Resume refused" not in client.get(f"/dashboard/migrations/{mid}").text  # once


def _cells(html: str, host: str) -> list[str]:
    row = re.search(rf'<tr data-host="{host}">(.*?)</tr>', html, re.S)
    assert row, host
    return [re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.S)]  # fmt: skip


def test_the_hypervisors_page_shows_each_hosts_memory(api: Api) -> None:
    """h1 holds vm1 and hot (64 MiB each) of 16 GiB: used, free and total as the host says,
    and the VM count; after vm1 moves to h2, both rows follow."""
    client = api.client
    client.cookies.clear()
    _log_in(client)

    def figures(host: str) -> tuple[str, str, str, str, str]:
        cells = _cells(client.get("/dashboard/hypervisors").text, host)
        vms, used, free, total, meter = cells[2], cells[3], cells[4], cells[5], cells[6]
        return vms, used, free, total, meter

    with api.db.session() as s:
        h1 = s.query(Host).filter_by(uri=H1).one()
        total_mib, free_mib = h1.memory_total_mib, h1.memory_free_mib
    info = api.driver.host_info(H1)
    assert (total_mib, free_mib) == (info.memory_total_mib, info.memory_free_mib)
    assert total_mib - free_mib == 128  # vm1 and hot
    assert figures("h1") == ("2", "128.0 MiB", "15.88 GiB", "16.00 GiB", "128 of 16384 MiB")
    assert figures("h2")[:2] == ("0", "0.0 MiB")

    sid = api.server_id("vm1")
    r = api.post(f"/v2.1/servers/{sid}/action", {"os-migrateLive": {"host": "h2",
                 "block_migration": "auto"}})  # fmt: skip
    assert r.status_code == 202, r.text
    mid = api.get(f"/v2.1/servers/{sid}/migrations").json()["migrations"][0]["id"]
    api.wait_status(sid, mid, "completed")
    api.conductor.sync()
    assert figures("h1")[:2] == ("1", "64.0 MiB") and figures("h2")[:2] == ("1", "64.0 MiB")


def test_a_member_sees_its_projects_instances_only(api: Api) -> None:
    """alice (project demo) sees vm1 once it is demo's, never hot, hot's migration or a host;
    every page of the dashboard, as alice: 200 with none of that, or 403/404."""
    params = _route_params(api)  # vm1 migrated to h2; a drain of h3
    hot = api.server_id("hot")
    r = api.post(f"/v2.1/servers/{hot}/action", {"os-migrateLive": {"host": "h2",
                 "block_migration": False, "post_copy": True}})  # fmt: skip
    assert r.status_code == 202, r.text
    hot_mid = api.get(f"/v2.1/servers/{hot}/migrations").json()["migrations"][0]["id"]
    api.wait_status(hot, hot_mid, "completed")
    r = api.post(f"/v2.1/servers/{params['server_id']}/action",
                 {"orbit-assignProject": {"project": "demo"}})  # fmt: skip
    assert r.status_code == 202, r.text
    client = api.client
    client.cookies.clear()
    _log_in(client, "alice", MEMBER_PASSWORD)
    page = client.get("/dashboard/instances")
    assert 'data-server="vm1"' in page.text and 'data-server="hot"' not in page.text
    assert ">h2<" not in page.text and "Hypervisors" not in page.text
    mine = client.get(f"/dashboard/migrations/{params['migration_id']}")
    assert mine.status_code == 200 and not re.search(r"(?<![</])\bh2\b", mine.text), mine.text
    foreign = {**params, "server_id": hot, "migration_id": str(hot_mid)}
    for route in _routes("GET"):
        path = _path(route, foreign)
        r = client.get(path, follow_redirects=False)
        assert r.status_code in (200, 303, 403, 404), (path, r.status_code)
        if r.status_code == 200:
            assert hot not in r.text and "fake://" not in r.text, path
    for name in ("hypervisors", "migrations", "drain_form", "drain", "live_migrate"):
        route = next(r for r in _routes("GET") if r.name == name)
        assert client.get(_path(route, params)).status_code == 403, name
    for name in ("migration", "migration_progress"):
        route = next(r for r in _routes("GET") if r.name == name)
        assert client.get(_path(route, foreign)).status_code == 404, name


def test_the_log_in_page_stores_nothing_and_pushes_no_one_out(api: Api) -> None:
    """Cookie-less requests for the log-in page make no session (its form is protected by a
    signed cookie instead): a logged-in browser stays logged in however many arrive."""
    client = api.client
    client.cookies.clear()
    _log_in(client)
    mount = next(r for r in client.app.routes if getattr(r, "path", "") == "/dashboard")  # type: ignore[attr-defined]
    store = mount.app.state.sessions
    assert len(store) == 1
    with TestClient(client.app) as stranger:
        for _ in range(300):
            stranger.cookies.clear()
            assert stranger.get("/dashboard/login").status_code == 200
        # a form posted with another browser's token is refused
        page = stranger.get("/dashboard/login")
        token = _csrf(page.text)
        stranger.cookies.clear()
        stranger.get("/dashboard/login")  # a new log-in cookie: the token no longer matches
        r = stranger.post("/dashboard/login", data={"csrf_token": token, "username": "admin",
                                                    "password": ADMIN_PASSWORD})  # fmt: skip
        assert r.status_code == 403
    assert len(store) == 1
    assert client.get("/dashboard/instances", follow_redirects=False).status_code == 200
