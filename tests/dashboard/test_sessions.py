"""Dashboard sessions in the database: fresh secrets, only hashes stored, idle expiry, a
bounded store, CSRF comparison, messages, the end of a session with its token, and the log-in
form's signed CSRF token (no session before a log-in) under a key all instances share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from orbit.dashboard.sessions import FlashLevel, SessionStore
from orbit.db.database import Database
from orbit.db.models import DashboardSession as SessionRow
from orbit.db.models import Token
from orbit.identity.service import ensure_admin, issue_token, revoke_token_id, token_id_of

PASSWORD = "session-test-pass-9"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _token_id(db: Database) -> str:
    """A real token's row (a session ends with its token)."""
    with db.session() as s:
        ensure_admin(s, password=PASSWORD)
    with db.session() as s:
        token, _ctx = issue_token(
            s, user_name="admin", password=PASSWORD, project_name=None, ttl_s=3600
        )
    with db.session() as s:
        found = token_id_of(s, token=token)
    assert found is not None
    return found


def test_each_session_has_its_own_random_id_and_only_hashes_are_stored(db: Database) -> None:
    store, token_id = SessionStore(db), _token_id(db)
    a, b = store.new(token_id=token_id), store.new(token_id=token_id)
    assert len({a.id, b.id, a.csrf_token, b.csrf_token}) == 4
    assert len(a.id) >= 40 and len(a.csrf_token) >= 40
    assert a.id not in repr(a) and a.csrf_token not in repr(a)
    got = store.get(a.id)
    assert got is not None and got.token_id == token_id and got.csrf_token == a.csrf_token
    assert store.get("no-such-id") is None and store.get(None) is None
    with db.session() as s:  # a database dump holds neither the id nor the CSRF token
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM dashboard_sessions"))
                        for v in row)  # fmt: skip
    assert a.id not in dump and a.csrf_token not in dump and b.id not in dump


def test_csrf_tokens_must_match_exactly(db: Database) -> None:
    session = SessionStore(db).new(token_id=_token_id(db))
    assert session.csrf_matches(session.csrf_token)
    for wrong in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é"):
        assert not session.csrf_matches(wrong)


def test_another_instance_and_a_restart_serve_the_same_sessions(db: Database) -> None:
    """Two stores on one database (two orbit-server instances, or one restarted): a session
    made by one is the other's, and so is the log-in form's signing key."""
    first, second = SessionStore(db), SessionStore(db)
    session = first.new(token_id=_token_id(db))
    other = second.get(session.id)
    assert other is not None and other.csrf_token == session.csrf_token
    form_token = first.login_csrf("nonce-1")
    assert second.login_csrf_matches("nonce-1", form_token)
    second.drop(session.id)
    assert first.get(session.id) is None


def test_idle_sessions_expire_and_use_keeps_them_alive(db: Database) -> None:
    clock = Clock()
    store, token_id = SessionStore(db, idle_timeout_s=600.0, clock=clock), _token_id(db)
    kept, idle = store.new(token_id=token_id), store.new(token_id=token_id)
    clock.advance(500)
    assert store.get(kept.id) is not None  # used: its last use is written (older than 60 s)
    clock.advance(500)  # idle: 1000 s unused; kept: 500 s
    assert store.get(idle.id) is None
    assert store.get(kept.id) is not None
    clock.advance(601)
    store.new(token_id=token_id)  # a new session also sweeps the idle ones
    assert len(store) == 1


def test_the_store_is_bounded_least_recently_used_first(db: Database) -> None:
    clock = Clock()
    store, token_id = SessionStore(db, max_sessions=2, clock=clock), _token_id(db)
    first = store.new(token_id=token_id)
    clock.advance(100)
    second = store.new(token_id=token_id)
    clock.advance(100)
    store.get(first.id)  # used: second is now the least recently used
    clock.advance(100)
    store.new(token_id=token_id)
    assert store.get(second.id) is None and store.get(first.id) is not None
    assert len(store) == 2


def test_messages_are_shown_once_by_whichever_instance_serves_the_page(db: Database) -> None:
    token_id = _token_id(db)
    session = SessionStore(db).new(token_id=token_id)
    with db.session() as s:  # the request that flashes
        bound = SessionStore(db).get(session.id)
        assert bound is not None
        bound.db = s
        bound.flash("done")
        bound.flash("refused", FlashLevel.ERROR)
    with db.session() as s:  # the next page, on another instance
        page = SessionStore(db).get(session.id)
        assert page is not None
        page.db = s
        assert [(f.level, f.text) for f in page.pop_flashes()] == [
            (FlashLevel.INFO, "done"),
            (FlashLevel.ERROR, "refused"),
        ]
        assert page.pop_flashes() == []


def test_a_session_ends_with_its_token(db: Database) -> None:
    store, token_id = SessionStore(db), _token_id(db)
    session = store.new(token_id=token_id)
    with db.session() as s:
        revoke_token_id(s, token_id=token_id)
    assert store.get(session.id) is None
    with db.session() as s:
        assert s.scalar(select(SessionRow.id_hash)) is None
        assert s.get(Token, token_id) is None


def test_the_log_in_form_token_is_a_signature_of_the_browsers_cookie(db: Database) -> None:
    """Nothing is stored for a browser before it logs in: the log-in form's token is an
    HMAC of a value its cookie holds, under the key the instances share."""
    store = SessionStore(db)
    token = store.login_csrf("nonce-1")
    assert store.login_csrf_matches("nonce-1", token)
    for nonce, submitted in (("nonce-2", token), ("nonce-1", token[:-1]), (None, token),
                             ("nonce-1", None), ("", "")):  # fmt: skip
        assert not store.login_csrf_matches(nonce, submitted)
    for _ in range(1000):
        store.login_csrf("another")
    assert len(store) == 0
