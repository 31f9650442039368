"""The conductor's bookkeeping thread: migrations' starts and outcomes one at a time."""

from __future__ import annotations

import threading

import pytest

from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.errors import OrbitError
from orbit.virt.fake import FakeDriver

CALLERS = 6


def _conductor() -> Conductor:
    return Conductor(Database("sqlite://"), FakeDriver(), ServerConfig(driver="fake"))


def test_work_from_many_threads_runs_on_one_thread_one_at_a_time() -> None:
    """Six migration threads hand over their bookkeeping at once: each gets its own
    result, all of it ran on the bookkeeping thread, never two at a time."""
    conductor = _conductor()
    inside, most = 0, 0
    count_lock = threading.Lock()
    ran_on: list[str] = []
    results: dict[int, int] = {}
    start = threading.Barrier(CALLERS)
    release = threading.Event()

    def work(i: int) -> int:
        nonlocal inside, most
        with count_lock:
            inside += 1
            most = max(most, inside)
            ran_on.append(threading.current_thread().name)
        release.wait(0.05)  # long enough for the other callers to be waiting meanwhile
        with count_lock:
            inside -= 1
        return i * i

    def caller(i: int) -> None:
        start.wait()
        results[i] = conductor._booked(work, i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    conductor.stop(release=False)
    assert results == {i: i * i for i in range(CALLERS)}
    assert most == 1, most
    assert len(ran_on) == CALLERS
    assert all(name.startswith("conductor-books") for name in ran_on), ran_on


def test_an_error_reaches_the_caller_and_after_stop_work_runs_in_the_caller() -> None:
    conductor = _conductor()

    def failing() -> None:
        raise OrbitError("database down")

    with pytest.raises(OrbitError, match="database down"):
        conductor._booked(failing)
    conductor.stop(release=False)
    here = threading.current_thread().name
    assert conductor._booked(lambda: threading.current_thread().name) == here
