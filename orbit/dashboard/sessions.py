"""Dashboard browser sessions, kept in the database: the browser holds a random id.

- The cookie (:data:`COOKIE_NAME`: HttpOnly, SameSite=Strict, Path=/dashboard) carries only
  a random session id; the database keeps its SHA-256 and the id of the ORBIT token the
  log-in issued (tokens too are stored hashed), so neither a token nor a password ever
  reaches a URL, a page or a log line, and a database dump lets no one in. Any
  orbit-server instance on the database serves any browser; a restart logs no one out.
- Only a log-in makes a session: nothing is stored for a browser before it logs in, so
  requests for the log-in page cost no memory and cannot push anyone out.
- Every session has a CSRF token, an HMAC of its id (stored nowhere). Every form carries
  it in a hidden field and every POST is checked against it in constant time
  (:meth:`DashboardSession.csrf_matches`), so a page on another site cannot post for a
  user. The log-in form, before any session, carries an HMAC of a random value that the
  browser holds in a second cookie (:data:`LOGIN_COOKIE`; :meth:`SessionStore.login_csrf`):
  a signed double submit, under a key all instances share (``server_secrets``).
- Each log-in makes a new session (a new id: no session fixation); log-out forgets it (and
  the route revokes its token: the session goes with it).
- A session unused for :data:`IDLE_TIMEOUT_S` is forgotten; at most :data:`MAX_SESSIONS`
  are kept (the least recently used goes first). The token's own expiry still applies: the
  routes validate it on every request, and an expired token's purge deletes its session.
  The last use is written at most every :data:`TOUCH_EVERY_S`, not at every page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orbit.db.database import Database
from orbit.db.models import DashboardSession as SessionRow
from orbit.db.models import ServerSecret
from orbit.db.types import utcnow

COOKIE_NAME = "orbit_dashboard"
#: the log-in form's random value (its CSRF token is an HMAC of it)
LOGIN_COOKIE = "orbit_login"
#: random bytes in a session id and in a CSRF token (URL-safe text, ~43 characters)
SECRET_BYTES = 32
#: forget a session unused for this long (a logged-in one also ends with its token)
IDLE_TIMEOUT_S = 8 * 3600.0
#: the most sessions kept at once; the least recently used are forgotten first
MAX_SESSIONS = 10_000
#: a session's last use is written when it is older than this (not at every page)
TOUCH_EVERY_S = 60.0
#: the shared key that signs the log-in form's CSRF tokens
LOGIN_SECRET = "dashboard-login-csrf"


class FlashLevel(StrEnum):
    INFO = "info"
    ERROR = "error"


@dataclass(frozen=True)
class Flash:
    """A one-time message shown on the next page (after a redirect)."""

    level: FlashLevel
    text: str


@dataclass
class DashboardSession:
    """One logged-in browser's session, as read for one request."""

    id: str = field(repr=False)
    token_id: str
    #: the request's database session: messages are written in its transaction
    db: Session | None = field(default=None, repr=False)

    @property
    def csrf_token(self) -> str:
        return _mac(self.id.encode(), b"csrf")

    def csrf_matches(self, submitted: str | None) -> bool:
        """True if ``submitted`` is this session's CSRF token (compared in constant time)."""
        return submitted is not None and hmac.compare_digest(
            submitted.encode(), self.csrf_token.encode()
        )

    def flash(self, text: str, level: FlashLevel = FlashLevel.INFO) -> None:
        """A message for the next page, committed with the request's work (the next page
        may be served by another instance, and comes right after the redirect)."""
        row = self._row()
        if row is not None:
            row.flashes = [*row.flashes, [level.value, text]]
            self._commit()

    def pop_flashes(self) -> list[Flash]:
        """The messages for this page, used up (a page shows them; a poll does not)."""
        row = self._row()
        if row is None or not row.flashes:
            return []
        flashes = [Flash(FlashLevel(level), text) for level, text in row.flashes]
        row.flashes = []
        self._commit()
        return flashes

    def _row(self) -> SessionRow | None:
        if self.db is None:
            return None
        return self.db.get(SessionRow, _id_hash(self.id), with_for_update=True)

    def _commit(self) -> None:
        assert self.db is not None
        self.db.commit()


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """The dashboard's sessions in the database. Each call is one short transaction of its
    own (no lock held, nothing kept between requests but the shared signing key)."""

    def __init__(
        self,
        db: Database,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.idle_timeout = timedelta(seconds=idle_timeout_s)
        self.max_sessions = max_sessions
        self._clock = clock
        self._secret: bytes | None = None

    def _login_secret(self) -> bytes:
        """The key every instance shares, made by the first that needs it."""
        if self._secret is None:
            with self.db.session() as s:
                row = s.get(ServerSecret, LOGIN_SECRET)
                value = row.value if row else None
            if value is None:
                value = secrets.token_urlsafe(SECRET_BYTES)
                try:
                    with self.db.session() as s:
                        s.add(ServerSecret(name=LOGIN_SECRET, value=value))
                except IntegrityError:  # another instance made it first: use theirs
                    with self.db.session() as s:
                        value = s.get(ServerSecret, LOGIN_SECRET).value  # type: ignore[union-attr]
            self._secret = value.encode()
        return self._secret

    def login_csrf(self, nonce: str) -> str:
        """The log-in form's CSRF token for the browser holding ``nonce`` in its cookie."""
        return _mac(self._login_secret(), nonce.encode())

    def login_csrf_matches(self, nonce: str | None, submitted: str | None) -> bool:
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(self.login_csrf(nonce).encode(), submitted.encode())

    def new(self, *, token_id: str) -> DashboardSession:
        """A new session with a fresh id for a browser that logged in (``token_id``: the
        row of the token its log-in issued)."""
        session_id = secrets.token_urlsafe(SECRET_BYTES)
        now = self._clock()
        with self.db.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.last_used_at < now - self.idle_timeout))
            extra = int(s.scalar(select(func.count()).select_from(SessionRow)) or 0)
            extra -= self.max_sessions - 1
            if extra > 0:  # the least recently used go first
                oldest = select(SessionRow.id_hash).order_by(SessionRow.last_used_at).limit(extra)
                s.execute(
                    delete(SessionRow).where(SessionRow.id_hash.in_(oldest.scalar_subquery()))
                )
            s.add(
                SessionRow(
                    id_hash=_id_hash(session_id),
                    token_id=token_id,
                    flashes=[],
                    created_at=now,
                    last_used_at=now,
                )
            )
        return DashboardSession(id=session_id, token_id=token_id)

    def get(self, session_id: str | None) -> DashboardSession | None:
        """The live session with this id (its messages read and cleared), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self.db.session() as s:
            row = s.get(SessionRow, _id_hash(session_id))
            if row is None:
                return None
            if now - row.last_used_at > self.idle_timeout:
                s.delete(row)
                return None
            if now - row.last_used_at > timedelta(seconds=TOUCH_EVERY_S):
                row.last_used_at = now
            return DashboardSession(id=session_id, token_id=row.token_id)

    def drop(self, session_id: str) -> None:
        with self.db.session() as s:
            s.execute(delete(SessionRow).where(SessionRow.id_hash == _id_hash(session_id)))

    def __len__(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(SessionRow)) or 0)
