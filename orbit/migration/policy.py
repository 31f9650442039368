"""When to switch a migration from pre-copy to post-copy: one pure function, :func:`decide`.

The engine samples the migration job every 250 ms and calls
``decide(samples, settings, now_s)`` with every sample so far (oldest first) and the
seconds since the migration started (the clock of ``Sample.elapsed_s``). ``decide`` reads
nothing else: no clock, no I/O, no logging. The same inputs always give the same
:class:`~orbit.migration.model.Decision`, whose reason is one line with numbers and units
that ends up in the migration record. The engine executes the action; ``decide`` never
returns ``PAUSE_AND_COMPLETE`` (the engine's force-complete without post-copy).

Background: pre-copy sends all RAM once (iteration 1), then, pass after pass, the pages the
guest dirtied meanwhile. QEMU stops the VM and sends the rest once what is left fits in the
downtime limit. If the guest dirties memory about as fast as the link sends it, that never
happens: pre-copy does not converge. Post-copy then finishes the job for sure: the VM runs
on the destination at once and pulls its missing pages on demand.

The rules, checked in this order; the first that applies decides:

1. **No sample yet**: continue.
2. **Already in post-copy** (the latest sample says so): continue. The policy never aborts
   in post-copy, whatever the policy or the clock: the VM's state is then split between the
   hosts (the destination runs it, the source holds the pages not yet pulled), so aborting
   would lose the VM. Only finishing, or resuming after a failure, is safe.
3. **Stalled** (pre-copy, any policy): the bytes sent (memory + disk) have not grown for
   ``stall_timeout_s`` between samples (:func:`stalled_for_s`) → abort: the link or a
   daemon is gone, and switching to post-copy over a dead link would strand the VM. The VM
   keeps running on the source. (A stall *in post-copy* is the engine's business: it pauses
   the post-copy so that it can be resumed, see orbit/migration/engine.py.)
4. **Post-copy not permitted** (``settings.post_copy`` false): the policy is ``precopy``,
   whatever ``settings.policy`` says, so ``SWITCH_TO_POSTCOPY`` is never returned.

``precopy`` (never switch)
    Abort once ``now_s >= completion_timeout_s``: the VM keeps running on the source.
    Otherwise continue.

``postcopy`` (switch after N completed memory iterations, N = ``post_copy_after_iterations``)
    N = 0: switch at the first sample (the migration is running). Otherwise switch once
    ``completed_iterations >= N``, or at the completion timeout (post-copy is permitted, so
    switching is how the timeout guarantees completion). Otherwise continue.

``auto`` (the strategy with the least predicted score, then the samples' evidence)
    Before the job starts, the engine measures the guest (dirty rate, memory written) when
    the first pass would take long enough for that to pay off, and
    :func:`orbit.migration.predict.make_plan` chooses a strategy: pre-copy, or post-copy
    after 0, 1 or 2 passes (the *plan*, passed to ``decide``; None without a measurement).

    a. *Timeout*: ``now_s >= completion_timeout_s`` → switch. This comes first, before the
       guard below, because the timeout is the completion guarantee: a migration that keeps
       looking "about to converge" without finishing must not run for ever.
    b. *About to converge*: if what remains can be sent within the downtime limit at the
       current transfer rate (``remaining / bandwidth <= downtime_limit``) → continue. QEMU
       is about to stop the VM and finish; switching now would only add risk.
    p. *Plan*: the plan, re-made with what the migration measured
       (:func:`orbit.migration.predict.refine`: the link's transfer rate after a second,
       QEMU's dirty rate if it rose, the working set pass 1 revealed, and during pass 1
       KVM's write faults: new dirty pages coming faster than measured, or far slower once
       settled, a saturated set), says post-copy after N passes and N passes are done →
       switch ("as planned" or "re-planned (what drifted)"). Post-copy at once waits until
       the write faults have run ``FAULT_SETTLE_S`` (0.75 s) when the hypervisor reports
       them and a hot set they may reveal would make another strategy best (post-copy
       after pass 1). A new strategy
       that is not due yet is recorded once ("re-planned (...)", rule ``replanned``).
       Otherwise the evidence rules below still apply.
    c. *First pass*: before one iteration has completed → continue. The first pass always
       sends all RAM and QEMU has not measured the dirty rate yet: there is no evidence.
    d. *Dirty rate*: dirty rate ``>= DIRTY_RATE_RATIO`` (90%) of the transfer rate → switch.
       Each pass would dirty nearly as much as it sends; the remainder barely shrinks.
    e. *Remainder not shrinking*: the memory left at the start of each pass (iteration 2
       and later; see :func:`_pass_starts`) is compared for the last two passes seen; if the
       later is ``>= SHRINK_RATIO`` (90%) of the earlier, and more than ``NEAR_TARGET``
       (1.5) times what fits in the downtime limit → switch. This catches what the
       dirty rate misses, e.g. a working set that saturates (the rate looks moderate, the
       remainder is stuck at the working set's size).
    f. *Projection*: with dirty rate d below bandwidth b, each pass leaves q = d / b of
       what it sent; if the passes still needed to get down to the downtime target would
       take longer than the time left before the completion timeout → switch now rather
       than at the timeout (see :func:`_projected_precopy_s`).
    g. Otherwise continue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from orbit.migration.model import MIB, Action, Decision, MigrationSettings, Policy, Sample
from orbit.migration.phase import Phase
from orbit.migration.predict import (
    FAULT_SETTLE_S,
    TRANSFER_WINDOW_S,
    NewPages,
    Plan,
    a_hot_set_would_change,
    refine,
)
from orbit.virt.driver import DomainInfo, DomainState

#: auto: pre-copy cannot converge when the guest dirties memory at >= this share of the
#: transfer rate (each pass would leave >= 90% of what it sent).
DIRTY_RATE_RATIO = 0.9

#: auto: the remainder "is not shrinking" when a pass starts with >= this share of what the
#: previous pass started with.
SHRINK_RATIO = 0.9

#: auto: a remainder within this factor of what fits in the downtime limit is nearly there:
#: a pass that barely shrank it is no reason to switch (a few more converge it).
NEAR_TARGET = 1.5

#: Iteration numbers at or above this are passes over dirtied pages only (1 is the full pass).
_FIRST_DIRTY_PASS = 2


def decide(
    samples: Sequence[Sample],
    settings: MigrationSettings,
    now_s: float,
    plan: Plan | None = None,
    faults: NewPages | None = None,
) -> Decision:
    """Decide what the engine does next, from the samples so far (oldest first).

    ``now_s`` is seconds since the migration started, on the clock of ``Sample.elapsed_s``.
    ``plan`` is ``auto``'s strategy, chosen before the migration started from measured
    rates (:mod:`orbit.migration.predict`); None when nothing could be measured.
    ``faults``: what KVM's write faults said so far of pass 1 (auto; None: nothing).
    Pure: reads only its arguments, mutates nothing. The rules are in the module docstring.
    """
    if not samples:
        return Decision(Action.CONTINUE, "waiting for the first progress sample", "no-sample")
    latest = samples[-1]
    if latest.postcopy:
        # Never abort (nor do anything else) in post-copy: the VM's state is split between
        # the hosts, so aborting would lose it. See rule 2 in the module docstring.
        return Decision(
            Action.CONTINUE,
            f"in post-copy: {_mib(latest.memory_remaining_bytes)} left to pull, "
            f"{latest.postcopy_requests} page request(s) so far; never aborted in post-copy",
            "in-postcopy",
        )
    stall = stalled_for_s(samples)
    if stall >= settings.stall_timeout_s:
        return Decision(
            Action.ABORT,
            f"no progress for {_secs(stall)} (stall timeout {_secs(settings.stall_timeout_s)}): "
            "the link or a daemon is gone; aborting pre-copy, the VM stays on the source",
            "stalled",
        )
    policy = settings.policy if settings.post_copy else Policy.PRECOPY
    if policy is Policy.POSTCOPY:
        return _decide_postcopy(latest, settings, now_s)
    if policy is Policy.AUTO:
        return _decide_auto(samples, settings, now_s, plan, faults)
    return _decide_precopy(latest, settings, now_s)


def stalled_for_s(samples: Sequence[Sample]) -> float:
    """How long the bytes sent (memory + disk) have not grown, measured between samples.

    0 when the latest sample moved bytes, or with fewer than two samples at that count.
    """
    if not samples:
        return 0.0
    latest = samples[-1]
    sent = latest.memory_processed_bytes + latest.disk_processed_bytes
    since = latest.elapsed_s
    for s in reversed(samples):
        if s.memory_processed_bytes + s.disk_processed_bytes != sent:
            break
        since = s.elapsed_s
    return latest.elapsed_s - since


def _decide_precopy(latest: Sample, settings: MigrationSettings, now_s: float) -> Decision:
    timeout_s = settings.completion_timeout_s
    if now_s >= timeout_s:
        return Decision(
            Action.ABORT,
            f"pre-copy did not complete within {_secs(timeout_s)}; "
            "aborting, the VM stays on the source",
            "precopy-timeout",
        )
    return Decision(
        Action.CONTINUE,
        f"pre-copy in progress: {_progress(latest, settings, now_s)}",
        "precopy-progress",
    )


def _decide_postcopy(latest: Sample, settings: MigrationSettings, now_s: float) -> Decision:
    wanted = settings.post_copy_after_iterations
    done = latest.completed_iterations
    if wanted == 0:
        return Decision(
            Action.SWITCH_TO_POSTCOPY,
            "post_copy_after_iterations=0: switching to post-copy as soon as the migration runs",
            "after-iterations",
        )
    if done >= wanted:
        return Decision(
            Action.SWITCH_TO_POSTCOPY,
            f"{done} memory iteration(s) completed (post_copy_after_iterations={wanted})",
            "after-iterations",
        )
    if now_s >= settings.completion_timeout_s:
        return _timeout_switch(settings)
    return Decision(
        Action.CONTINUE,
        f"{done} of {wanted} memory iteration(s) completed before switching to post-copy: "
        f"{_progress(latest, settings, now_s)}",
        "waiting-iterations",
    )


def outcome_from_hosts(
    name: str,
    src: DomainInfo | None,
    dst: DomainInfo | None,
    *,
    abort_reason: str | None,
    policy_aborted: bool,
) -> tuple[Phase, str | None]:
    """Where the VM runs decides a migration's outcome once its job is over or unknown
    (an adopted job, a resume that libvirt says failed): ``(phase, error)``.

    ``src``/``dst`` are the domain on each host (None: not there). The VM wins over any
    job state: running on the destination only is ``completed``; still running on the
    source is ``failed`` or ``cancelled``; either side in "post-copy failed" is
    ``postcopy-paused``; anything else needs an operator (``error``).
    """
    if src is not None and src.reason == "postcopy":
        return Phase.RUNNING_POSTCOPY, "post-copy is running (started by an earlier process)"
    src_gone = src is None or src.state is DomainState.SHUTOFF
    if src_gone and dst is not None and dst.state is DomainState.RUNNING:
        if dst.postcopy_failed:  # not claimed complete while libvirt says otherwise
            return Phase.POSTCOPY_PAUSED, (
                "the source's copy is gone but the destination still reports post-copy "
                "failed: waiting for libvirt to settle, an operator should look"
            )
        # no copy left on the source: the whole VM is on the destination
        return Phase.COMPLETED, None
    if (src and src.postcopy_failed) or (dst and dst.postcopy_failed):
        return Phase.POSTCOPY_PAUSED, "post-copy broke while the job was adopted"
    src_running = src is not None and src.state is DomainState.RUNNING
    if dst is not None and dst.state is DomainState.RUNNING and not src_running:
        return Phase.COMPLETED, None
    if src_running:
        if policy_aborted:
            return Phase.FAILED, abort_reason
        if abort_reason is not None:
            return Phase.CANCELLED, abort_reason
        return Phase.FAILED, "the migration ended without moving the VM"
    return Phase.ERROR, (
        f"{name} is {src.state.value if src else 'absent'} on the source and "
        f"{dst.state.value if dst else 'absent'} on the destination: an operator must look"
    )


def postcopy_stall(
    samples: Sequence[Sample], settings: MigrationSettings, cannot_resume: str | None = None
) -> Decision | None:
    """A post-copy that moved no bytes for ``postcopy_stall_s``: pause it (None: it moves).

    ``samples`` are the post-copy samples of the current attempt. Post-copy sends pages all
    the time (on demand and in the background) until none is left, so a couple of seconds
    without a byte means the stream is dead; TCP would retry it for minutes, with ever longer
    gaps. Pausing turns the hang into a recoverable ``postcopy-paused`` that the engine
    resumes as soon as both hosts answer. Never an abort.

    ``cannot_resume`` says why the destination could not take a resume: then a paused
    stream could never go on, and the decision is to leave it to TCP (continue).
    """
    stall = stalled_for_s(samples)
    if stall < settings.postcopy_stall_s:
        return None
    stalled = (
        f"post-copy moved no bytes for {stall:.1f} s (post-copy stall timeout "
        f"{settings.postcopy_stall_s:g} s)"
    )
    if cannot_resume is not None:
        return Decision(
            Action.CONTINUE,
            f"{stalled}: not pausing it, a paused post-copy could not be resumed "
            f"({cannot_resume}); QEMU's stream goes on when TCP gets through again",
            "postcopy-stalled-unresumable",
        )
    return Decision(
        Action.PAUSE_POSTCOPY,
        f"{stalled}: pausing it to resume when the link is back",
        "postcopy-stalled",
    )


def resume_backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before resume attempt ``attempt + 1`` of a paused post-copy:
    ``first_s`` doubled per attempt made, at most ``max_s`` (1, 2, 4 ... 30 s)."""
    return min(max_s, first_s * float(2 ** min(attempt, 32)))


def transfer_rate(samples: Sequence[Sample]) -> float | None:
    """Bytes/s sent (memory + disk) over the pre-copy samples, once they span
    :data:`~orbit.migration.predict.TRANSFER_WINDOW_S`; None before that."""
    precopy = [s for s in samples if not s.postcopy]
    if len(precopy) < 2:
        return None
    first, last = precopy[0], precopy[-1]
    span = last.elapsed_s - first.elapsed_s
    if span < TRANSFER_WINDOW_S:
        return None
    sent = (
        last.memory_processed_bytes
        + last.disk_processed_bytes
        - first.memory_processed_bytes
        - first.disk_processed_bytes
    )
    return sent / span if sent > 0 else None


def first_pass(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """(bytes the guest dirtied during pass 1, the pass's seconds), once pass 2 is seen.

    Pass 2 starts with what pass 1 left dirty (see :func:`_pass_starts`); pass 1 runs from
    the first sample to the first sample of iteration 2.
    """
    starts = _pass_starts(samples)
    if not starts or starts[0][0] != _FIRST_DIRTY_PASS:
        return None
    begin = samples[0].elapsed_s
    second = next(s.elapsed_s for s in samples if s.iteration >= _FIRST_DIRTY_PASS)
    return float(starts[0][1]), second - begin


def _decide_auto(
    samples: Sequence[Sample],
    settings: MigrationSettings,
    now_s: float,
    plan: Plan | None,
    faults: NewPages | None = None,
) -> Decision:
    latest = samples[-1]
    remaining = latest.memory_remaining_bytes
    bandwidth = latest.bandwidth_bytes_s
    dirty = latest.dirty_rate_bytes_s
    downtime_s = settings.downtime_limit_ms / 1000

    # a. The completion timeout guarantees completion, so it beats every other rule.
    if now_s >= settings.completion_timeout_s:
        return _timeout_switch(settings)

    # b. About to converge: never switch a migration QEMU is about to finish.
    if bandwidth > 0 and remaining / bandwidth <= downtime_s:
        return Decision(
            Action.CONTINUE,
            f"converging: {_mib(remaining)} remaining at {_mib_s(bandwidth)} takes "
            f"{remaining / bandwidth * 1000:.0f} ms <= downtime limit "
            f"{settings.downtime_limit_ms} ms",
            "converging",
        )

    done = latest.completed_iterations

    # p. The plan: switch once the strategy chosen from measured rates says so.
    if plan is not None:
        refined = refine(
            plan,
            transfer_bytes_s=transfer_rate(samples),
            dirty_bytes_s=latest.dirty_rate_bytes_s if done >= 1 else None,
            pass1=first_pass(samples),
            faults=faults if done < 1 else None,
        )
        after = refined.chosen.strategy.switch_after
        if (
            after == 0
            and done < 1
            and faults is not None
            and not faults.settled
            and a_hot_set_would_change(plan, refined.facts)
        ):
            return Decision(
                Action.CONTINUE,
                f"{refined.chosen.summary()}, once KVM's write faults have run "
                f"{FAULT_SETTLE_S:.2f} s ({faults.seen_s:.2f} s so far): a saturated working "
                "set would make post-copy after pass 1 better",
                "plan-faults",
            )
        if after is not None and done >= after:
            why = f"re-planned ({refined.drift})" if refined.drift else "as planned"
            return Decision(
                Action.SWITCH_TO_POSTCOPY,
                f"{why}: {refined.chosen.summary()}; {done} iteration(s) completed",
                "plan",
            )
        if done < 1 and refined.drift and refined.chosen.strategy is not plan.chosen.strategy:
            return Decision(
                Action.CONTINUE,
                f"re-planned ({refined.drift}): {refined.chosen.summary()}; first pass over "
                f"RAM in progress: {_mib(remaining)} of {_mib(latest.memory_total_bytes)} "
                "remaining",
                "replanned",
            )

    # c. No evidence during the first pass: it sends all RAM whatever the guest does.
    if done < 1:
        return Decision(
            Action.CONTINUE,
            f"first pass over RAM in progress: {_mib(remaining)} of "
            f"{_mib(latest.memory_total_bytes)} remaining",
            "first-pass",
        )

    # d. The guest dirties memory nearly as fast as the link sends it.
    if dirty > 0 and bandwidth > 0 and dirty >= DIRTY_RATE_RATIO * bandwidth:
        return Decision(
            Action.SWITCH_TO_POSTCOPY,
            f"pre-copy cannot converge: dirty rate {_mib_s(dirty)} >= "
            f"{DIRTY_RATE_RATIO:.0%} of transfer rate {_mib_s(bandwidth)} "
            f"after {done} iteration(s)",
            "dirty-rate",
        )

    # e. What each pass starts with is not shrinking (and is not nearly small enough).
    starts = _pass_starts(samples)
    if len(starts) >= 2:
        (prev_it, prev_bytes), (last_it, last_bytes) = starts[-2], starts[-1]
        near = NEAR_TARGET * bandwidth * downtime_s
        if prev_bytes > 0 and last_bytes >= SHRINK_RATIO * prev_bytes and last_bytes > near:
            return Decision(
                Action.SWITCH_TO_POSTCOPY,
                f"remaining memory not shrinking: {_mib(last_bytes)} at the start of "
                f"iteration {last_it} vs {_mib(prev_bytes)} at the start of iteration "
                f"{prev_it} (>= {SHRINK_RATIO:.0%})",
                "not-shrinking",
            )

    # f. Converging, but too slowly to finish before the completion timeout.
    time_left_s = settings.completion_timeout_s - now_s
    if dirty > 0 and bandwidth > 0 and dirty < bandwidth:
        needed_s, passes = _projected_precopy_s(remaining, dirty, bandwidth, downtime_s)
        if needed_s > time_left_s:
            return Decision(
                Action.SWITCH_TO_POSTCOPY,
                f"pre-copy too slow: about {passes} more iteration(s) taking "
                f"{needed_s:.1f} s to reach the downtime target "
                f"({_mib(bandwidth * downtime_s)} in {settings.downtime_limit_ms} ms at "
                f"{_mib_s(bandwidth)}, dirty rate {_mib_s(dirty)}), but only "
                f"{time_left_s:.1f} s left before the {_secs(settings.completion_timeout_s)} "
                "completion timeout",
                "projection",
            )

    return Decision(
        Action.CONTINUE,
        f"pre-copy progressing: {_mib(remaining)} remaining after {done} iteration(s), "
        f"dirty rate {_mib_s(dirty)}, transfer rate {_mib_s(bandwidth)}",
        "progress",
    )


def _pass_starts(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """``(iteration, bytes)``: the memory left at the start of each dirty-page pass seen.

    Only iterations >= 2 (passes over dirtied pages), in iteration order. The value for an
    iteration is the *largest* ``memory_remaining_bytes`` seen during it. Why the largest:
    QEMU's remaining count is its dirty-page count. Within an iteration it only goes down
    (pages are sent; pages dirtied meanwhile are not counted until the next bitmap sync).
    The sync that starts iteration i+1 happens once the count has fallen below what fits in
    the downtime limit, and adds everything dirtied during iteration i. So the first (and
    largest) reading of iteration i+1 is what pass i left behind, the quantity that must
    shrink; the smallest reading of any iteration is just below the downtime threshold,
    whatever the guest does, and says nothing about convergence.

    An iteration the samples missed is skipped; comparing across it is only stricter
    (the 90% then applies to two passes' shrinkage together).
    """
    largest: dict[int, int] = {}
    for sample in samples:
        if sample.postcopy or sample.iteration < _FIRST_DIRTY_PASS:
            continue
        seen = largest.get(sample.iteration)
        if seen is None or sample.memory_remaining_bytes > seen:
            largest[sample.iteration] = sample.memory_remaining_bytes
    return sorted(largest.items())


def _projected_precopy_s(
    remaining_bytes: int, dirty_bytes_s: int, bandwidth_bytes_s: int, downtime_s: float
) -> tuple[float, int]:
    """Seconds (and passes) pre-copy still needs to get ``remaining`` down to the target.

    The model, a geometric series: a pass over r bytes at bandwidth b takes r / b seconds,
    during which the guest dirties d * r / b = q * r bytes (q = d / b < 1), which the next
    pass must send. Starting from r0 = remaining, pass j sends r0 * q**j. QEMU can stop the
    VM once what is left fits in the downtime limit: target = b * downtime. The number of
    passes needed is the smallest k with r0 * q**k <= target, k = ceil(log(target / r0) /
    log(q)), and they take sum(r0 * q**j / b for j < k) = r0 / b * (1 - q**k) / (1 - q).

    Optimistic on purpose (a switch must be justified): it ignores that dirtying
    saturates at the working set, which rule e catches instead.
    Requires 0 < dirty < bandwidth.
    """
    target = bandwidth_bytes_s * downtime_s
    if remaining_bytes <= target:
        return 0.0, 0
    q = dirty_bytes_s / bandwidth_bytes_s
    passes = max(1, math.ceil(math.log(target / remaining_bytes) / math.log(q)))
    seconds = remaining_bytes / bandwidth_bytes_s * (1 - q**passes) / (1 - q)
    return seconds, passes


def _timeout_switch(settings: MigrationSettings) -> Decision:
    return Decision(
        Action.SWITCH_TO_POSTCOPY,
        f"pre-copy did not complete within {_secs(settings.completion_timeout_s)}; "
        "switching to post-copy to guarantee completion",
        "timeout",
    )


def _progress(latest: Sample, settings: MigrationSettings, now_s: float) -> str:
    return (
        f"{_mib(latest.memory_remaining_bytes)} remaining in iteration {latest.iteration}, "
        f"{now_s:.1f} s of {_secs(settings.completion_timeout_s)} elapsed"
    )


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:.1f} MiB"


def _mib_s(bytes_s: float) -> str:
    return f"{bytes_s / MIB:.1f} MiB/s"


def _secs(seconds: float) -> str:
    """``300 s`` for whole seconds, ``12.5 s`` otherwise."""
    return f"{seconds:.0f} s" if float(seconds).is_integer() else f"{seconds:.1f} s"
