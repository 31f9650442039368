"""What the engine does next, in one pure function: :func:`next_step`.

Each monitor tick the engine (orbit/migration/engine.py) takes a snapshot of what
operators asked (:class:`Requests`, a value object) and of what it has already done about
the migration (:class:`Progress`), and executes the one :class:`~orbit.migration.model.Decision`
that :func:`next_step` returns. The order, first that applies:

1. **Operator abort** (pre-copy only, sent once): abort the job; the VM stays on the source.
   An abort that arrives an instant before post-copy starts is dropped (``abort-dropped``):
   in post-copy the VM's memory is split between the hosts, and aborting would lose it.
2. **Operator force-complete**: switch to post-copy when it is permitted, otherwise pause
   the VM so pre-copy converges (once).
3. **Switching**: post-copy was asked for and QEMU has not switched yet (it does so at its
   next iteration boundary): nothing to do until it has.
4. **In post-copy**: the stall rule (:func:`~orbit.migration.policy.postcopy_stall`), said
   once per attempt.
5. **In pre-copy**, nothing sent to end it yet: the policy (:func:`~orbit.migration.policy.decide`).

Like ``decide``, it reads only its arguments: no clock, no I/O, no logging. The engine
records every decision it executes, except a ``CONTINUE`` of the same rule as the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orbit.migration.model import Action, Decision, MigrationSettings, Sample
from orbit.migration.phase import ALLOWED, Phase
from orbit.migration.policy import decide, postcopy_stall
from orbit.migration.predict import NewPages, Plan

#: rules whose decision an operator asked for (recorded with source 'operator')
OPERATOR_RULES = frozenset({"operator-abort", "operator-force-postcopy", "operator-force-pause"})


@dataclass(frozen=True)
class Requests:
    """What operators have asked of a migration and the engine has not yet acted on."""

    #: abort (pre-copy only); the reason given
    abort: str | None = None
    #: finish now: switch to post-copy, or pause the VM when post-copy is not permitted
    force_complete: bool = False


@dataclass(frozen=True)
class Progress:
    """What the engine has done about the migration so far (its own bookkeeping)."""

    phase: Phase
    #: post-copy asked of QEMU, which has not switched yet
    switching: bool = False
    #: an abort (operator's or policy's) has been sent to the job
    abort_sent: bool = False
    #: the engine paused the VM (force-complete without post-copy)
    paused_source: bool = False
    #: the post-copy stall was acted on in this attempt
    stall_handled: bool = False


def next_step(
    requests: Requests,
    progress: Progress,
    settings: MigrationSettings,
    samples: Sequence[Sample],
    now_s: float,
    *,
    plan: Plan | None = None,
    attempt_samples: Sequence[Sample] = (),
    cannot_resume: str | None = None,
    faults: NewPages | None = None,
) -> Decision | None:
    """The engine's next action (None: nothing this tick); see the module docstring.

    ``samples`` are all the migration's samples, ``attempt_samples`` those of the current
    job (the first, or a resume), ``cannot_resume`` why the destination cannot take a
    post-copy resume (None: it can).
    """
    phase = progress.phase
    if requests.abort is not None and not progress.abort_sent:
        if phase.in_postcopy:
            return Decision(
                Action.CONTINUE,
                f"abort dropped: it came as post-copy started ({requests.abort}); "
                "post-copy is never aborted",
                "abort-dropped",
            )
        return Decision(Action.ABORT, requests.abort, "operator-abort")
    if requests.force_complete and not phase.in_postcopy and not progress.switching:
        if settings.post_copy:
            return Decision(
                Action.SWITCH_TO_POSTCOPY,
                "operator requested force-complete",
                "operator-force-postcopy",
            )
        if not progress.paused_source:
            return Decision(
                Action.PAUSE_AND_COMPLETE,
                "operator requested force-complete; post-copy not permitted: "
                "pausing the VM so pre-copy converges",
                "operator-force-pause",
            )
    if progress.switching and not phase.in_postcopy:
        return None  # QEMU switches at its next iteration boundary
    if phase is Phase.RUNNING_POSTCOPY:
        if progress.stall_handled:
            return None
        return postcopy_stall([s for s in attempt_samples if s.postcopy], settings, cannot_resume)
    if phase is not Phase.RUNNING_PRECOPY or progress.abort_sent:
        return None
    return decide(samples, settings, now_s, plan, faults)


#: what the hosts say instead of a resume (see :func:`resume_step`)
_NOT_RESUMING = {
    Phase.COMPLETED: ("the VM runs on the destination only", "resume-not-needed"),
    Phase.RUNNING_POSTCOPY: ("post-copy is running: following it", "resume-following"),
    Phase.FAILED: ("the VM runs on the source alone, nothing is split", "resume-not-needed"),
}


def resume_step(where: Phase, *, attempt: int, paused_s: float) -> Decision:
    """A paused post-copy, both hosts answering: resume it (attempt ``attempt``, after
    ``paused_s`` paused), unless the hosts say otherwise (``where``, from
    :func:`~orbit.migration.policy.outcome_from_hosts`): libvirt may call a post-copy failed
    while QEMU still streams (after the destination's daemon restarted), or a resume
    started before a restart may run already; it is then followed, not started again."""
    if where in _NOT_RESUMING:
        why, rule = _NOT_RESUMING[where]
        return Decision(Action.CONTINUE, f"not resuming: {why}", rule)
    return Decision(
        Action.RESUME_POSTCOPY, f"attempt {attempt} after {paused_s:.1f} s paused", "resume"
    )


def failed_resumes(before: int, paused_again: bool, attempt_samples: Sequence[Sample]) -> int:
    """The resumes in a row that failed, after one more attempt: the back-off's step.

    Only a resume that never moved a byte (refused, or broken at once) counts; one that ran
    until a new fault broke it starts the count afresh (its next attempt is made at once).
    """
    moved = len({s.memory_processed_bytes + s.disk_processed_bytes for s in attempt_samples}) > 1
    return before + 1 if paused_again and not moved else 0


def job_outcome(
    error: str | None,
    *,
    split: bool,
    abort: str | None,
    abort_by_policy: bool,
) -> tuple[Phase, str]:
    """Where a migration stands once its job returned: ``error`` None if it succeeded,
    ``split`` if QEMU had entered post-copy (the VM's memory on both hosts), ``abort``
    the abort sent or asked for and whether the policy sent it. Returns (phase, why).

    A split migration that broke is ``postcopy-paused``, both sides kept exactly as they
    are (resumable); otherwise the VM runs on the source: ``cancelled`` after an operator's
    abort, ``failed`` after the policy's (completion timeout, stall) or any other error.
    """
    if error is None:
        return Phase.COMPLETED, ""
    if split:
        return Phase.POSTCOPY_PAUSED, error
    if abort is not None:
        return (Phase.FAILED if abort_by_policy else Phase.CANCELLED), abort
    return Phase.FAILED, error


def settled(
    recorded: Phase, found: Phase, why: str | None, domain: str
) -> tuple[Phase, str | None]:
    """The outcome of a job followed to its end (after a restart): what the hosts say
    (``found``, ``why``), unless the record's phase (``recorded``) cannot lead there: then
    ``error``, for an operator to look at."""
    if found is recorded or found in ALLOWED[recorded]:
        return found, why
    return Phase.ERROR, (
        f"the record says {recorded.value} but {domain}'s hosts say {found.value} "
        f"({why or 'no reason'}): an operator must look"
    )
