"""Dashboard sessions: fresh secrets, idle expiry, a bounded store, CSRF comparison."""

from __future__ import annotations

from orbit.dashboard.sessions import FlashLevel, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_each_session_has_its_own_random_id_and_csrf_token() -> None:
    store = SessionStore()
    a, b = store.new(), store.new(token="secret-token")
    assert len({a.id, b.id, a.csrf_token, b.csrf_token}) == 4
    assert len(a.id) >= 40 and len(a.csrf_token) >= 40
    assert a.token is None and b.token == "secret-token"
    assert "secret-token" not in repr(b)  # never in a log line by accident
    assert store.get(a.id) is a and store.get("no-such-id") is None and store.get(None) is None


def test_csrf_tokens_must_match_exactly() -> None:
    session = SessionStore().new()
    assert session.csrf_matches(session.csrf_token)
    for wrong in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é"):
        assert not session.csrf_matches(wrong)


def test_idle_sessions_expire_and_use_keeps_them_alive() -> None:
    clock = Clock()
    store = SessionStore(idle_timeout_s=60.0, clock=clock)
    kept, idle = store.new(), store.new()
    clock.now_s += 50
    assert store.get(kept.id) is kept
    clock.now_s += 50  # idle: 100 s unused; kept: 50 s
    assert store.get(idle.id) is None
    assert store.get(kept.id) is kept
    clock.now_s += 61
    store.new()  # a new session also sweeps the idle ones
    assert len(store) == 1


def test_the_store_is_bounded_least_recently_used_first() -> None:
    store = SessionStore(max_sessions=2)
    first, second = store.new(), store.new()
    store.get(first.id)  # used: second is now the least recently used
    store.new()
    assert store.get(second.id) is None and store.get(first.id) is first
    assert len(store) == 2


def test_flashes_are_shown_once() -> None:
    session = SessionStore().new()
    session.flash("done")
    session.flash("refused", FlashLevel.ERROR)
    assert [(f.level, f.text) for f in session.pop_flashes()] == [
        (FlashLevel.INFO, "done"),
        (FlashLevel.ERROR, "refused"),
    ]
    assert session.pop_flashes() == []


def test_anonymous_sessions_never_push_out_a_logged_in_one() -> None:
    """~10,000 cookie-less requests for the log-in page each make an anonymous session:
    they evict each other, never the browser that logged in."""
    store = SessionStore(max_sessions=100)
    logged_in = store.new(token="t")
    for _ in range(1000):
        store.new()
    assert store.get(logged_in.id) is logged_in
    assert len(store) == 100
    # only logged-in sessions left: the least recently used of them goes
    full = SessionStore(max_sessions=2)
    a, b = full.new(token="a"), full.new(token="b")
    c = full.new(token="c")
    assert full.get(a.id) is None and full.get(b.id) is b and full.get(c.id) is c
