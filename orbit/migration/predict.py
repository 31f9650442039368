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

from orbit.migration.model import DEFAULT_POSTCOPY_WEIGHT, MIB

#: How long the switch to post-copy stops the VM (QEMU measured 3-9 ms on the lab).
SWITCH_DOWNTIME_MS = 10
#: Pre-copy passes the model follows before it calls a migration non-converging.
MAX_PASSES = 50
#: A pass that leaves at least this share of what the previous pass sent is not shrinking.
NOT_SHRINKING = 0.99


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

    @property
    def first_pass_bytes_or_ram(self) -> int:
        return self.ram_bytes if self.first_pass_bytes is None else self.first_pass_bytes


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


#: Assumed link rate when there is neither history nor a configured rate (1 Gbit/s).
DEFAULT_LINK_BYTES_S = 125_000_000
#: Re-plan when a measured rate differs from the plan's by more than this share.
DRIFT = 0.25
#: Seconds of pre-copy transfer before its rate replaces the plan's link rate.
TRANSFER_WINDOW_S = 1.0


@dataclass(frozen=True)
class Link:
    """What the engine knows of the link's transfer rate before it sends a byte."""

    bytes_s: float
    #: where the figure comes from, one line, e.g. "median of 3 past migrations h1 -> h2"
    source: str


@dataclass(frozen=True)
class Plan:
    """The strategy chosen before the migration started, with what it was chosen from."""

    facts: Facts
    link_source: str
    dirty_rate_mode: str
    postcopy_weight: float
    timeout_s: float
    chosen: Prediction
    predictions: tuple[Prediction, ...]
    #: seconds the measurement took (counted in the migration's total)
    measured_in_s: float = 0.0

    def reason(self) -> str:
        """Why this strategy, one line with numbers."""
        f = self.facts
        others = "; ".join(p.summary() for p in self.predictions if p is not self.chosen)
        return (
            f"plan {self.chosen.summary()} [score {self.chosen.score(self.postcopy_weight):.1f}]"
            f" from dirty rate {f.dirty_rate_bytes_s / MIB:.1f} MiB/s ({self.dirty_rate_mode}),"
            f" link {f.bandwidth_bytes_s / MIB:.1f} MiB/s ({self.link_source}),"
            f" {f.first_pass_bytes_or_ram / MIB:.0f} MiB to send first; others: {others}"
        )

    def to_dict(self) -> dict[str, object]:
        """For the migration record (JSON)."""
        c = self.chosen
        return {
            "strategy": c.strategy.value,
            "total_s": round(c.total_s, 2),
            "postcopy_s": round(c.postcopy_s, 2),
            "bytes": c.bytes_sent,
            "downtime_ms": c.downtime_ms,
            "score": round(c.score(self.postcopy_weight), 2),
            "postcopy_weight": self.postcopy_weight,
            "dirty_rate_bytes_s": round(self.facts.dirty_rate_bytes_s),
            "dirty_rate_mode": self.dirty_rate_mode,
            "link_bytes_s": round(self.facts.bandwidth_bytes_s),
            "link_source": self.link_source,
            "first_pass_bytes": self.facts.first_pass_bytes_or_ram,
            "measured_in_s": round(self.measured_in_s, 2),
            "others": {
                p.strategy.value: (round(p.total_s, 2) if p.finishes else None)
                for p in self.predictions
                if p is not c
            },
        }


def make_plan(
    facts: Facts,
    *,
    link_source: str,
    dirty_rate_mode: str,
    timeout_s: float,
    postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT,
    measured_in_s: float = 0.0,
) -> Plan:
    predictions = tuple(predict_all(facts))
    chosen = choose(list(predictions), timeout_s=timeout_s, postcopy_weight=postcopy_weight)
    return Plan(
        facts,
        link_source,
        dirty_rate_mode,
        postcopy_weight,
        timeout_s,
        chosen,
        predictions,
        measured_in_s,
    )


@dataclass(frozen=True)
class Refined:
    """The plan re-made from what the migration has measured so far."""

    chosen: Prediction
    #: what drifted, one line ("" when nothing did and the plan stands)
    drift: str


def refine(
    plan: Plan,
    *,
    transfer_bytes_s: float | None,
    dirty_bytes_s: float | None,
) -> Refined:
    """Re-plan when the link's measured transfer rate or QEMU's dirty rate drifted.

    A rate replaces the plan's when it differs by more than :data:`DRIFT`; QEMU's dirty
    rate only ever raises the plan's (it is a per-pass average, low when the guest rewrites
    a small working set: a drop says nothing; a rise says the guest turned hot).
    Pure: the same plan and rates always give the same answer.
    """
    f = plan.facts
    changes: list[str] = []
    bandwidth = f.bandwidth_bytes_s
    dirty = f.dirty_rate_bytes_s
    if transfer_bytes_s and abs(transfer_bytes_s - bandwidth) > DRIFT * bandwidth:
        changes.append(
            f"link {transfer_bytes_s / MIB:.1f} MiB/s measured, not {bandwidth / MIB:.1f}"
        )
        bandwidth = transfer_bytes_s
    if dirty_bytes_s and dirty_bytes_s > (1 + DRIFT) * dirty:
        changes.append(f"dirty rate rose to {dirty_bytes_s / MIB:.1f} MiB/s from {dirty / MIB:.1f}")
        dirty = dirty_bytes_s
    if not changes:
        return Refined(plan.chosen, "")
    facts = Facts(
        ram_bytes=f.ram_bytes,
        dirty_rate_bytes_s=dirty,
        bandwidth_bytes_s=bandwidth,
        downtime_limit_ms=f.downtime_limit_ms,
        wss_bytes=f.wss_bytes,
        first_pass_bytes=f.first_pass_bytes,
    )
    chosen = choose(
        predict_all(facts), timeout_s=plan.timeout_s, postcopy_weight=plan.postcopy_weight
    )
    return Refined(chosen, "; ".join(changes))
