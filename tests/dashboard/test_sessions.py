"""Dashboard sessions: fresh secrets, idle expiry, a bounded store, CSRF comparison, and the
log-in form's signed CSRF token (no session before a log-in)."""

from __future__ import annotations

from orbit.dashboard.sessions import FlashLevel, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_each_session_has_its_own_random_id_and_csrf_token() -> None:
    store = SessionStore()
    a, b = store.new(token="t"), store.new(token="secret-token")
    assert len({a.id, b.id, a.csrf_token, b.csrf_token}) == 4
    assert len(a.id) >= 40 and len(a.csrf_token) >= 40
    assert b.token == "secret-token"
    assert "secret-token" not in repr(b)  # never in a log line by accident
    assert store.get(a.id) is a and store.get("no-such-id") is None and store.get(None) is None


def test_csrf_tokens_must_match_exactly() -> None:
    session = SessionStore().new(token="t")
    assert session.csrf_matches(session.csrf_token)
    for wrong in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é"):
        assert not session.csrf_matches(wrong)


def test_idle_sessions_expire_and_use_keeps_them_alive() -> None:
    clock = Clock()
    store = SessionStore(idle_timeout_s=60.0, clock=clock)
    kept, idle = store.new(token="t"), store.new(token="t")
    clock.now_s += 50
    assert store.get(kept.id) is kept
    clock.now_s += 50  # idle: 100 s unused; kept: 50 s
    assert store.get(idle.id) is None
    assert store.get(kept.id) is kept
    clock.now_s += 61
    store.new(token="t")  # a new session also sweeps the idle ones
    assert len(store) == 1


def test_the_store_is_bounded_least_recently_used_first() -> None:
    store = SessionStore(max_sessions=2)
    first, second = store.new(token="t"), store.new(token="t")
    store.get(first.id)  # used: second is now the least recently used
    store.new(token="t")
    assert store.get(second.id) is None and store.get(first.id) is first
    assert len(store) == 2


def test_flashes_are_shown_once() -> None:
    session = SessionStore().new(token="t")
    session.flash("done")
    session.flash("refused", FlashLevel.ERROR)
    assert [(f.level, f.text) for f in session.pop_flashes()] == [
        (FlashLevel.INFO, "done"),
        (FlashLevel.ERROR, "refused"),
    ]
    assert session.pop_flashes() == []


def test_the_log_in_form_token_is_a_signature_of_the_browsers_cookie() -> None:
    """Nothing is stored for a browser before it logs in: the log-in form's token is an
    HMAC of a value its cookie holds, under this process's secret."""
    store = SessionStore()
    token = store.login_csrf("nonce-1")
    assert store.login_csrf_matches("nonce-1", token)
    for nonce, submitted in (("nonce-2", token), ("nonce-1", token[:-1]), (None, token),
                             ("nonce-1", None), ("", "")):  # fmt: skip
        assert not store.login_csrf_matches(nonce, submitted)
    assert not SessionStore().login_csrf_matches("nonce-1", token)  # a restart: a new secret
    for _ in range(1000):
        store.login_csrf("another")
    assert len(store) == 0
