"""The API reuses a token's validation for a moment (as keystonemiddleware does), and
forgets it at once when a token, user or role changes through this process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete

from orbit.db.database import Database
from orbit.db.models import Token
from orbit.errors import AuthError
from orbit.identity import directory, service

PASSWORD = "cache-root-pass-7"


def _token(db: Database) -> str:
    with db.session() as s:
        service.ensure_admin(s, password=PASSWORD)
    with db.session() as s:
        token, _ctx = service.issue_token(
            s, user_name="admin", password=PASSWORD, project_name=None, ttl_s=3600
        )
    return token


def test_a_validation_is_reused_until_its_time_runs_out(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token(db)
    assert service.recently_validated(token) is None  # never validated
    with db.session() as s:
        context = service.validate_token(s, token=token)
    # the row deleted behind this process's back (another instance): still reused
    with db.session() as s:
        s.execute(delete(Token))
    assert service.recently_validated(token) == context
    service.forget_tokens()
    assert service.recently_validated(token) is None
    with db.session() as s, pytest.raises(AuthError, match="not valid"):
        service.validate_token(s, token=token)


def test_a_validation_older_than_the_cache_time_is_read_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token(db)
    monkeypatch.setattr(service, "TOKEN_CACHE_S", -1.0)  # stale as soon as made
    with db.session() as s:
        service.validate_token(s, token=token)
    assert service.recently_validated(token) is None


def test_an_expired_token_is_not_reused(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token(db)
    with db.session() as s:
        context = service.validate_token(s, token=token)
    assert service.recently_validated(token) == context
    later = context.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(service, "utcnow", lambda: later)  # within the cache time, expired
    assert service.recently_validated(token) is None


@pytest.mark.parametrize("change", ["revoke", "disable", "unassign", "password"])
def test_a_change_through_this_process_is_seen_at_once(db: Database, change: str) -> None:
    token = _token(db)
    with db.session() as s:
        service.validate_token(s, token=token)
        project = directory.find_project(s, service.ADMIN_PROJECT)
        other = directory.add_user(
            s, name="second-admin", password="another-root-pass-3", default_project=project
        )
        directory.assign_role(s, user=other, project=project, role="admin")
    with db.session() as s:  # validated again after the role change above
        service.validate_token(s, token=token)
    assert service.recently_validated(token) is not None
    with db.session() as s:
        admin = directory.find_user(s, "admin")
        project = directory.find_project(s, service.ADMIN_PROJECT)
        if change == "revoke":
            service.revoke_token(s, token=token)
        elif change == "disable":
            directory.update_user(s, admin, enabled=False)
        elif change == "unassign":
            directory.unassign_role(s, user=admin, project=project, role="admin")
        else:
            directory.set_password(s, admin, "a-new-root-pass-8")
    assert service.recently_validated(token) is None
    with db.session() as s, pytest.raises(AuthError):
        service.validate_token(s, token=token)


def test_a_validation_read_before_a_change_is_not_kept(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validation that read the database before a change was forgotten (another request
    revoked the token meanwhile) is answered but not reused."""
    token = _token(db)
    real = service._valid

    def valid_then_revoked(*args: object, **kwargs: object) -> service.AuthContext:
        context = real(*args, **kwargs)  # type: ignore[arg-type]
        service.forget_tokens()  # the revocation commits while this request goes on
        return context

    monkeypatch.setattr(service, "_valid", valid_then_revoked)
    with db.session() as s:
        service.validate_token(s, token=token)
    assert service.recently_validated(token) is None
