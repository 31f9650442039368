"""Dashboard browser sessions, kept in orbit-server's memory: the browser holds a random id.

- The cookie (:data:`COOKIE_NAME`: HttpOnly, SameSite=Strict, Path=/dashboard) carries only
  a random session id. The ORBIT token a log-in issues stays here, on the server, so neither
  a token nor a password ever reaches a URL, a page or a log line.
- Only a log-in makes a session: nothing is stored for a browser before it logs in, so
  requests for the log-in page cost no memory and cannot push anyone out.
- Every session has a CSRF token. Every form carries it in a hidden field and every POST
  is checked against it in constant time (:meth:`DashboardSession.csrf_matches`), so a page
  on another site cannot post for a user. The log-in form, before any session, carries an
  HMAC of a random value that the browser holds in a second cookie
  (:data:`LOGIN_COOKIE`; :meth:`SessionStore.login_csrf`): a signed double submit, checked
  with this process's secret, stored nowhere.
- Each log-in makes a new session (a new id: no session fixation); log-out forgets it (and
  the route revokes its token).
- A session unused for :data:`IDLE_TIMEOUT_S` is forgotten; at most :data:`MAX_SESSIONS`
  are kept (the least recently used goes first). The token's own expiry still applies: the
  routes validate it against the database on every request.
- Sessions live in one process: restarting orbit-server logs every browser out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

COOKIE_NAME = "orbit_dashboard"
#: the log-in form's random value (its CSRF token is an HMAC of it)
LOGIN_COOKIE = "orbit_login"
#: random bytes in a session id and in a CSRF token (URL-safe text, ~43 characters)
SECRET_BYTES = 32
#: forget a session unused for this long (a logged-in one also ends with its token)
IDLE_TIMEOUT_S = 8 * 3600.0
#: the most sessions kept at once; the least recently used are forgotten first
MAX_SESSIONS = 10_000


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
    """One logged-in browser's session."""

    id: str
    csrf_token: str
    last_used_s: float
    token: str = field(repr=False)
    flashes: list[Flash] = field(default_factory=list)

    def csrf_matches(self, submitted: str | None) -> bool:
        """True if ``submitted`` is this session's CSRF token (compared in constant time)."""
        return submitted is not None and hmac.compare_digest(
            submitted.encode(), self.csrf_token.encode()
        )

    def flash(self, text: str, level: FlashLevel = FlashLevel.INFO) -> None:
        self.flashes.append(Flash(level, text))

    def pop_flashes(self) -> list[Flash]:
        flashes, self.flashes = self.flashes, []
        return flashes


class SessionStore:
    """The sessions of one orbit-server process. Thread-safe (routes run in a thread pool)."""

    def __init__(
        self,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, DashboardSession] = OrderedDict()
        #: signs the log-in form's CSRF tokens; a new process, new secret
        self._secret = secrets.token_bytes(SECRET_BYTES)

    def login_csrf(self, nonce: str) -> str:
        """The log-in form's CSRF token for the browser holding ``nonce`` in its cookie."""
        digest = hmac.new(self._secret, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def login_csrf_matches(self, nonce: str | None, submitted: str | None) -> bool:
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(self.login_csrf(nonce).encode(), submitted.encode())

    def new(self, *, token: str) -> DashboardSession:
        """A new session with fresh secrets for a browser that logged in with ``token``."""
        now = self._clock()
        session = DashboardSession(
            id=secrets.token_urlsafe(SECRET_BYTES),
            csrf_token=secrets.token_urlsafe(SECRET_BYTES),
            last_used_s=now,
            token=token,
        )
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= self.max_sessions:
                self._evict_one()
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> DashboardSession | None:
        """The live session with this id (and mark it used), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_used_s > self.idle_timeout_s:
                del self._sessions[session_id]
                return None
            session.last_used_s = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _evict_one(self) -> None:
        """Forget the least recently used session."""
        self._sessions.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget idle sessions (oldest first; the dict is in order of last use)."""
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used_s <= self.idle_timeout_s:
                return
            self._sessions.popitem(last=False)
