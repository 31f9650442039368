"""Log-in throttling: password guessing gets slower with every failure.

Failed log-ins are counted per user name and per source address. Up to
:data:`FREE_FAILURES` failures of a user (:data:`FREE_SOURCE_FAILURES` of a source, which
may try many names) cost nothing; after that each attempt has to wait 1, 2, 4 ... 60 s
after the last failure, or it is refused at once (HTTP 429 with Retry-After) without a
password check, so an attacker spends no server CPU either. A successful log-in clears
the user's count; counts older than :data:`WINDOW_S` are forgotten. The state is this
process's memory, bounded (:data:`MAX_KEYS`, the oldest forgotten first).

Whatever the names and sources, password checks together take at most half of the CPUs
(:class:`CheckGate`): guessing from many addresses cannot slow other users' requests down.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orbit.errors import TooManyAttempts

FREE_FAILURES = 5
FREE_SOURCE_FAILURES = 20
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 60.0
WINDOW_S = 900.0
MAX_KEYS = 10_000


@dataclass
class _Failures:
    count: int
    last_at: float


def wait_s(failures: int, free: int) -> float:
    """Seconds an attempt must wait after the last of ``failures`` failures (0: none)."""
    if failures < free:
        return 0.0
    return min(MAX_WAIT_S, FIRST_WAIT_S * 2.0 ** min(failures - free, 16))


class LoginThrottle:
    """Counts failed log-ins; :meth:`retry_after_s` says how long an attempt must wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    @staticmethod
    def _keys(user: str, source: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return (f"user:{user}", FREE_FAILURES), (f"source:{source}", FREE_SOURCE_FAILURES)

    def retry_after_s(self, user: str, source: str) -> float:
        """0 if an attempt may go ahead now, else the seconds it has to wait."""
        now = self.clock()
        longest = 0.0
        with self._lock:
            for key, free in self._keys(user, source):
                f = self._failures.get(key)
                if f is None or now - f.last_at > WINDOW_S:
                    continue
                longest = max(longest, f.last_at + wait_s(f.count, free) - now)
        return max(0.0, longest)

    def source_retry_after_s(self, source: str) -> float:
        """The wait the source alone imposes (0: none): answerable before reading a body."""
        now = self.clock()
        with self._lock:
            f = self._failures.get(f"source:{source}")
            if f is None or now - f.last_at > WINDOW_S:
                return 0.0
            return max(0.0, f.last_at + wait_s(f.count, FREE_SOURCE_FAILURES) - now)

    def failed(self, user: str, source: str) -> None:
        now = self.clock()
        with self._lock:
            for key, _free in self._keys(user, source):
                f = self._failures.pop(key, None)
                count = 1 if f is None or now - f.last_at > WINDOW_S else f.count + 1
                self._failures[key] = _Failures(count, now)  # the newest last
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user}", None)


#: password checks running at once: half the CPUs (scrypt takes one whole core for ~50 ms;
#: the other half keeps serving everything else)
CHECK_SLOTS = max(1, (os.cpu_count() or 2) // 2)
#: log-ins allowed to wait for a slot; more are refused at once (429), so that waiting
#: log-ins never take all of the server's worker threads
CHECK_QUEUE = 4 * CHECK_SLOTS
#: what a log-in refused for a full queue is told to wait
BUSY_RETRY_S = 1.0


class CheckGate:
    """Bounds the CPU that password checks take, whoever sends them (many sources, many
    names): at most :data:`CHECK_SLOTS` at once, :data:`CHECK_QUEUE` waiting; beyond that a
    log-in is refused with TooManyAttempts before any work. Hold it around the hash only,
    never around I/O."""

    def __init__(self, slots: int = CHECK_SLOTS, queue: int = CHECK_QUEUE) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._inside = 0
        self._limit = slots + queue

    @property
    def admitted(self) -> int:
        """Log-ins checking or waiting for a slot now."""
        with self._lock:
            return self._inside

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._inside >= self._limit:
                raise TooManyAttempts(BUSY_RETRY_S)
            self._inside += 1
        try:
            with self._slots:
                yield
        finally:
            with self._lock:
                self._inside -= 1


#: the process's gate (the API's and the dashboard's log-ins share the CPU)
PASSWORD_CHECKS = CheckGate()
