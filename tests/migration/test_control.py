"""What the engine does next (orbit/migration/control.py): operator requests, the switch in
flight, the post-copy stall rule and the policy, in that order, on synthetic inputs."""

from __future__ import annotations

import copy

import pytest

from orbit.migration.control import (
    OPERATOR_RULES,
    Progress,
    Requests,
    failed_resumes,
    job_outcome,
    next_step,
    resume_step,
    settled,
)
from orbit.migration.model import MIB, Action, MigrationSettings, Sample
from orbit.migration.phase import Phase

PRECOPY_ONLY = MigrationSettings.resolve()
POSTCOPY_OK = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=1)
ABORT = Requests(abort="operator requested abort")
FORCE = Requests(force_complete=True)
IN_PRECOPY = Progress(Phase.RUNNING_PRECOPY)
IN_POSTCOPY = Progress(Phase.RUNNING_POSTCOPY)


def sample(t: float, sent_mib: float, *, postcopy: bool = False, it: int = 1) -> Sample:
    return Sample(
        elapsed_s=t,
        memory_total_bytes=512 * MIB,
        memory_processed_bytes=int(sent_mib * MIB),
        memory_remaining_bytes=int((512 - sent_mib) * MIB),
        dirty_rate_bytes_s=0,
        bandwidth_bytes_s=50 * MIB,
        iteration=it,
        postcopy=postcopy,
    )


#: post-copy samples that moved no byte for 3 s (the default stall limit is 2 s)
STALLED = [sample(10 + 0.25 * i, 300, postcopy=True) for i in range(13)]
#: pre-copy, pass 1 going on
PASS_1 = [sample(0.25 * i, 12.5 * i) for i in range(1, 9)]


@pytest.mark.parametrize(
    ("requests", "progress", "settings", "samples", "action", "rule"),
    [
        # an operator's abort comes first, in pre-copy
        (ABORT, IN_PRECOPY, POSTCOPY_OK, PASS_1, Action.ABORT, "operator-abort"),
        (ABORT, Progress(Phase.PREPARING), PRECOPY_ONLY, [], Action.ABORT, "operator-abort"),
        # ... before a force-complete asked at the same time
        (Requests("stop", True), IN_PRECOPY, POSTCOPY_OK, PASS_1, Action.ABORT, "operator-abort"),
        # ... and is dropped (said once) when post-copy started meanwhile: never aborted
        (ABORT, IN_POSTCOPY, POSTCOPY_OK, STALLED, Action.CONTINUE, "abort-dropped"),
        # sent already: the policy goes on deciding nothing more than it would
        (ABORT, Progress(Phase.RUNNING_PRECOPY, abort_sent=True), POSTCOPY_OK, PASS_1, None, ""),
        # force-complete: post-copy when permitted, else pause the VM (once)
        (FORCE, IN_PRECOPY, POSTCOPY_OK, PASS_1, Action.SWITCH_TO_POSTCOPY,
         "operator-force-postcopy"),
        (FORCE, IN_PRECOPY, PRECOPY_ONLY, PASS_1, Action.PAUSE_AND_COMPLETE,
         "operator-force-pause"),
        (FORCE, Progress(Phase.RUNNING_PRECOPY, paused_source=True), PRECOPY_ONLY, PASS_1,
         Action.CONTINUE, "precopy-progress"),
        # asked for post-copy, QEMU not switched yet: wait, whatever is asked
        (FORCE, Progress(Phase.RUNNING_PRECOPY, switching=True), POSTCOPY_OK, PASS_1, None, ""),
        (Requests(), Progress(Phase.RUNNING_PRECOPY, switching=True), POSTCOPY_OK, PASS_1,
         None, ""),
        # force-complete in post-copy: nothing to do, it completes as pages arrive
        (FORCE, IN_POSTCOPY, POSTCOPY_OK, [sample(5, 400, postcopy=True)], None, ""),
        # post-copy that moves no byte: paused so it can be resumed, once per attempt
        (Requests(), IN_POSTCOPY, POSTCOPY_OK, STALLED, Action.PAUSE_POSTCOPY,
         "postcopy-stalled"),
        (Requests(), Progress(Phase.RUNNING_POSTCOPY, stall_handled=True), POSTCOPY_OK, STALLED,
         None, ""),
        # pre-copy: the policy decides
        (Requests(), IN_PRECOPY, POSTCOPY_OK, [], Action.CONTINUE, "no-sample"),
        (Requests(), IN_PRECOPY, POSTCOPY_OK, PASS_1, Action.CONTINUE, "waiting-iterations"),
        (Requests(), IN_PRECOPY, POSTCOPY_OK, [*PASS_1, sample(3, 100, it=2)],
         Action.SWITCH_TO_POSTCOPY, "after-iterations"),
        # nothing to decide while completing or once over
        (Requests(), Progress(Phase.COMPLETING), POSTCOPY_OK, PASS_1, None, ""),
        (Requests(), Progress(Phase.POSTCOPY_PAUSED), POSTCOPY_OK, STALLED, None, ""),
    ],
)  # fmt: skip
def test_next_step(
    requests: Requests,
    progress: Progress,
    settings: MigrationSettings,
    samples: list[Sample],
    action: Action | None,
    rule: str,
) -> None:
    before = copy.deepcopy(samples)
    decision = next_step(requests, progress, settings, samples, 3.0, attempt_samples=samples)
    assert samples == before  # pure: mutates nothing
    if action is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.action, decision.rule) == (action, rule)
        assert decision.reason
        assert next_step(requests, progress, settings, samples, 3.0, attempt_samples=samples) == (
            decision
        )


def test_a_stall_the_destination_could_not_resume_is_left_to_tcp() -> None:
    decision = next_step(
        Requests(),
        IN_POSTCOPY,
        POSTCOPY_OK,
        STALLED,
        13.0,
        attempt_samples=STALLED,
        cannot_resume="libvirt 11.3 crashes on a post-copy resume",
    )
    assert decision is not None
    assert decision.action is Action.CONTINUE
    assert decision.rule == "postcopy-stalled-unresumable"
    assert "libvirt 11.3" in decision.reason


def test_only_the_current_attempts_samples_count_for_the_stall() -> None:
    # a resume that has just started: the stall of the attempt before is not this one's
    fresh = [sample(20, 300, postcopy=True), sample(20.25, 310, postcopy=True)]
    decision = next_step(
        Requests(), IN_POSTCOPY, POSTCOPY_OK, [*STALLED, *fresh], 20.25, attempt_samples=fresh
    )
    assert decision is None


def test_operator_rules_are_the_operators() -> None:
    rules = set()
    for requests, settings in ((ABORT, POSTCOPY_OK), (FORCE, POSTCOPY_OK), (FORCE, PRECOPY_ONLY)):
        decision = next_step(requests, IN_PRECOPY, settings, PASS_1, 3.0)
        assert decision is not None
        rules.add(decision.rule)
    assert rules == OPERATOR_RULES


@pytest.mark.parametrize(
    ("where", "action", "rule"),
    [
        (Phase.POSTCOPY_PAUSED, Action.RESUME_POSTCOPY, "resume"),
        (Phase.COMPLETED, Action.CONTINUE, "resume-not-needed"),
        (Phase.FAILED, Action.CONTINUE, "resume-not-needed"),
        (Phase.RUNNING_POSTCOPY, Action.CONTINUE, "resume-following"),
    ],
)
def test_resume_step_follows_what_the_hosts_say(where: Phase, action: Action, rule: str) -> None:
    decision = resume_step(where, attempt=3, paused_s=4.26)
    assert (decision.action, decision.rule) == (action, rule)
    if action is Action.RESUME_POSTCOPY:
        assert decision.reason == "attempt 3 after 4.3 s paused"


def test_only_resumes_that_moved_nothing_count_as_failed() -> None:
    refused = [sample(30, 300, postcopy=True), sample(30.25, 300, postcopy=True)]
    ran = [sample(30, 300, postcopy=True), sample(30.25, 320, postcopy=True)]
    assert failed_resumes(2, True, refused) == 3  # the back-off grows
    assert failed_resumes(2, True, []) == 3  # refused before a sample
    assert failed_resumes(2, True, ran) == 0  # it ran: the next attempt at once
    assert failed_resumes(2, False, refused) == 0  # it completed (or is followed)


@pytest.mark.parametrize(
    ("error", "split", "abort", "by_policy", "phase", "why"),
    [
        (None, False, None, False, Phase.COMPLETED, ""),
        (None, True, None, False, Phase.COMPLETED, ""),
        # broken while split between the hosts: resumable, never failed
        ("stream broke", True, None, False, Phase.POSTCOPY_PAUSED, "stream broke"),
        ("stream broke", True, "stop", False, Phase.POSTCOPY_PAUSED, "stream broke"),
        # the VM stays on the source
        ("operation aborted", False, "stop", False, Phase.CANCELLED, "stop"),
        ("operation aborted", False, "timeout 20 s", True, Phase.FAILED, "timeout 20 s"),
        ("link down", False, None, False, Phase.FAILED, "link down"),
    ],
)
def test_job_outcome(
    error: str | None, split: bool, abort: str | None, by_policy: bool, phase: Phase, why: str
) -> None:
    assert job_outcome(error, split=split, abort=abort, abort_by_policy=by_policy) == (phase, why)


def test_settled_trusts_the_hosts_unless_the_record_cannot_lead_there() -> None:
    assert settled(Phase.RUNNING_POSTCOPY, Phase.COMPLETED, None, "vm") == (Phase.COMPLETED, None)
    assert settled(Phase.POSTCOPY_PAUSED, Phase.POSTCOPY_PAUSED, "split", "vm") == (
        Phase.POSTCOPY_PAUSED,
        "split",
    )
    phase, why = settled(Phase.RUNNING_POSTCOPY, Phase.FAILED, "on the source", "vm")
    assert phase is Phase.ERROR
    assert why is not None
    assert "running-postcopy" in why and "failed" in why and "operator" in why
