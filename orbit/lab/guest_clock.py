"""What the guest felt, on the host's clock.

The test guest prints a heartbeat every :data:`~orbit.lab.guest.HEARTBEAT_INTERVAL_S`
(100 ms) of its own time and measures its own gaps on that clock. Whether that clock runs
on while QEMU stops the VM depends on the accelerator and the guest's clock source (on
the lab's KVM it does: a pre-copy switch-over of 354 ms of QEMU downtime was a 448 ms gap
inside the guest and 454 ms on the host), so the figures here do not rely on it:
:class:`HeartbeatClock` stamps each heartbeat line with the host's monotonic clock as it
appears in the guest's serial log (on every host: the log moves with the VM), polled
every :data:`POLL_S`, and :func:`stalls` and :func:`write_rate` turn those arrivals into
the guest's longest stall, its total stalled time and its write rate, on the same clock
as every other figure of a benchmark.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orbit.lab.guest import HEARTBEAT_INTERVAL_S, Guests, Heartbeat, parse_heartbeat

#: how often the serial logs are read: the arrival times' resolution
POLL_S = 0.01
#: an interval between two heartbeats longer than this many heartbeat intervals is a stall
STALL_FACTOR = 1.5


@dataclass(frozen=True)
class Arrival:
    """A heartbeat and when (host monotonic seconds) it appeared, on which host."""

    at_s: float
    host: str
    beat: Heartbeat


@dataclass(frozen=True)
class Stalls:
    """The guest's stalls within a window: the longest, their sum and how many, in ms.

    A stall is an interval between two consecutive heartbeat arrivals longer than
    ``STALL_FACTOR`` heartbeat intervals; it counts as the interval minus one heartbeat
    interval (the time the guest should have taken to print the next one).
    """

    longest_ms: float
    total_ms: float
    count: int


def stalls(
    arrivals: Sequence[float],
    start_s: float,
    end_s: float,
    interval_s: float = HEARTBEAT_INTERVAL_S,
) -> Stalls:
    """The stalls among ``arrivals`` (sorted host times) that overlap ``[start_s, end_s]``:
    every interval from the last arrival before the window to the first one after it.
    A window with no arrival after it is measured up to ``end_s``."""
    times = sorted(arrivals)
    before = [t for t in times if t <= start_s]
    inside = [t for t in times if start_s < t < end_s]
    after = [t for t in times if t >= end_s]
    points = ([before[-1]] if before else [start_s]) + inside + [after[0] if after else end_s]
    longest = total = 0.0
    count = 0
    for a, b in itertools.pairwise(points):
        gap = b - a
        if gap > STALL_FACTOR * interval_s:
            stalled = gap - interval_s
            longest = max(longest, stalled)
            total += stalled
            count += 1
    return Stalls(round(longest * 1000, 1), round(total * 1000, 1), count)


def write_rate(arrivals: Sequence[Arrival], start_s: float, end_s: float) -> float | None:
    """Pages per second of host time the guest wrote between the last heartbeat at or
    before ``start_s`` and the first at or after ``end_s`` (None without both)."""
    before = [a for a in arrivals if a.at_s <= start_s]
    after = [a for a in arrivals if a.at_s >= end_s]
    if not before or not after or after[0].at_s <= before[-1].at_s:
        return None
    a, b = before[-1], after[0]
    return (b.beat.pages - a.beat.pages) / (b.at_s - a.at_s)


class HeartbeatClock:
    """Stamps the heartbeats of guest ``name`` on every lab host as they arrive.

    Use as a context manager; lines already in the logs when it starts are not stamped
    (their arrival time is unknown). ``clock`` is the host's monotonic clock.
    """

    def __init__(
        self,
        guests: Guests,
        name: str,
        *,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guests = guests
        self.name = name
        self.poll_s = poll_s
        self.clock = clock
        self._arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: per host: (the log's inode, bytes read from it)
        self._offsets: dict[str, tuple[int, int]] = {}
        self._partial: dict[str, bytes] = {}
        self._hosts = [h.name for h in guests.lab.hosts()]

    def __enter__(self) -> HeartbeatClock:
        for host in self._hosts:
            try:
                st = self._log(host).stat()
            except FileNotFoundError:
                continue
            self._offsets[host] = (st.st_ino, st.st_size)
        self._thread = threading.Thread(target=self._run, name=f"hb-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.poll()  # whatever arrived last

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def wait_for(self, cond: Callable[[list[Arrival]], bool], timeout_s: float) -> bool:
        """Wait until ``cond(arrivals)`` holds; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not cond(self.arrivals()):
            if time.monotonic() > deadline:
                return False
            time.sleep(self.poll_s)
        return True

    def _log(self, host: str) -> Path:
        return self.guests.serial_log(host, self.name)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        """Read what each host's log gained since the last poll and stamp its heartbeats."""
        for host in self._hosts:
            log = self._log(host)
            try:
                with log.open("rb") as f:
                    inode = os.fstat(f.fileno()).st_ino
                    known, offset = self._offsets.get(host, (inode, 0))
                    if known != inode:  # a new log (the guest started again there)
                        offset = 0
                        self._partial[host] = b""
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            now = self.clock()
            self._offsets[host] = (inode, offset + len(data))
            text = self._partial.get(host, b"") + data
            *lines, rest = text.split(b"\n")
            self._partial[host] = rest
            beats = [parse_heartbeat(line.decode(errors="replace").strip()) for line in lines]
            with self._lock:
                self._arrivals += [Arrival(now, host, hb) for hb in beats if hb is not None]
