"""Password and token primitives: only hashes are ever stored.

Passwords are hashed with scrypt (salted, memory-hard; Python's standard library) in a
self-describing string ``scrypt$n$r$p$salt_hex$hash_hex``. Tokens are random 32-byte values
(URL-safe text) handed to the client once; the database keeps their SHA-256 only, which is
enough because a token is already high-entropy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_BYTES = 32
GENERATED_PASSWORD_BYTES = 18


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches the ``stored`` hash; False for any malformed hash."""
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(hash_hex) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


#: The password policy (NIST SP 800-63B: length and a block-list, no composition rules).
MIN_PASSWORD_LEN = 12
#: hashing a longer one would be an easy way to burn the server's CPU
MAX_PASSWORD_LEN = 1024
MIN_DISTINCT_CHARS = 6
#: passwords of 12 characters and more that lists of leaked passwords put near the top
COMMON_PASSWORDS = frozenset(
    {
        "123456789012", "1234567890123", "12345678901234", "qwertyuiop12", "qwertyuiop123",
        "qwertyuiopasdfgh", "password1234", "password12345", "password123!", "passwordpassword",
        "administrator", "administrator1", "changeme1234", "letmeinletmein", "iloveyou1234",
        "1q2w3e4r5t6y", "1qaz2wsx3edc", "q1w2e3r4t5y6", "aaaaaaaaaaaa", "abcdefghijkl",
        "abc123abc123", "welcome12345", "superman1234", "trustno1trustno1", "opensesame12",
    }
)  # fmt: skip


def password_problem(password: str, *, user_name: str) -> str | None:
    """Why ``password`` may not be set for ``user_name`` (one line, never the password
    itself), or None when it may."""
    if len(password) < MIN_PASSWORD_LEN:
        return f"the password must have at least {MIN_PASSWORD_LEN} characters"
    if len(password) > MAX_PASSWORD_LEN:
        return f"the password must have at most {MAX_PASSWORD_LEN} characters"
    if len(set(password)) < MIN_DISTINCT_CHARS:
        return f"the password must use at least {MIN_DISTINCT_CHARS} different characters"
    lowered = password.lower()
    if len(user_name) >= 3 and user_name.lower() in lowered:
        return "the password must not contain the user name"
    if lowered in COMMON_PASSWORDS:
        return "the password is one of the most common ones: choose another"
    return None
