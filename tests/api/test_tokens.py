"""Keystone's token check and revocation (one's own token, or any as admin); expired
tokens deleted."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from orbit.db.models import Token
from orbit.db.types import utcnow
from tests.api.conftest import Api

TOKENS = "/identity/v3/auth/tokens"


def _check(api: Api, caller: str, subject: str | None) -> int:
    headers = {"X-Auth-Token": caller} | ({"X-Subject-Token": subject} if subject else {})
    return int(api.client.get(TOKENS, headers=headers).status_code)


def _revoke(api: Api, caller: str, subject: str | None) -> int:
    headers = {"X-Auth-Token": caller} | ({"X-Subject-Token": subject} if subject else {})
    return int(api.client.delete(TOKENS, headers=headers).status_code)


def test_a_member_checks_and_revokes_only_its_own_token(api: Api) -> None:
    admin, member = api.admin_token, api.member_token
    assert _check(api, member, member) == 200
    assert _check(api, member, admin) == 403  # another user's token
    assert _revoke(api, member, admin) == 403
    assert _check(api, admin, admin) == 200  # still valid
    assert _check(api, admin, member) == 200  # an admin may check any
    assert _check(api, member, None) == 400
    assert _check(api, member, "not-a-token") == 404
    assert _revoke(api, member, member) == 204
    assert _check(api, admin, member) == 404  # gone
    assert api.get("/v2.1/servers", headers=api.headers(member)).status_code == 401


def test_an_admin_revokes_any_token(api: Api) -> None:
    assert _revoke(api, api.admin_token, api.member_token) == 204
    assert api.get("/v2.1/servers", headers=api.headers(member=True)).status_code == 401
    assert _check(api, api.admin_token, api.admin_token) == 200


def test_expired_tokens_are_deleted_by_the_conductors_housekeeping(api: Api) -> None:
    with api.db.session() as s:
        tokens = list(s.scalars(select(Token)))
        assert len(tokens) == 2  # the admin's and the member's
        tokens[1].expires_at = utcnow() - timedelta(seconds=1)
    api.conductor.sync()
    with api.db.session() as s:
        assert [t.id for t in s.scalars(select(Token))] == [tokens[0].id]
    assert api.get("/v2.1/servers").status_code == 200  # the live one still works
