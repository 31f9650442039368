"""The dispatcher's pace: a pass after requests stop arriving, at most every 0.5 s in a burst."""

from __future__ import annotations

import threading
import time

from orbit.conductor.conductor import DISPATCH_MAX_WAIT_S, DISPATCH_MIN_GAP_S, Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.virt.fake import FakeDriver


def _conductor() -> Conductor:
    return Conductor(Database("sqlite://"), FakeDriver(), ServerConfig(driver="fake"))


def test_one_request_is_dispatched_after_one_gap() -> None:
    conductor = _conductor()
    conductor.kick()
    began = time.monotonic()
    assert conductor._settle() is False
    assert DISPATCH_MIN_GAP_S <= time.monotonic() - began < DISPATCH_MAX_WAIT_S


def test_a_burst_of_requests_waits_for_its_end_but_no_longer_than_the_cap() -> None:
    conductor = _conductor()
    done = threading.Event()

    def requests() -> None:  # a kick every 20 ms, as a burst of requests does
        while not done.wait(0.02):
            conductor.kick()

    kicker = threading.Thread(target=requests)
    kicker.start()
    try:
        began = time.monotonic()
        assert conductor._settle() is False
        waited_s = time.monotonic() - began
    finally:
        done.set()
        kicker.join()
    assert DISPATCH_MAX_WAIT_S <= waited_s < DISPATCH_MAX_WAIT_S + DISPATCH_MIN_GAP_S + 0.5
    assert conductor._wake.is_set()  # the requests of the last gap get the next pass


def test_a_stop_ends_the_wait() -> None:
    conductor = _conductor()
    conductor._stop.set()
    assert conductor._settle() is True
