"""The engine's control flow on the in-memory driver: fast, and no evidence on its own
(tests/migration/test_engine_lab.py runs the same paths on real libvirt)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from orbit.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    InvalidMigration,
    JobNeverStarted,
    MigrationRefused,
)
from orbit.migration.engine import (
    FAULT_MISSES,
    DecisionRecord,
    Migration,
    MigrationListener,
    MigrationRequest,
    Waker,
)
from orbit.migration.model import Action, MigrationSettings, Sample
from orbit.migration.phase import Phase
from orbit.migration.predict import Link
from orbit.virt.driver import DomainState, HypervisorDriver
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

SRC, DST = "fake://h1", "fake://h2"
TICK_S = 0.005
QUIET = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=4 * MIB, dirty_bytes=0)
HOT = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=4 * MIB, dirty_bytes=8 * MIB)


def _driver(workload: FakeWorkload, state: DomainState = DomainState.RUNNING) -> FakeDriver:
    driver = FakeDriver(tick_s=TICK_S)
    driver.add_host(DST)
    driver.add_domain(SRC, "vm", workload=workload, state=state)
    return driver


def _migration(
    driver: FakeDriver, settings: MigrationSettings, dst: str = DST, link: Link | None = None
) -> Migration:
    return Migration(
        driver, MigrationRequest("vm", SRC, dst, settings, link=link), sample_interval_s=TICK_S * 2
    )


#: a link on which the fake's 64 MiB take 8 s: long enough for auto to measure first
SLOW_LINK = Link(8 * MIB, "test")


def test_drivers_satisfy_the_protocol() -> None:
    driver: HypervisorDriver = FakeDriver()
    assert driver is not None


def test_quiet_precopy_completes_on_the_destination() -> None:
    driver = _driver(QUIET)
    result = _migration(driver, MigrationSettings.resolve()).run()
    assert result.phase is Phase.COMPLETED, result.error
    assert "vm" in driver.hosts[DST].domains and "vm" not in driver.hosts[SRC].domains
    assert not result.switched and result.memory_bytes >= 64 * MIB
    assert list(result.phase_times) == ["preparing", "running-precopy", "completed"]


def test_precopy_times_out_and_the_vm_stays_on_the_source() -> None:
    driver = _driver(HOT)
    settings = MigrationSettings.resolve(completion_timeout_s=0.2)
    result = _migration(driver, settings).run()
    assert result.phase is Phase.FAILED
    assert result.error is not None and "did not complete" in result.error
    assert "vm" in driver.hosts[SRC].domains and "vm" not in driver.hosts[DST].domains
    assert result.decisions[-1].action is Action.ABORT
    assert "did not complete" in result.decisions[-1].reason


@pytest.mark.parametrize("after", [0, 1, 3])
def test_postcopy_switches_after_n_iterations(after: int) -> None:
    driver = _driver(HOT)
    settings = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=after)
    result = _migration(driver, settings).run()
    assert result.phase is Phase.COMPLETED, result.error
    assert result.switched
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    first_postcopy = next(s for s in result.samples if s.postcopy)
    # the switch happened after `after` completed iterations: none more than one extra
    before = [s for s in result.samples if not s.postcopy]
    assert before[-1].completed_iterations >= after, switch.reason
    assert first_postcopy.completed_iterations <= after + 1
    assert "vm" in driver.hosts[DST].domains


def test_auto_switches_a_hot_guest_and_says_why() -> None:
    driver = _driver(HOT)
    # 10 ms: what is left (64 MiB at 800 MiB/s = 80 ms) never fits the downtime limit, and
    # a 30 s timeout keeps a broken rule from holding the suite for the default 300 s
    settings = MigrationSettings.resolve(
        post_copy=True, downtime_limit_ms=10, completion_timeout_s=30
    )
    result = _migration(driver, settings).run()
    assert result.phase is Phase.COMPLETED and result.switched
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert switch.source == "policy" and "timeout" not in switch.reason, switch.reason
    assert result.switch_at_s is not None and result.switch_at_s < 5


def test_auto_leaves_a_quiet_guest_in_precopy() -> None:
    driver = _driver(QUIET)
    result = _migration(driver, MigrationSettings.resolve(post_copy=True)).run()
    assert result.phase is Phase.COMPLETED and not result.switched


def _run_in_thread(m: Migration) -> threading.Thread:
    t = threading.Thread(target=m.run)
    t.start()
    return t


def _wait_phase(m: Migration, phase: Phase) -> None:
    _wait_for(lambda: m.phase is phase)


def _wait_for(cond: Callable[[], bool], ticks: int = 400) -> None:
    while not cond() and ticks:
        threading.Event().wait(TICK_S)
        ticks -= 1
    assert cond()


def test_force_complete_switches_to_postcopy() -> None:
    driver = _driver(HOT)
    # post-copy permitted, but the policy never switches on its own: only the operator does
    m = _migration(driver, MigrationSettings.resolve(post_copy=True, policy="precopy"))
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_PRECOPY)
    assert m.force_complete() == "switching to post-copy"
    t.join()
    assert m.result.phase is Phase.COMPLETED and m.result.switched
    assert m.result.decisions[-1].source == "operator"


def test_force_complete_without_postcopy_pauses_and_resumes_on_destination() -> None:
    driver = _driver(HOT)
    m = _migration(driver, MigrationSettings.resolve())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_PRECOPY)
    assert "pausing" in m.force_complete()
    t.join()
    assert m.result.phase is Phase.COMPLETED and not m.result.switched
    assert driver.hosts[DST].domains["vm"].state is DomainState.RUNNING
    assert "suspend vm" in driver.calls and "resume vm" in driver.calls


def test_abort_in_precopy_cancels_and_abort_in_postcopy_is_refused() -> None:
    driver = _driver(HOT)
    m = _migration(driver, MigrationSettings.resolve())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_PRECOPY)
    m.abort()
    t.join()
    assert m.result.phase is Phase.CANCELLED
    assert driver.hosts[SRC].domains["vm"].state is DomainState.RUNNING

    slow = FakeWorkload(memory_bytes=512 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=8 * MIB)
    driver = _driver(slow)
    m = _migration(driver, MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=0))
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    with pytest.raises(MigrationRefused, match="post-copy"):
        m.abort()
    t.join()
    assert m.result.phase is Phase.COMPLETED
    assert not any("abort_job" in c for c in driver.calls)


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        ("unknown", DomainNotFound, "no such domain"),
        ("same-host", InvalidMigration, "destination is the source"),
        ("host-down", HostUnreachable, "does not answer"),
        ("not-running", InvalidMigration, "only a running VM"),
    ],
)
def test_bad_requests_fail_before_anything_changes(
    setup: str, error: type[Exception], message: str
) -> None:
    driver = _driver(QUIET, DomainState.SHUTOFF if setup == "not-running" else DomainState.RUNNING)
    dst = SRC if setup == "same-host" else DST
    if setup == "host-down":
        driver.hosts[DST].up = False
    request = MigrationRequest(
        "ghost" if setup == "unknown" else "vm", SRC, dst, MigrationSettings.resolve()
    )
    m = Migration(driver, request)
    with pytest.raises(error, match=message):
        m.run()
    assert m.phase is Phase.FAILED
    assert not any(c.startswith("migrate") for c in driver.calls)
    assert "vm" in driver.hosts[SRC].domains


# -- a broken post-copy: pause, back-off, resume (tests/migration/test_faults_lab.py does it
# -- on real libvirt) ----------------------------------------------------------------------

SLOW = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=2 * MIB)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    import orbit.migration.engine as engine

    monkeypatch.setattr(engine, "RESUME_BACKOFF_FIRST_S", 0.02)
    monkeypatch.setattr(engine, "RESUME_BACKOFF_MAX_S", 0.1)
    monkeypatch.setattr(engine, "HOST_POLL_S", 0.02)


def _postcopy_settings(**kw: object) -> MigrationSettings:
    return MigrationSettings.resolve(
        post_copy=True,
        post_copy_after_iterations=0,
        postcopy_stall_s=0.1,
        **kw,  # type: ignore[arg-type]
    )


def test_stalled_postcopy_is_paused_and_resumed_when_the_destination_returns(
    fast_backoff: None,
) -> None:
    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    driver.hosts[DST].up = False  # the link to the destination is gone: no bytes move
    _wait_phase(m, Phase.POSTCOPY_PAUSED)
    assert driver.hosts[SRC].domains["vm"].reason == "postcopy-failed"
    # an attempt towards the host that does not answer waits, it is not made
    _wait_for(lambda: any("skipped" in d.reason for d in m.result.decisions))
    driver.hosts[DST].up = True
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    actions = [d.action for d in m.result.decisions]
    assert Action.PAUSE_POSTCOPY in actions and Action.RESUME_POSTCOPY in actions
    assert Action.ABORT not in actions  # never in post-copy
    assert "vm" in driver.hosts[DST].domains and "vm" not in driver.hosts[SRC].domains
    assert driver.hosts[DST].domains["vm"].state is DomainState.RUNNING
    assert m.result.resume_attempts == 1 and m.result.error is None


def test_resume_waits_for_the_destination_then_starts_at_once(fast_backoff: None) -> None:
    """No back-off while a host does not answer: the attempt waits for it, probing."""
    import orbit.migration.engine as engine

    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    engine.RESUME_BACKOFF_FIRST_S = engine.RESUME_BACKOFF_MAX_S = 60.0  # a back-off would hang
    driver.hosts[DST].up = False
    _wait_phase(m, Phase.POSTCOPY_PAUSED)
    _wait_for(lambda: any("skipped" in d.reason for d in m.result.decisions))
    driver.hosts[DST].up = True
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    resume = [d for d in m.result.decisions if d.action is Action.RESUME_POSTCOPY]
    assert [d.reason.split(" after")[0] for d in resume] == [
        "attempt 1 skipped until both hosts answer: host fake://h2 does not answer; "
        "probing every 0.02 s",
        "attempt 1",
    ]
    assert m.result.resume_attempts == 1


def _resumed_and_moving(m: Migration, attempts: int) -> Callable[[], bool]:
    """True once resume attempt ``attempts`` runs and has taken 3 samples since."""
    seen: list[int] = []

    def check() -> bool:
        if m.result.resume_attempts < attempts or m.phase is not Phase.RUNNING_POSTCOPY:
            return False
        seen.append(len(m.result.samples))
        return seen[-1] >= seen[0] + 3

    return check


def test_a_resume_that_ran_until_a_new_fault_is_not_backed_off(fast_backoff: None) -> None:
    """A flapping link: each resume moves bytes before the next cut breaks it, so the next
    one starts as soon as the host answers (a back-off of 60 s here would hang the test)."""
    import orbit.migration.engine as engine

    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    engine.RESUME_BACKOFF_FIRST_S = engine.RESUME_BACKOFF_MAX_S = 60.0
    for cut in range(3):
        driver.hosts[DST].up = False
        _wait_phase(m, Phase.POSTCOPY_PAUSED)
        driver.hosts[DST].up = True
        if cut < 2:  # the resumed post-copy moves bytes, then the link goes again
            _wait_for(_resumed_and_moving(m, attempts=cut + 1))
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    assert m.result.resume_attempts == 3


def test_operator_resume_now_skips_the_back_off(fast_backoff: None) -> None:
    """A refused resume backs off (60 s here); the operator's resume-now cuts it short."""
    import orbit.migration.engine as engine

    driver = _driver(SLOW)
    driver.resume_refusals = 1
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    engine.RESUME_BACKOFF_FIRST_S = engine.RESUME_BACKOFF_MAX_S = 60.0  # no automatic retry soon
    driver.hosts[DST].up = False
    _wait_phase(m, Phase.POSTCOPY_PAUSED)
    with pytest.raises(MigrationRefused, match="post-copy"):
        m.abort()
    driver.hosts[DST].up = True
    _wait_for(lambda: driver.resume_refusals == 0 and m.phase is Phase.POSTCOPY_PAUSED)
    assert m.resume_now() == "resuming post-copy now"
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    made = [
        d
        for d in m.result.decisions
        if d.action is Action.RESUME_POSTCOPY and "skipped" not in d.reason
    ]
    assert [d.source for d in made] == ["engine", "operator"]
    assert m.result.resume_attempts == 2


def test_refused_resumes_back_off_1_s_then_2_s() -> None:
    """The engine's own back-off, not shortened: after a refused resume it waits 1 s, after
    a second refusal 2 s (README: "retried after 1, 2, 4 ... 30 s")."""
    driver = _driver(SLOW)
    driver.resume_refusals = 2
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    driver.hosts[DST].up = False
    _wait_phase(m, Phase.POSTCOPY_PAUSED)
    driver.hosts[DST].up = True
    t.join(15)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    made = [
        d.at_s
        for d in m.result.decisions
        if d.action is Action.RESUME_POSTCOPY and "skipped" not in d.reason
    ]
    assert len(made) == 3, m.result.decisions
    # decision times are kept to the millisecond: compare at that precision
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(made)]
    assert 1.0 <= gaps[0] < 1.5 and 2.0 <= gaps[1] < 2.5, gaps


def test_a_destination_that_missed_the_break_is_paused_before_the_resume(
    fast_backoff: None,
) -> None:
    """QEMU 10 / libvirt 11: the destination still runs post-copy on the dead stream and
    refuses a resume until its end is paused too."""
    driver = _driver(SLOW)
    driver.destination_misses_breaks = True
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    driver.hosts[DST].up = False
    _wait_phase(m, Phase.POSTCOPY_PAUSED)
    assert driver.hosts[DST].domains["vm"].reason == "postcopy"
    driver.hosts[DST].up = True
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    rules = [d.rule for d in m.result.decisions if d.action is Action.PAUSE_POSTCOPY]
    assert rules == ["postcopy-stalled", "pause-destination"]
    assert m.result.resume_attempts == 1  # the first resume went through


def test_a_destination_that_cannot_resume_is_followed_never_paused_or_resumed(
    fast_backoff: None,
) -> None:
    """libvirt 11.2 and later crash on a resume: a stalled post-copy is left to TCP and,
    once libvirt's call fails, QEMU's stream is followed until it completes by itself."""
    driver = _driver(SLOW)
    driver.resume_defects[DST] = "libvirt 11.3.0 on the destination crashes"
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    driver.hosts[DST].up = False  # the link is cut: no bytes move
    _wait_for(lambda: any(d.rule == "postcopy-stalled-unresumable" for d in m.result.decisions))
    driver.break_control(SRC, "vm")  # then libvirt's keepalive gives up on its connection
    _wait_for(lambda: any(d.rule == "follow-stream" for d in m.result.decisions))
    assert m.phase is Phase.RUNNING_POSTCOPY
    assert driver.hosts[SRC].domains["vm"].reason == "postcopy-failed"
    driver.hosts[DST].up = True  # the link is back: the stream goes on
    t.join(10)
    assert not t.is_alive()
    assert m.result.phase is Phase.COMPLETED, m.result.error
    actions = {d.action for d in m.result.decisions}
    assert Action.PAUSE_POSTCOPY not in actions and Action.RESUME_POSTCOPY not in actions
    assert "abort_job vm postcopy=True" not in driver.calls
    assert m.result.resume_attempts == 0 and driver.hosts[DST].up  # never crashed it
    assert driver.hosts[DST].domains["vm"].state is DomainState.RUNNING
    assert "vm" not in driver.hosts[SRC].domains


class _BrokenRecorder(MigrationListener):
    """A record keeper whose every write fails (a full database pool, say)."""

    def on_phase(self, phase: Phase, at_s: float, reason: str) -> None:
        raise RuntimeError("QueuePool limit reached")

    def on_sample(self, sample: Sample) -> None:
        raise RuntimeError("QueuePool limit reached")

    def on_decision(self, record: DecisionRecord) -> None:
        raise RuntimeError("QueuePool limit reached")


def test_a_failing_record_keeper_never_stops_the_policy() -> None:
    """The policy, its switch and the completion run on when every write of the record
    fails (before, the first failed phase write ended run() with the job still going)."""
    driver = _driver(HOT)
    settings = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=1)
    m = Migration(
        driver,
        MigrationRequest("vm", SRC, DST, settings),
        listener=_BrokenRecorder(),
        sample_interval_s=TICK_S * 2,
    )
    result = m.run()
    assert result.phase is Phase.COMPLETED, result.error
    assert result.switched and result.samples
    assert driver.hosts[DST].domains["vm"].state is DomainState.RUNNING


def test_resume_now_is_refused_unless_paused() -> None:
    driver = _driver(QUIET)
    m = _migration(driver, MigrationSettings.resolve())
    with pytest.raises(MigrationRefused, match="nothing to resume"):
        m.resume_now()


def test_auto_starts_measuring_first_and_plans_post_copy_for_a_hot_guest() -> None:
    driver = _driver(HOT)
    settings = MigrationSettings.resolve(
        post_copy=True, downtime_limit_ms=10, completion_timeout_s=30
    )  # as above: the rest never fits the limit; a broken rule fails in 30 s
    result = _migration(driver, settings, link=SLOW_LINK).run()
    assert result.phase is Phase.COMPLETED and result.switched
    assert result.switch_at_s is not None and result.switch_at_s < 5
    assert driver.calls.index("start_dirty_rate vm") < driver.calls.index(
        "migrate vm post_copy=True"
    )
    assert result.plan is not None and result.plan.chosen.strategy.value == "postcopy-after-0"
    assert result.decisions[0].action is Action.PLAN
    assert result.decisions[0].reason.startswith("plan postcopy-after-0")
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert switch.reason.startswith(("as planned: postcopy-after-0", "re-planned"))
    assert result.transfer_rate_bytes_s is None or result.transfer_rate_bytes_s > 0


def test_auto_plans_pre_copy_for_a_quiet_guest() -> None:
    driver = _driver(QUIET)
    result = _migration(driver, MigrationSettings.resolve(post_copy=True), link=SLOW_LINK).run()
    assert result.phase is Phase.COMPLETED and not result.switched
    assert result.plan is not None and result.plan.chosen.strategy.value == "precopy"


def test_other_policies_do_not_measure() -> None:
    driver = _driver(QUIET)
    result = _migration(driver, MigrationSettings.resolve(post_copy=True, policy="postcopy")).run()
    assert result.plan is None and "start_dirty_rate vm" not in driver.calls


def test_auto_without_a_measurement_decides_from_precopy_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = _driver(QUIET)

    def refuse(uri: str, name: str, *, period_s: int = 1) -> None:
        raise HypervisorError("dirty rate calculation unsupported")

    monkeypatch.setattr(driver, "start_dirty_rate", refuse)
    result = _migration(driver, MigrationSettings.resolve(post_copy=True), link=SLOW_LINK).run()
    assert result.phase is Phase.COMPLETED and result.plan is None
    assert result.decisions[0].action is Action.PLAN
    assert "no plan" in result.decisions[0].reason and "unsupported" in result.decisions[0].reason


def test_auto_plans_while_the_first_pass_runs() -> None:
    """The measurement goes on beside the migration: pass 1 runs meanwhile, and the plan,
    made once the rate is there, predicts from what pass 1 has left; the switch follows."""
    driver = _driver(HOT)
    driver.dirty_rate_delay_s = 0.03  # 6 of pass 1's 16 ticks
    settings = MigrationSettings.resolve(
        post_copy=True, downtime_limit_ms=10, completion_timeout_s=30
    )
    result = _migration(driver, settings, link=SLOW_LINK).run()
    assert result.phase is Phase.COMPLETED and result.switched
    plan = result.plan
    assert plan is not None and plan.chosen.strategy.value == "postcopy-after-0"
    assert plan.made_at_s >= 0.03 and plan.facts.first_pass_elapsed_s > 0
    assert plan.facts.first_pass_bytes is not None and plan.facts.first_pass_bytes < 64 * MIB
    actions = [d.action for d in result.decisions]
    assert actions[0] is Action.CONTINUE  # first pass in progress, no plan yet
    assert actions.index(Action.PLAN) < actions.index(Action.SWITCH_TO_POSTCOPY)
    # switch_at_s is kept to the millisecond
    assert result.switch_at_s is not None and result.switch_at_s >= round(plan.made_at_s, 3)


#: a link of 25 MiB/s (128 KiB a tick): pass 1 over 64 MiB takes ~2.6 s, long enough
#: for KVM's write faults to settle during it
FAULT_LINK = Link(25 * MIB, "test")
#: 16 MiB of 64 rewritten at 50 MiB/s, on that link
HOT_SET = FakeWorkload(
    memory_bytes=64 * MIB, bandwidth_bytes=128 * 1024, dirty_bytes=256 * 1024, wss_bytes=16 * MIB
)


def _faulting(workload: FakeWorkload) -> FakeDriver:
    driver = _driver(workload)
    driver.report_new_page_faults = True
    return driver


def test_write_faults_keep_pass_1_for_a_hot_set_and_post_copy_pulls_only_it() -> None:
    """16 MiB rewritten at 50 MiB/s: the measurement finds 16 MiB/s of distinct pages,
    which could be a large set written at 16 MiB/s (post-copy at once, says the plan). The
    write faults stop once the 16 MiB are dirty: a hot set. Pass 1 goes on, and post-copy
    after it pulls 16 MiB, not the whole RAM."""
    hot_set = replace(HOT_SET)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    result = _migration(_faulting(hot_set), settings, link=FAULT_LINK).run()
    assert result.phase is Phase.COMPLETED and result.switched
    plan = result.plan
    assert plan is not None and plan.chosen.strategy.value == "postcopy-after-0", plan
    rules = [d.rule for d in result.decisions]
    assert "plan-faults" in rules  # waited for the faults to settle, then kept pass 1
    kept = next(d for d in result.decisions if d.rule == "replanned")
    assert "a hot set of about 16 MiB" in kept.reason and "postcopy-after-1" in kept.reason
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert "postcopy-after-1" in switch.reason and "1 iteration(s) completed" in switch.reason
    pulled = [x for x in result.samples if x.postcopy]
    assert pulled and pulled[0].memory_remaining_bytes <= 16 * MIB + 128 * 1024


def test_fault_counts_that_keep_going_down_drop_the_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the third count of pass 1 on, every count reads lower (a vCPU gone): after
    FAULT_MISSES such reads the engine stops reading the faults, and as they had not
    settled, the plan's post-copy at once stands, not a 'hot set' from the drop."""
    driver = _faulting(replace(HOT_SET))
    real = driver.new_page_faults
    reads: list[int | None] = []

    def dropping(uri: str, name: str) -> int | None:
        count = real(uri, name)
        reads.append(0 if len(reads) >= 3 else count)  # the base, two counts, then drops
        return reads[-1]

    monkeypatch.setattr(driver, "new_page_faults", dropping)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    result = _migration(driver, settings, link=FAULT_LINK).run()
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert switch.reason.startswith("as planned: postcopy-after-0"), switch.reason
    assert len(reads) == 3 + FAULT_MISSES, reads  # none after the last miss
    assert "replanned" not in [d.rule for d in result.decisions]


@pytest.mark.parametrize("miss", [None, 0], ids=["unreadable", "lower"])
def test_a_fault_read_that_says_nothing_does_not_lose_the_hot_set(
    monkeypatch: pytest.MonkeyPatch, miss: int | None
) -> None:
    """The hot set of the test above, with one read of pass 1 that failed (libvirt left
    the vCPU statistics out) or came back lower: that read is skipped, the faults still
    settle on the hot set, and post-copy waits for pass 1. (Before, one such read ended
    the counting, and post-copy started at once, as the plan without faults said.)"""
    driver = _faulting(replace(HOT_SET))
    real = driver.new_page_faults
    reads: list[int | None] = []

    def missing_one(uri: str, name: str) -> int | None:
        count = real(uri, name)
        reads.append(miss if len(reads) == 4 else count)
        return reads[-1]

    monkeypatch.setattr(driver, "new_page_faults", missing_one)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    result = _migration(driver, settings, link=FAULT_LINK).run()
    assert len(reads) > 6 and reads[4] == miss, reads
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert "postcopy-after-1" in switch.reason and "1 iteration(s) completed" in switch.reason


def test_faults_unreadable_once_settled_keep_what_they_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The faults settle on the hot set, then every read fails for the rest of pass 1:
    what they said stands (post-copy after pass 1), and the engine stops reading them."""
    driver = _faulting(replace(HOT_SET))
    real = driver.new_page_faults
    reads: list[int | None] = []
    replanned = threading.Event()

    def failing_once_settled(uri: str, name: str) -> int | None:
        reads.append(None if replanned.is_set() else real(uri, name))
        return reads[-1]

    monkeypatch.setattr(driver, "new_page_faults", failing_once_settled)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    m = _migration(driver, settings, link=FAULT_LINK)
    thread = _run_in_thread(m)
    _wait_for(lambda: any(d.rule == "replanned" for d in m.result.decisions), ticks=2000)
    replanned.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    switch = next(d for d in m.result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert "postcopy-after-1" in switch.reason and "1 iteration(s) completed" in switch.reason
    assert reads.count(None) == FAULT_MISSES, reads


def test_without_write_faults_the_plan_switches_a_hot_set_at_once() -> None:
    """The same guest on a hypervisor that reports no faults (TCG): post-copy at once."""
    hot_set = replace(HOT_SET)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    result = _migration(_driver(hot_set), settings, link=FAULT_LINK).run()
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert switch.reason.startswith("as planned: postcopy-after-0"), switch.reason
    assert "plan-faults" not in [d.rule for d in result.decisions]


def test_write_faults_switch_a_guest_that_turns_hot_during_pass_1() -> None:
    """Measured quiet (pre-copy planned); half a second into pass 1 it dirties 50 MiB/s:
    the faults show it before the pass ends, and post-copy starts during pass 1."""
    quiet = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=128 * 1024, dirty_bytes=0)
    driver = _faulting(quiet)
    settings = MigrationSettings.resolve(post_copy=True, completion_timeout_s=60)
    m = _migration(driver, settings, link=FAULT_LINK)
    thread = _run_in_thread(m)
    try:
        _wait_for(lambda: m.result.plan is not None and len(m.result.samples) > 40, ticks=2000)
        plan = m.result.plan
        assert plan is not None and plan.chosen.strategy.value == "precopy", plan
        quiet.dirty_bytes = 256 * 1024  # the guest turns hot
    finally:
        thread.join()
    result = m.result
    assert result.phase is Phase.COMPLETED and result.switched
    switch = next(d for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY)
    assert "(KVM write faults), not 0.0" in switch.reason, switch.reason
    assert "0 iteration(s) completed" in switch.reason


def test_a_migration_over_before_the_measurement_has_no_plan() -> None:
    driver = _driver(QUIET)
    driver.dirty_rate_delay_s = 60.0
    result = _migration(driver, MigrationSettings.resolve(post_copy=True), link=SLOW_LINK).run()
    assert result.phase is Phase.COMPLETED and result.plan is None
    plans = [d for d in result.decisions if d.action is Action.PLAN]
    assert len(plans) == 1 and "before the dirty rate was measured" in plans[0].reason


def test_continue_decisions_are_recorded_once_per_rule() -> None:
    """A quiet pre-copy decides 'continue' at every sample; the record keeps one entry per
    stretch of the same rule, each naming it."""
    driver = _driver(QUIET)
    result = _migration(driver, MigrationSettings.resolve(post_copy=True)).run()
    policy = [d for d in result.decisions if d.source == "policy"]
    assert policy and all(d.rule for d in policy), policy
    rules = [d.rule for d in policy]
    assert all(a != b for a, b in itertools.pairwise(rules)), rules
    assert len(result.samples) > len(policy)  # samples were many, records few


def test_pass_one_is_kept_and_the_next_plan_uses_it() -> None:
    """A migration that ran a second pass keeps what pass 1 left dirty; given to the next
    migration of the guest, it shapes auto's plan before a byte is sent."""
    driver = _driver(HOT)
    settings = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=1)
    first = _migration(driver, settings).run()
    assert first.phase is Phase.COMPLETED and first.pass1 is not None
    dirtied, seconds = first.pass1
    assert 0 < dirtied <= 64 * MIB and seconds > 0
    request = MigrationRequest(
        "vm",
        DST,
        SRC,
        MigrationSettings.resolve(post_copy=True, downtime_limit_ms=10, completion_timeout_s=30),
        link=SLOW_LINK,
        previous_pass1=(4 * MIB, 8.0),  # 4 MiB after 8 s: far less than the rate says
    )
    driver.add_host(SRC)
    second = Migration(driver, request, sample_interval_s=TICK_S * 2).run()
    assert second.plan is not None and "a hot set of 4 MiB" in second.plan.prior, second.plan


def test_post_copy_is_recorded_once_qemu_switched_not_when_asked() -> None:
    """QEMU switches at its next iteration boundary: until then the phase stays pre-copy
    (abort is refused already), and the samples say pre-copy."""
    driver = _driver(SLOW)
    driver.postcopy_switch_delay_ticks = 40  # 0.2 s between the request and the switch
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_for(lambda: m.result.switch_at_s is not None)
    assert m.phase is Phase.RUNNING_PRECOPY
    with pytest.raises(MigrationRefused):
        m.abort()
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    assert driver.hosts[SRC].domains["vm"].reason == "postcopy"
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    samples = m.result.samples
    first_postcopy = next(i for i, s in enumerate(samples) if s.postcopy)
    assert first_postcopy > 0 and all(s.postcopy for s in samples[first_postcopy:])


def test_a_break_before_qemu_switched_fails_like_pre_copy_and_is_not_resumed(
    fast_backoff: None,
) -> None:
    """The CI flake of stop 24: post-copy asked for, the link cut before QEMU switched,
    libvirt cancelled the migration. The VM runs on the source alone: failed, no resume."""
    driver = _driver(SLOW)
    driver.postcopy_switch_delay_ticks = 10**6  # QEMU never reaches its next boundary
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_for(lambda: m.result.switch_at_s is not None)
    driver.fail_job(SRC, "vm", "internal error: client socket is closed")
    t.join(10)
    assert m.result.phase is Phase.FAILED, m.result.error
    assert "client socket is closed" in (m.result.error or "")
    actions = [d.action for d in m.result.decisions]
    assert Action.SWITCH_TO_POSTCOPY in actions and Action.RESUME_POSTCOPY not in actions
    assert driver.hosts[SRC].domains["vm"].state is DomainState.RUNNING
    assert "vm" not in driver.hosts[DST].domains


def test_a_break_after_qemu_switched_pauses_and_resumes(fast_backoff: None) -> None:
    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    t = _run_in_thread(m)
    _wait_phase(m, Phase.RUNNING_POSTCOPY)
    driver.fail_job(SRC, "vm", "internal error: client socket is closed")
    t.join(10)
    assert m.result.phase is Phase.COMPLETED, m.result.error
    assert m.result.resume_attempts == 1
    assert driver.hosts[DST].domains["vm"].state is DomainState.RUNNING


def test_adopting_a_paused_record_whose_vm_runs_on_the_source_says_so() -> None:
    """A record says postcopy-paused, yet the VM runs on the source alone (an operator
    resumed it by hand): an error that says what the hosts say, not an internal one."""
    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    m.adopt(Phase.POSTCOPY_PAUSED, 5.0)
    assert m.result.phase is Phase.ERROR
    assert "the record says postcopy-paused" in (m.result.error or "")
    assert "operator must look" in (m.result.error or "")
    assert driver.hosts[SRC].domains["vm"].state is DomainState.RUNNING


@pytest.mark.parametrize("phase", [Phase.PREPARING, Phase.RUNNING_PRECOPY])
def test_adopting_a_migration_whose_job_never_started_says_so(phase: Phase) -> None:
    """Its instance died before libvirt got the job: nothing moved, so the adopter is told
    to start it afresh (instead of calling it failed)."""
    driver = _driver(SLOW)
    m = _migration(driver, _postcopy_settings())
    with pytest.raises(JobNeverStarted, match="starts afresh"):
        m.adopt(phase, 3.0)
    assert driver.calls == []  # nothing was asked of the hosts but questions


def test_a_waker_returns_early_once_per_set_and_keeps_a_set_made_meanwhile() -> None:
    """The monitor's wake-up: a set() ends the next wait at once (even one made while the
    monitor was busy, between two waits), and is consumed by it; without one, a wait
    lasts its timeout."""
    waker = Waker()
    waker.set()
    waker.set()  # two before a wait: one wake-up
    started = time.monotonic()
    waker.wait(30.0)
    assert time.monotonic() - started < 10.0  # returned at once, not after 30 s
    started = time.monotonic()
    waker.wait(0.05)  # consumed: this one times out
    assert time.monotonic() - started >= 0.04
    threading.Timer(0.05, waker.set).start()  # from another thread, during the wait
    started = time.monotonic()
    waker.wait(30.0)
    assert time.monotonic() - started < 10.0
