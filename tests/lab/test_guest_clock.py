"""The guest's stalls on the host's clock (orbit/lab/guest_clock.py): the pure figures,
and on a lab host a VM stopped for a second."""

from __future__ import annotations

import time

import pytest

from orbit.lab.guest import Guests, GuestSpec, Heartbeat
from orbit.lab.guest_clock import Arrival, HeartbeatClock, Stalls, stalls, write_rate
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import connection

EVERY_100_MS = [0.1 * i for i in range(11)]  # 0.0 ... 1.0 s


@pytest.mark.parametrize(
    ("arrivals", "start", "end", "expected"),
    [
        (EVERY_100_MS, 0.25, 0.75, Stalls(0.0, 0.0, 0)),  # steady: no stall
        ([0.0, 0.1, 0.24, 0.3, 0.4], 0.0, 0.4, Stalls(0.0, 0.0, 0)),  # jitter under 150 ms
        ([0.0, 0.1, 0.6, 0.7, 0.8], 0.0, 0.8, Stalls(400.0, 400.0, 1)),  # one 500 ms gap
        ([0.0, 0.3, 0.4, 1.4, 1.5], 0.0, 1.5, Stalls(900.0, 1100.0, 2)),  # 300 and 1000 ms
        # the gap that spans the window's start counts: the stall began before it
        ([0.0, 1.0, 1.1], 0.5, 1.1, Stalls(900.0, 900.0, 1)),
        # nothing after the window: stalled until its end
        ([0.0, 0.1], 0.0, 2.1, Stalls(1900.0, 1900.0, 1)),
        ([], 0.0, 1.0, Stalls(900.0, 900.0, 1)),  # not a beat: stalled throughout
    ],
)
def test_stalls(arrivals: list[float], start: float, end: float, expected: Stalls) -> None:
    assert stalls(arrivals, start, end) == expected


def _arrival(at_s: float, pages: int) -> Arrival:
    return Arrival(at_s, "h1", Heartbeat(1, 0, pages, 0, 0, 0, 0))


def test_write_rate_is_per_second_of_host_time() -> None:
    beats = [_arrival(0.0, 0), _arrival(1.0, 1000), _arrival(3.0, 2000)]
    assert write_rate(beats, 0.5, 2.5) == pytest.approx(2000 / 3.0)  # 0.0 -> 3.0 s
    assert write_rate(beats, 0.0, 1.0) == pytest.approx(1000.0)
    assert write_rate(beats, 2.0, 3.5) is None  # no heartbeat after the window
    assert write_rate(beats[1:], 0.5, 2.0) is None  # none before it


def test_a_paused_guest_stalls_on_the_host_clock(lab: Lab, guests: Guests) -> None:
    """A VM stopped for a second is one stall of about a second on the host's clock, and
    every heartbeat is stamped once."""
    spec = GuestSpec("clock", memory_mib=128, wss_mib=8, rate_mib_s=2)
    guests.start("h1", spec)
    try:
        with HeartbeatClock(guests, "clock") as hb:
            assert hb.wait_for(lambda a: len(a) >= 5, timeout_s=10)
            with connection(lab.host("h1").uri) as conn:
                dom = conn.lookupByName("clock")
                paused_at = time.monotonic()
                dom.suspend()
                time.sleep(1.0)  # the fault under test: a VM stopped for a second
                dom.resume()
                resumed_at = time.monotonic()
            assert hb.wait_for(lambda a: a[-1].at_s > resumed_at + 0.5, timeout_s=10)
            arrivals = hb.arrivals()
        seen = stalls([a.at_s for a in arrivals], paused_at, resumed_at)
        assert seen.count == 1 and 900 <= seen.longest_ms <= 1300, seen
        assert all(a.host == "h1" for a in arrivals)
        seqs = [a.beat.seq for a in arrivals]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every line, once
    finally:
        guests.destroy("clock")
