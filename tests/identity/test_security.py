"""Passwords and tokens are stored only as hashes; log-in does not tell which users exist."""

from __future__ import annotations

import pytest

from orbit.db.database import Database
from orbit.errors import AuthError
from orbit.identity import service
from orbit.identity.security import hash_password, new_token, token_hash, verify_password


@pytest.mark.production_hashing
def test_password_hash_verifies_and_rejects() -> None:
    stored = hash_password("correct horse")
    assert "correct horse" not in stored and stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert hash_password("correct horse") != stored  # salted


def test_malformed_hash_never_verifies() -> None:
    for bad in ("", "plain", "scrypt$1$2$3$zz$zz", "md5$1$1$1$00$00"):
        assert not verify_password("x", bad)


def test_tokens_are_random_and_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 40
    assert token_hash(a) != a and len(token_hash(a)) == 64


def test_an_unknown_user_costs_a_password_check_too(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same work, not only the same message, for an unknown user and a wrong password:
    the answer's timing does not tell which names exist."""
    checked: list[str] = []
    real = verify_password

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(service, "verify_password", counting)
    with db.session() as session:
        service.ensure_admin(session, password="test-root-pass-41")
        for name in ("admin", "nobody"):
            with pytest.raises(AuthError, match="user name or password is incorrect"):
                service.issue_token(
                    session, user_name=name, password="wrong", project_name=None, ttl_s=60
                )
    assert len(checked) == 2 and all(h.startswith("scrypt$") for h in checked)
    assert checked[0] != checked[1]  # the admin's hash, then the stand-in
