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

    Every migration also spends ``start_s`` before its first byte (libvirt prepares the
    destination) and ``finish_s`` after its last (the destination takes over, the source
    confirms); in a switched migration ``finish_s`` is time in post-copy. A *hot set*
    (``hot_set``) is a working set rewritten faster than any pass is short: every pass,
    however short, finds all of it dirty again.

    A plan made while pass 1 runs (the dirty rate is measured beside it) predicts from
    then: ``start_s`` is the time spent so far, ``first_pass_bytes`` what pass 1 has left
    and ``first_pass_elapsed_s`` how long it has run, ``first_pass_sent_bytes`` what it
    has sent; post-copy at once then also pulls again what the guest dirtied of that.

The objective
    ``score = total_s + postcopy_weight * postcopy_s``: each second in which the VM runs
    on the destination with memory still on the source counts ``1 + postcopy_weight``
    times (default 1, so twice). Weight 0 chooses the fastest to finish; a large weight
    chooses post-copy only when pre-copy cannot finish. A strategy that would not finish
    within the completion timeout is never chosen while another would.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
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
    #: what pass 1 sends; None = the whole RAM (what it has left, once it has run a while)
    first_pass_bytes: int | None = None
    #: seconds pass 1 has run already, and what it has sent (a plan made during it;
    #: start_s then counts those seconds)
    first_pass_elapsed_s: float = 0.0
    first_pass_sent_bytes: int = 0
    #: every pass finds the whole working set dirty again, however short it is
    hot_set: bool = False
    #: seconds before the first byte moves, and after the last one
    start_s: float = 0.0
    finish_s: float = 0.0

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
    start, finish = facts.start_s, facts.finish_s

    ran = facts.first_pass_elapsed_s
    if switch_after == 0:
        # what pass 1 has left, and what it sent and the guest dirtied again meanwhile
        again = min(float(wss), facts.dirty_rate_bytes_s * ran, facts.first_pass_sent_bytes)
        pulled = first + round(again)
        pull_s = pulled / b + finish
        return Prediction(
            strategy, True, start + pull_s, pull_s, pulled, SWITCH_DOWNTIME_MS, passes=0
        )
    elapsed = start + first / b  # pass 1
    sent = float(first)
    last = float(first)
    span = ran + first / b  # the seconds of the pass whose dirtied pages the next one sends
    for passes in range(1, MAX_PASSES + 1):
        dirtied = float(wss) if facts.hot_set else min(float(wss), facts.dirty_rate_bytes_s * span)
        if dirtied <= limit_bytes:  # converged: stop and copy the rest
            downtime_ms = round(dirtied / b * 1000)
            return Prediction(
                strategy,
                True,
                elapsed + dirtied / b + finish,
                0.0,
                round(sent + dirtied),
                downtime_ms,
                passes,
            )
        if switch_after is not None and passes >= switch_after:  # switch: pull the rest
            return Prediction(
                strategy,
                True,
                elapsed + dirtied / b + finish,
                dirtied / b + finish,
                round(sent + dirtied),
                SWITCH_DOWNTIME_MS,
                passes,
            )
        if switch_after is None and dirtied >= NOT_SHRINKING * last:
            break  # pre-copy never converges
        elapsed += dirtied / b
        sent += dirtied
        last = dirtied
        span = dirtied / b
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
#: Seconds before a migration's first byte and after its last (libvirt's preparation of
#: the destination; the take-over and the source's confirmation), fitted to the lab's
#: totals (KVM, QEMU 7.2, libvirt 9.0, 512 MiB, 400 mbit/s; benchmarks/results/kvm/
#: policies.json of 5f05846): a quiet guest's 10 MiB took 0.87-0.93 s in all, so 0.7 s
#: is fixed, whatever the size; the first switch to post-copy came 0.4-0.5 s after the
#: request.
DEFAULT_START_S = 0.3
DEFAULT_FINISH_S = 0.4
#: Share of a configured link rate that carries migration data (TCP/IP headers, the
#: shaper's own accounting): 481 MiB pulled in 10.37 s over 400 mbit/s = 0.97 x 47.7 MiB/s.
LINK_PAYLOAD_SHARE = 0.97
#: A QEMU process's own resident memory (code, libraries, buffers) beside the guest's RAM:
#: 35-45 MiB on the lab. Resident memory less this is what the guest has written.
QEMU_OWN_BYTES = 40 * MIB
#: Re-plan when a measured rate differs from the plan's by more than this share.
DRIFT = 0.25
#: Seconds of pre-copy transfer before its rate replaces the plan's link rate.
TRANSFER_WINDOW_S = 1.0
#: The period of the dirty-rate measurement the plan is made from.
MEASURE_PERIOD_S = 1
#: Pass 1 dirtied less than this share of what the measured rate predicts: saturated.
SATURATED = 0.6
#: The one-second measurement found this share of the saturated set dirty: a hot set.
HOT_SET_SHARE = 0.8
#: The granularity of KVM's dirty log, and of its write faults (x86 pages).
PAGE_BYTES = 4096
#: Seconds of write faults over which the rate of new dirty pages is taken.
FAULT_WINDOW_S = 0.5
#: Seconds of write faults seen in pass 1 before post-copy at once is started on a plan's
#: word alone (whether the faults can be trusted is known only then too). The guest's
#: first writes after each protection (the measurement's, then the job's) come in a
#: burst, and only after it does a saturated working set show as a rate of new pages well
#: below the measured dirty rate. On the lab (KVM, 512 MiB, a hot set of 32 MiB) the
#: counts read 11,207 pages at the first sample (0.49 s), 16,404 at 0.81 s and no more
#: during the pass. A burst that runs longer only keeps the plan's post-copy at once, as
#: without faults.
FAULT_SETTLE_S = 0.75
#: Write faults are trusted when, since the measurement began, they counted at least
#: this share of what it measured in its period (a host whose KVM logs dirty pages
#: without write protection, Intel PML, counts none).
FAULTS_SEEN = 0.3
#: ... and at least this many bytes of new pages (a guest measured at 0 MiB/s, libvirt's
#: whole MiB/s, would trust any fault, and KVM counts other faults too: first touches)
FAULTS_SEEN_MIN_BYTES = 4 * MIB
#: New pages must also come this much faster than measured to say the guest turned hot.
HOTTER_MIN_BYTES_S = 1 * MIB


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
    #: seconds after the request when the plan was made (the measurement runs beside the
    #: first pass, so it costs the migration nothing)
    made_at_s: float = 0.0
    #: what the guest's previous migration told of its working set ("" when nothing)
    prior: str = ""

    def reason(self) -> str:
        """Why this strategy, one line with numbers."""
        f = self.facts
        others = "; ".join(p.summary() for p in self.predictions if p is not self.chosen)
        return (
            f"plan {self.chosen.summary()} [score {self.chosen.score(self.postcopy_weight):.1f}]"
            f" from dirty rate {f.dirty_rate_bytes_s / MIB:.1f} MiB/s ({self.dirty_rate_mode}),"
            f" link {f.bandwidth_bytes_s / MIB:.1f} MiB/s ({self.link_source}),"
            f" {f.first_pass_bytes_or_ram / MIB:.0f} MiB to send first"
            + (f"; its last migration: {self.prior}" if self.prior else "")
            + f"; others: {others}"
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
            "made_at_s": round(self.made_at_s, 2),
            "prior": self.prior,
            "others": {
                p.strategy.value: (round(p.total_s, 2) if p.finishes else None)
                for p in self.predictions
                if p is not c
            },
        }


def guest_bytes(resident_bytes: int, ram_bytes: int) -> int:
    """What the guest has written, from its QEMU process's resident memory."""
    return max(0, min(ram_bytes, resident_bytes - QEMU_OWN_BYTES))


def configured_link(bytes_s: float, source: str) -> Link:
    """A link whose line rate an operator configured: the rate migration data gets."""
    return Link(bytes_s * LINK_PAYLOAD_SHARE, source)


def make_plan(
    facts: Facts,
    *,
    link_source: str,
    dirty_rate_mode: str,
    timeout_s: float,
    postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT,
    made_at_s: float = 0.0,
    previous_pass1: tuple[float, float] | None = None,
) -> Plan:
    """The plan: every strategy predicted, the least score chosen. ``previous_pass1`` (what
    the guest dirtied during the first pass of its previous migration, and that pass's
    seconds) tells its working set before this migration has sent a byte."""
    prior = ""
    if previous_pass1 is not None and facts.wss_bytes is None:
        found = working_set(facts, previous_pass1)
        if found is not None:
            wss, hot_set, prior = found
            facts = replace(facts, wss_bytes=wss, hot_set=hot_set)
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
        made_at_s,
        prior,
    )


@dataclass(frozen=True)
class NewPages:
    """What KVM's write faults said so far of pass 1 (see
    :meth:`~orbit.virt.driver.HypervisorDriver.new_page_faults`): the pages the guest
    dirtied that were not dirty yet, while the pass runs."""

    #: new dirty pages since the dirty-rate measurement began, in bytes
    since_measure_bytes: int
    #: the rate of new dirty pages over the last ``window_s`` seconds
    rate_bytes_s: float
    window_s: float
    #: seconds from the first count of the pass to the latest
    seen_s: float
    #: the rate of new dirty pages from the start of the window that first could settle
    #: (:data:`FAULT_SETTLE_S` - :data:`FAULT_WINDOW_S` after the first count) to the
    #: latest count; None: as ``rate_bytes_s``
    settled_rate_bytes_s: float | None = None

    def trusted(self, f: Facts) -> bool:
        """The faults count dirtied pages (see :data:`FAULTS_SEEN`)."""
        expected = f.dirty_rate_bytes_s * MEASURE_PERIOD_S
        return self.since_measure_bytes >= max(FAULTS_SEEN * expected, FAULTS_SEEN_MIN_BYTES)

    @property
    def settled(self) -> bool:
        return self.seen_s >= FAULT_SETTLE_S

    @property
    def saturation_rate_bytes_s(self) -> float:
        """The rate a saturated set is judged on: the lower of the last window's and the
        whole settled period's. The window sees a set saturate as soon as a burst of first
        writes ends; the period keeps what it saw when a moment of new pages comes late in
        a long pass (the lab once switched a hot set "as planned" at 5.3 s into pass 1, the
        hot set it had seen at 1 s forgotten), which would cost the pass it had kept."""
        if self.settled_rate_bytes_s is None:
            return self.rate_bytes_s
        return min(self.rate_bytes_s, self.settled_rate_bytes_s)


def new_pages(at_measure: int, counts: list[tuple[float, int]]) -> NewPages | None:
    """:class:`NewPages` from the fault count when the measurement began and the counts
    read during pass 1 (``(elapsed s, count)``, oldest first); all 0 before two counts.
    None when a count went down (a vCPU unplugged, a reply missing one): such counts say
    nothing, and a drop must not read as a guest that stopped dirtying new pages."""
    if any(b < a for a, b in itertools.pairwise([at_measure, *(c for _t, c in counts)])):
        return None
    if not counts:
        return NewPages(0, 0.0, 0.0, 0.0)
    (t_last, last), (t_first, _first) = counts[-1], counts[0]
    t_from, c_from = next(
        ((t, c) for t, c in reversed(counts) if t_last - t >= FAULT_WINDOW_S), counts[0]
    )
    t_settle, c_settle = next(
        ((t, c) for t, c in counts if t - t_first >= FAULT_SETTLE_S - FAULT_WINDOW_S), counts[-1]
    )
    return NewPages(
        since_measure_bytes=max(0, last - at_measure) * PAGE_BYTES,
        rate_bytes_s=_rate(c_from, t_from, last, t_last),
        window_s=t_last - t_from,
        seen_s=t_last - t_first,
        settled_rate_bytes_s=_rate(min(c_settle, c_from), min(t_settle, t_from), last, t_last),
    )


def _rate(count_from: int, t_from: float, count_to: int, t_to: float) -> float:
    """Bytes/s of new dirty pages between two counts (0 over no time)."""
    seconds = t_to - t_from
    return max(0.0, (count_to - count_from) * PAGE_BYTES / seconds) if seconds > 0 else 0.0


def _from_faults(f: Facts, pages: NewPages) -> tuple[float, int | None, bool, str] | None:
    """What write faults change during pass 1: (dirty rate, working set, hot set, why), or
    None. New pages coming faster than the measured rate: the guest turned hotter. Far
    fewer than it (< :data:`SATURATED`) once they settled: the guest keeps rewriting
    pages it has dirtied already, a saturated set, as big as the measurement found dirty
    in its period (it is all of such a set), every pass finding it dirty again."""
    if pages.window_s < FAULT_WINDOW_S or not pages.trusted(f):
        return None
    rate, measured = pages.rate_bytes_s, f.dirty_rate_bytes_s
    if rate > (1 + DRIFT) * measured + HOTTER_MIN_BYTES_S:
        why = (
            f"new dirty pages at {rate / MIB:.1f} MiB/s (KVM write faults), "
            f"not {measured / MIB:.1f}"
        )
        return rate, f.wss_bytes, f.hot_set, why
    saturation = pages.saturation_rate_bytes_s
    if f.wss_bytes is None and pages.settled and saturation < SATURATED * measured:
        wss = min(f.ram_bytes, round(measured * MEASURE_PERIOD_S))
        why = (
            f"new dirty pages at {saturation / MIB:.1f} MiB/s in pass 1 (KVM write faults) "
            f"while it dirties {measured / MIB:.1f} MiB/s: a hot set of about {wss / MIB:.0f} MiB"
        )
        return measured, wss, True, why
    return None


def with_faults(f: Facts, pages: NewPages) -> Facts:
    """``f`` with what write faults said (:func:`_from_faults`); e.g. faults counted
    during a dirty-rate measurement made before a migration (the benchmarks' predictions
    for fixed policies, from the evidence auto has)."""
    seen = _from_faults(f, pages)
    if seen is None:
        return f
    rate, wss, hot_set, _why = seen
    return replace(
        f, dirty_rate_bytes_s=max(f.dirty_rate_bytes_s, rate), wss_bytes=wss, hot_set=hot_set
    )


@dataclass(frozen=True)
class Refined:
    """The plan re-made from what the migration has measured so far."""

    chosen: Prediction
    #: what drifted, one line ("" when nothing did and the plan stands)
    drift: str
    #: what the choice was made from
    facts: Facts


def a_hot_set_would_change(plan: Plan, facts: Facts) -> bool:
    """Whether a hot set as big as the measurement found dirty in its period (what write
    faults reveal once settled, :func:`_from_faults`) would make a strategy other than
    post-copy at once the best: only then is it worth waiting for them."""
    if facts.wss_bytes is not None:
        return False
    wss = min(facts.ram_bytes, round(facts.dirty_rate_bytes_s * MEASURE_PERIOD_S))
    hot = replace(facts, wss_bytes=wss, hot_set=True)
    chosen = choose(
        predict_all(hot), timeout_s=plan.timeout_s, postcopy_weight=plan.postcopy_weight
    )
    return chosen.strategy is not Strategy.POSTCOPY_AFTER_0


def working_set(f: Facts, pass1: tuple[float, float]) -> tuple[int, bool, str] | None:
    """What a first pass says of the guest's working set, beside the measured dirty rate.

    ``pass1`` = (bytes the guest dirtied during a first pass, its seconds). Less than
    :data:`SATURATED` of what the measured rate would dirty in that time: the working set
    saturated, and is that size; a *hot set* if the one-second measurement already found
    about all of it dirty (>= :data:`HOT_SET_SHARE`). Returns (working set bytes, hot set,
    why) or None when the pass says nothing new.
    """
    dirtied, seconds = pass1
    expected = min(f.ram_bytes, f.dirty_rate_bytes_s * seconds)
    if not 0 < dirtied < SATURATED * expected:
        return None
    hot_set = f.dirty_rate_bytes_s * MEASURE_PERIOD_S >= HOT_SET_SHARE * dirtied
    kind = "a hot set" if hot_set else "a working set"
    return (
        round(dirtied),
        hot_set,
        f"pass 1 ({seconds:.1f} s) left {dirtied / MIB:.0f} MiB dirty, not "
        f"{expected / MIB:.0f}: {kind} of {dirtied / MIB:.0f} MiB",
    )


def refine(
    plan: Plan,
    *,
    transfer_bytes_s: float | None,
    dirty_bytes_s: float | None,
    pass1: tuple[float, float] | None = None,
    faults: NewPages | None = None,
) -> Refined:
    """Re-plan when what the migration measured differs from what the plan assumed.

    - ``transfer_bytes_s``, the link's rate pre-copy achieves, replaces the plan's when it
      differs by more than :data:`DRIFT`;
    - ``dirty_bytes_s``, QEMU's dirty rate after a pass, only ever raises the plan's (it
      is a per-pass average, low when the guest rewrites a small working set: a drop says
      nothing; a rise says the guest turned hot);
    - ``pass1`` = (bytes the guest dirtied during pass 1, the pass's seconds): less than
      :data:`SATURATED` of what the measured rate would dirty in that time means the
      working set saturated; it is then the working set's size, and a *hot set* if the
      one-second measurement already found about all of it dirty
      (>= :data:`HOT_SET_SHARE`): then every pass, however short, finds it dirty again;
    - ``faults``, KVM's write faults while pass 1 runs: a guest turned hotter, or a
      saturated working set, before the pass has ended (:func:`_from_faults`).

    Pure: the same plan and rates always give the same answer.
    """
    f = plan.facts
    changes: list[str] = []
    bandwidth = f.bandwidth_bytes_s
    dirty = f.dirty_rate_bytes_s
    wss, hot_set = f.wss_bytes, f.hot_set
    if transfer_bytes_s and abs(transfer_bytes_s - bandwidth) > DRIFT * bandwidth:
        changes.append(
            f"link {transfer_bytes_s / MIB:.1f} MiB/s measured, not {bandwidth / MIB:.1f}"
        )
        bandwidth = transfer_bytes_s
    if dirty_bytes_s and dirty_bytes_s > (1 + DRIFT) * dirty:
        changes.append(f"dirty rate rose to {dirty_bytes_s / MIB:.1f} MiB/s from {dirty / MIB:.1f}")
        dirty = dirty_bytes_s
    if pass1 is not None and wss is None:
        found = working_set(f, pass1)
        if found is not None:
            wss, hot_set, why = found
            changes.append(why)
    seen = _from_faults(f, faults) if faults is not None and pass1 is None else None
    if seen is not None:
        dirty, wss, hot_set, why = max(dirty, seen[0]), seen[1], seen[2], seen[3]
        changes.append(why)
    if not changes:
        return Refined(plan.chosen, "", f)
    facts = replace(
        f, dirty_rate_bytes_s=dirty, bandwidth_bytes_s=bandwidth, wss_bytes=wss, hot_set=hot_set
    )
    chosen = choose(
        predict_all(facts), timeout_s=plan.timeout_s, postcopy_weight=plan.postcopy_weight
    )
    return Refined(chosen, "; ".join(changes), facts)
