"""Passwords and tokens are stored only as hashes."""

from __future__ import annotations

from orbit.identity.security import hash_password, new_token, token_hash, verify_password


def test_password_hash_verifies_and_rejects() -> None:
    stored = hash_password("correct horse")
    assert "correct horse" not in stored and stored.startswith("scrypt$")
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
