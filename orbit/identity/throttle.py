"""Log-in throttling: password guessing gets slower with every failure.

Failed log-ins are counted per user name and per source address. Up to
:data:`FREE_FAILURES` failures of a user (:data:`FREE_SOURCE_FAILURES` of a source, which
may try many names) cost nothing; after that each attempt has to wait 1, 2, 4 ... 60 s
after the last failure, or it is refused at once (HTTP 429 with Retry-After) without a
password check, so an attacker spends no server CPU either. A successful log-in clears
the user's count; counts older than :data:`WINDOW_S` are forgotten. The state is this
process's memory, bounded (:data:`MAX_KEYS`, the oldest forgotten first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
