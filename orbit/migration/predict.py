"""What each strategy would cost, predicted before a migration starts: a pure model.

Beside :func:`orbit.migration.policy.decide`, and like it pure (no clock, no I/O): from
the guest's RAM, its measured dirty rate and working set, and the link's transfer rate,
:func:`predict` estimates for pre-copy to convergence and for post-copy after 0, 1 and 2
passes the total time, the time in post-copy, the bytes sent and the downtime;
:func:`choose` picks the strategy with the least *score*.

The model
    Pass 1 sends the whole memory (``first_pass_bytes``: RAM, less the pages the guest
    never wrote if that is known) in ``t1 = first_pass / bandwidth``. Every later pass
    sends what the guest dirtied during the previous one, at most its working set:
    ``sent_k = min(wss, dirty_rate * t_{k-1})``. Pre-copy converges once a remainder can
    be sent within the downtime limit; QEMU then stops the VM and sends it (the downtime).
    It never converges when the remainder stops shrinking, i.e. the guest dirties its
    working set at least as fast as the link sends it.

    Post-copy after N passes switches once pass N has ended (N = 0: at once). What is left
    then, everything for N = 0 and the pages dirtied during pass N otherwise, is pulled by
    the destination at the link's rate: that is the time in post-copy, during which the
    VM depends on both hosts. A migration that converges before its N-th pass is plain
    pre-copy.

The objective
    ``score = total_s + postcopy_weight * postcopy_s``: each second in which the VM runs
    on the destination with memory still on the source counts ``1 + postcopy_weight``
    times (default 1, so twice). Weight 0 chooses the fastest to finish; a large weight
    chooses post-copy only when pre-copy cannot finish. A strategy that would not finish
    within the completion timeout is never chosen while another would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from orbit.migration.model import MIB

#: How long the switch to post-copy stops the VM (QEMU measured 3-9 ms on the lab).
SWITCH_DOWNTIME_MS = 10
#: Pre-copy passes the model follows before it calls a migration non-converging.
MAX_PASSES = 50
#: A pass that leaves at least this share of what the previous pass sent is not shrinking.
NOT_SHRINKING = 0.99
DEFAULT_POSTCOPY_WEIGHT = 1.0


class Strategy(StrEnum):
    PRECOPY = "precopy"
    POSTCOPY_AFTER_0 = "postcopy-after-0"
    POSTCOPY_AFTER_1 = "postcopy-after-1"
    POSTCOPY_AFTER_2 = "postcopy-after-2"

    @property
    def switch_after(self) -> int | None:
        """Passes before the switch to post-copy; None for pre-copy."""
        return None if self is Strategy.PRECOPY else int(self.value.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Facts:
    """What is known before the migration starts, in bytes, bytes/s and milliseconds."""

    ram_bytes: int
    dirty_rate_bytes_s: float
    bandwidth_bytes_s: float
    downtime_limit_ms: int
    #: memory dirtied between two passes is at most this; None = the whole RAM
    wss_bytes: int | None = None
    #: what pass 1 sends; None = the whole RAM
    first_pass_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.ram_bytes <= 0 or self.bandwidth_bytes_s <= 0 or self.dirty_rate_bytes_s < 0:
            raise ValueError(
                f"facts out of range: RAM {self.ram_bytes} B, bandwidth "
                f"{self.bandwidth_bytes_s} B/s, dirty rate {self.dirty_rate_bytes_s} B/s"
            )


@dataclass(frozen=True)
class Prediction:
    strategy: Strategy
    #: False: pre-copy that never converges (total_s is then infinite)
    finishes: bool
    total_s: float
    postcopy_s: float
    bytes_sent: int
    downtime_ms: int
    #: pre-copy passes before convergence or the switch
    passes: int

    def score(self, postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT) -> float:
        return self.total_s + postcopy_weight * self.postcopy_s

    def summary(self) -> str:
        """One line with numbers, for the migration record."""
        if not self.finishes:
            return f"{self.strategy.value}: does not converge"
        return (
            f"{self.strategy.value}: {self.total_s:.1f} s ({self.postcopy_s:.1f} s in "
            f"post-copy), {self.bytes_sent / MIB:.0f} MiB, downtime {self.downtime_ms} ms"
        )


def predict(facts: Facts, strategy: Strategy) -> Prediction:
    """The predicted cost of migrating with ``strategy``; see the module docstring."""
    b = facts.bandwidth_bytes_s
    wss = facts.ram_bytes if facts.wss_bytes is None else min(facts.wss_bytes, facts.ram_bytes)
    first = facts.ram_bytes if facts.first_pass_bytes is None else facts.first_pass_bytes
    limit_bytes = b * facts.downtime_limit_ms / 1000
    switch_after = strategy.switch_after

    if switch_after == 0:
        return Prediction(strategy, True, first / b, first / b, first, SWITCH_DOWNTIME_MS, passes=0)
    elapsed = first / b  # pass 1
    sent = float(first)
    last = float(first)
    for passes in range(1, MAX_PASSES + 1):
        dirtied = min(float(wss), facts.dirty_rate_bytes_s * (last / b))
        if dirtied <= limit_bytes:  # converged: stop and copy the rest
            downtime_ms = round(dirtied / b * 1000)
            return Prediction(
                strategy,
                True,
                elapsed + dirtied / b,
                0.0,
                round(sent + dirtied),
                downtime_ms,
                passes,
            )
        if switch_after is not None and passes >= switch_after:  # switch: pull the rest
            return Prediction(
                strategy,
                True,
                elapsed + dirtied / b,
                dirtied / b,
                round(sent + dirtied),
                SWITCH_DOWNTIME_MS,
                passes,
            )
        if switch_after is None and dirtied >= NOT_SHRINKING * last:
            break  # pre-copy never converges
        elapsed += dirtied / b
        sent += dirtied
        last = dirtied
    return Prediction(strategy, False, math.inf, 0.0, round(sent), 0, MAX_PASSES)


def predict_all(facts: Facts) -> list[Prediction]:
    return [predict(facts, s) for s in Strategy]


def choose(
    predictions: list[Prediction],
    *,
    timeout_s: float,
    postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT,
) -> Prediction:
    """The prediction with the least score among those that finish within ``timeout_s``.

    If none does, the one that finishes soonest (post-copy always finishes). Ties go to
    the earlier strategy in ``Strategy`` order (pre-copy first).
    """
    if not predictions:
        raise ValueError("nothing to choose from")
    within = [p for p in predictions if p.finishes and p.total_s <= timeout_s]
    if within:
        return min(within, key=lambda p: p.score(postcopy_weight))
    return min(predictions, key=lambda p: p.total_s)
