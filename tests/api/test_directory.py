"""Users, projects and role assignments through the Keystone-shaped API (issue 13): what an
admin manages, what a user may do to itself, the password policy, and that ORBIT is never
left without an admin."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, Api

V3 = "/identity/v3"
CAROL_PASSWORD = "kestrel-over-dunes-26"


def _login(api: Api, name: str, password: str, **scope: str) -> Any:
    user = {"name": name, "password": password}
    body: dict[str, Any] = {
        "auth": {"identity": {"methods": ["password"], "password": {"user": user}}}
    }
    if scope:
        body["auth"]["scope"] = {"project": scope}
    return api.client.post(f"{V3}/auth/tokens", json=body)


def _token(api: Api, name: str, password: str, **scope: str) -> str:
    r = _login(api, name, password, **scope)
    assert r.status_code == 201, r.text
    return str(r.headers["X-Subject-Token"])


def _h(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def _message(r: Any) -> str:
    return str(r.json()["error"]["message"])


def _carol(api: Api) -> tuple[str, str]:
    """Project blue and user carol (member of blue); returns their ids."""
    r = api.post(f"{V3}/projects", {"project": {"name": "blue", "domain_id": "default"}})
    assert r.status_code == 201, r.text
    blue = r.json()["project"]["id"]
    r = api.post(f"{V3}/users", {"user": {"name": "carol", "password": CAROL_PASSWORD,
                                          "default_project_id": blue}})  # fmt: skip
    assert r.status_code == 201, r.text
    carol = r.json()["user"]
    assert carol["default_project_id"] == blue and carol["enabled"] is True
    assert CAROL_PASSWORD not in str(carol) and "password_hash" not in carol
    r = _login(api, "carol", CAROL_PASSWORD)
    assert r.status_code == 401 and "no role on project 'blue'" in _message(r)  # no role yet
    r = api.client.put(f"{V3}/projects/{blue}/users/{carol['id']}/roles/member",
                       headers=api.headers())  # fmt: skip
    assert r.status_code == 204, r.text
    return blue, str(carol["id"])


def test_an_admin_creates_a_project_a_user_and_a_role_assignment(api: Api) -> None:
    blue, carol = _carol(api)
    token = _token(api, "carol", CAROL_PASSWORD)
    shown = api.client.get(f"{V3}/auth/tokens", headers={**_h(token), "X-Subject-Token": token})
    body = shown.json()["token"]
    assert body["project"]["id"] == blue and [r["name"] for r in body["roles"]] == ["member"]
    assert api.client.head(f"{V3}/projects/{blue}/users/{carol}/roles/member",
                           headers=_h(token)).status_code == 204  # fmt: skip
    assert api.client.head(f"{V3}/projects/{blue}/users/{carol}/roles/admin",
                           headers=_h(token)).status_code == 404  # fmt: skip
    # the listings, with Keystone's filters
    names = [p["name"] for p in api.get(f"{V3}/projects").json()["projects"]]
    assert names == ["admin", "blue", "demo"]
    assert [p["id"] for p in api.get(f"{V3}/projects?name=blue").json()["projects"]] == [blue]
    assert [u["id"] for u in api.get(f"{V3}/users?name=carol").json()["users"]] == [carol]
    listed = api.get(f"{V3}/role_assignments?user.id={carol}&include_names=true").json()
    assert [(a["role"]["name"], a["scope"]["project"]["name"], a["user"]["name"])
            for a in listed["role_assignments"]] == [("member", "blue", "carol")]  # fmt: skip
    assert [r["id"] for r in api.get(f"{V3}/roles").json()["roles"]] == ["admin", "member"]
    # taken names, bad names, an unknown role
    r = api.post(f"{V3}/projects", {"project": {"name": "blue"}})
    assert r.status_code == 409 and "already exists" in _message(r)
    r = api.post(f"{V3}/users", {"user": {"name": "carol", "password": "another-good-pass-9"}})
    assert r.status_code == 409
    for bad in ("", " padded", "a\x01b", "x" * 300, 7):
        r = api.post(f"{V3}/projects", {"project": {"name": bad}})
        assert r.status_code == 400, (bad, r.text)
    r = api.client.put(f"{V3}/projects/{blue}/users/{carol}/roles/root", headers=api.headers())
    assert r.status_code == 404 and "admin and member" in _message(r)


def test_the_password_policy_refuses_weak_passwords_without_echoing_them(api: Api) -> None:
    cases = {
        "short-1": "at least 12 characters",
        "aaaaaabbbbbb": "at least 6 different characters",
        "dave-dave-dave-1": "must not contain the user name",
        "password1234": "most common",
    }
    for password, why in cases.items():
        r = api.post(f"{V3}/users", {"user": {"name": "dave", "password": password}})
        assert r.status_code == 400 and why in _message(r), (password, r.text)
        assert password not in r.text
    r = api.post(f"{V3}/users", {"user": {"name": "dave"}})
    assert r.status_code == 400 and "needs a password" in _message(r)
    assert api.get(f"{V3}/users?name=dave").json()["users"] == []


def test_a_user_reads_itself_and_changes_its_own_password(api: Api) -> None:
    blue, carol = _carol(api)
    token = _token(api, "carol", CAROL_PASSWORD)
    assert api.client.get(f"{V3}/users/{carol}", headers=_h(token)).status_code == 200
    projects = api.client.get(f"{V3}/auth/projects", headers=_h(token)).json()["projects"]
    assert [p["name"] for p in projects] == ["blue"]
    admin_id = api.get(f"{V3}/users?name=admin").json()["users"][0]["id"]
    for path in (f"/users/{admin_id}", "/users", "/projects", f"/users/{admin_id}/projects",
                 "/role_assignments", f"/role_assignments?user.id={admin_id}"):  # fmt: skip
        assert api.client.get(f"{V3}{path}", headers=_h(token)).status_code == 403, path
    own = api.client.get(f"{V3}/role_assignments?user.id={carol}", headers=_h(token))
    assert own.status_code == 200 and len(own.json()["role_assignments"]) == 1
    url = f"{V3}/users/{carol}/password"
    r = api.client.post(url, headers=_h(token), json={"user": {
        "original_password": "not-it-at-all-1", "password": "heron-under-bridge-27"}})  # fmt: skip
    assert r.status_code == 401
    r = api.client.post(url, headers=_h(token), json={"user": {
        "original_password": CAROL_PASSWORD, "password": "short"}})  # fmt: skip
    assert r.status_code == 400 and "at least 12" in _message(r)
    r = api.client.post(f"{V3}/users/{admin_id}/password", headers=_h(token), json={"user": {
        "original_password": ADMIN_PASSWORD, "password": "taken-over-pass-1"}})  # fmt: skip
    assert r.status_code == 403
    r = api.client.post(url, headers=_h(token), json={"user": {
        "original_password": CAROL_PASSWORD, "password": "heron-under-bridge-27"}})  # fmt: skip
    assert r.status_code == 204, r.text
    # every token of hers ended; the new password logs in, the old one no longer does
    assert api.client.get("/v2.1/servers", headers=_h(token)).status_code == 401
    assert _login(api, "carol", CAROL_PASSWORD).status_code == 401
    _token(api, "carol", "heron-under-bridge-27", id=blue)  # scoped by project id


def test_revoking_a_role_or_disabling_a_user_takes_effect_at_once(api: Api) -> None:
    blue, carol = _carol(api)
    token = _token(api, "carol", CAROL_PASSWORD)
    assert api.client.get("/v2.1/servers", headers=_h(token)).status_code == 200
    r = api.client.delete(f"{V3}/projects/{blue}/users/{carol}/roles/member",
                          headers=api.headers())  # fmt: skip
    assert r.status_code == 204
    r = api.client.get("/v2.1/servers", headers=_h(token))
    assert r.status_code == 401 and "no longer has a role" in r.text
    r = api.client.delete(f"{V3}/projects/{blue}/users/{carol}/roles/member",
                          headers=api.headers())  # fmt: skip
    assert r.status_code == 404
    # admin on blue makes carol an admin (Nova's role:admin)
    r = api.client.put(f"{V3}/projects/{blue}/users/{carol}/roles/admin", headers=api.headers())
    assert r.status_code == 204
    token = _token(api, "carol", CAROL_PASSWORD)
    assert api.client.get("/v2.1/os-hypervisors", headers=_h(token)).status_code == 200
    r = api.client.patch(f"{V3}/users/{carol}", headers=api.headers(),
                         json={"user": {"enabled": False}})  # fmt: skip
    assert r.status_code == 200 and r.json()["user"]["enabled"] is False
    assert api.client.get("/v2.1/servers", headers=_h(token)).status_code == 401
    assert _login(api, "carol", CAROL_PASSWORD).status_code == 401


def test_orbit_always_keeps_an_enabled_admin(api: Api) -> None:
    me = api.get(f"{V3}/users?name=admin").json()["users"][0]["id"]
    admin_project = api.project_id("admin")
    refused = [
        api.client.delete(f"{V3}/users/{me}", headers=api.headers()),
        api.client.delete(f"{V3}/projects/{admin_project}/users/{me}/roles/admin",
                          headers=api.headers()),
        api.client.patch(f"{V3}/users/{me}", headers=api.headers(),
                         json={"user": {"enabled": False}}),
        api.client.delete(f"{V3}/projects/{admin_project}", headers=api.headers()),
    ]  # fmt: skip
    for r in refused:
        assert r.status_code == 409, r.text
    assert api.get("/v2.1/os-hypervisors").status_code == 200  # still the admin


def test_deleting_projects_and_users(api: Api) -> None:
    blue, carol = _carol(api)
    vm1 = api.server_id("vm1")
    r = api.post(f"/v2.1/servers/{vm1}/action", {"orbit-assignProject": {"project": "blue"}})
    assert r.status_code == 202
    r = api.client.delete(f"{V3}/projects/{blue}", headers=api.headers())
    assert r.status_code == 409 and "owns 1 servers" in _message(r)
    api.post(f"/v2.1/servers/{vm1}/action", {"orbit-assignProject": {"project": None}})
    token = _token(api, "carol", CAROL_PASSWORD)
    assert api.client.delete(f"{V3}/projects/{blue}", headers=api.headers()).status_code == 204
    assert api.client.get("/v2.1/servers", headers=_h(token)).status_code == 401
    shown = api.get(f"{V3}/users/{carol}").json()["user"]
    assert shown["default_project_id"] is None
    assert api.get(f"{V3}/role_assignments?user.id={carol}").json()["role_assignments"] == []
    assert api.client.delete(f"{V3}/users/{carol}", headers=api.headers()).status_code == 204
    assert api.client.get(f"{V3}/users/{carol}", headers=api.headers()).status_code == 404
    # a member may do none of it
    alice = api.member_token
    for method, path in (("DELETE", f"{V3}/users/{carol}"), ("POST", f"{V3}/projects"),
                         ("PUT", f"{V3}/projects/{blue}/users/{carol}/roles/admin")):  # fmt: skip
        r = api.client.request(method, path, headers=_h(alice), json={"project": {"name": "x"}})
        assert r.status_code == 403, (method, path, r.text)
    assert MEMBER_PASSWORD not in r.text
