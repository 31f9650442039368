"""Log-in throttling (orbit/identity/throttle.py), on a clock the test moves."""

from __future__ import annotations

import threading
import time

import pytest

from orbit.errors import TooManyAttempts
from orbit.identity.throttle import (
    FREE_FAILURES,
    FREE_SOURCE_FAILURES,
    MAX_KEYS,
    MAX_WAIT_S,
    WINDOW_S,
    CheckGate,
    LoginThrottle,
    wait_s,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0), (4, 0), (5, 1), (6, 2), (7, 4), (10, 32), (11, MAX_WAIT_S), (10_000, MAX_WAIT_S)],
)
def test_wait_doubles_after_the_free_failures(failures: int, expected: float) -> None:
    assert wait_s(failures, FREE_FAILURES) == expected


def test_a_user_is_throttled_after_five_failures_and_freed_by_a_success() -> None:
    clock = Clock()
    t = LoginThrottle(clock)
    for _ in range(FREE_FAILURES):
        assert t.retry_after_s("alice", "10.0.0.1") == 0
        t.failed("alice", "10.0.0.1")
    assert t.retry_after_s("alice", "10.0.0.1") == 1.0
    assert t.retry_after_s("alice", "10.0.0.2") == 1.0  # per user, from anywhere
    assert t.retry_after_s("bob", "10.0.0.1") == 0  # the source is not yet throttled
    clock.now += 1.0
    assert t.retry_after_s("alice", "10.0.0.1") == 0
    t.failed("alice", "10.0.0.1")
    assert t.retry_after_s("alice", "10.0.0.1") == 2.0
    t.succeeded("alice")
    assert t.retry_after_s("alice", "10.0.0.3") == 0


def test_a_source_trying_many_names_is_throttled() -> None:
    t = LoginThrottle(Clock())
    for i in range(FREE_SOURCE_FAILURES):
        t.failed(f"user{i}", "10.0.0.9")
    assert t.retry_after_s("someone-else", "10.0.0.9") == 1.0
    assert t.retry_after_s("someone-else", "10.0.0.8") == 0


def test_old_failures_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    t = LoginThrottle(clock)
    for _ in range(FREE_FAILURES + 3):
        t.failed("alice", "a")
    clock.now += WINDOW_S + 1
    assert t.retry_after_s("alice", "a") == 0
    t.failed("alice", "a")  # counts from 1 again
    assert t.retry_after_s("alice", "a") == 0
    for i in range(MAX_KEYS):
        t.failed(f"u{i}", f"s{i}")
    assert len(t._failures) == MAX_KEYS


def test_password_checks_are_bounded_whoever_sends_them() -> None:
    """At most ``slots`` checks run and ``queue`` wait; the next is refused at once."""
    gate = CheckGate(slots=1, queue=1)
    release = threading.Event()

    def check() -> None:
        with gate.slot():
            release.wait(10)

    running, waiting = threading.Thread(target=check), threading.Thread(target=check)
    running.start()
    waiting.start()
    deadline = time.monotonic() + 10
    while gate.admitted < 2:  # one checking, one waiting for the slot
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(TooManyAttempts), gate.slot():
        pass
    release.set()
    running.join(10)
    waiting.join(10)
    assert gate.admitted == 0
    with gate.slot():  # free again
        assert gate.admitted == 1
