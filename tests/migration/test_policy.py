"""The post-copy policy, branch by branch, on synthetic samples; and settings resolution.

Units in the tables: MiB, MiB/s and seconds. With the default settings the downtime limit
is 300 ms and the completion timeout 300 s, so at 100 MiB/s the downtime target is 30 MiB.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, replace

import pytest

from orbit.errors import ConfigError
from orbit.migration.model import MIB, Action, MigrationSettings, Policy, Sample
from orbit.migration.phase import Phase
from orbit.migration.policy import (
    decide,
    first_pass,
    outcome_from_hosts,
    postcopy_stall,
    resume_backoff_s,
    transfer_rate,
)
from orbit.migration.predict import (
    FAULT_SETTLE_S,
    Facts,
    NewPages,
    Plan,
    Strategy,
    make_plan,
    refine,
)
from orbit.virt.driver import DomainInfo, DomainState


def s(
    t: float,
    it: int,
    remaining_mib: float,
    dirty_mib_s: float = 0,
    bw_mib_s: float = 100,
    postcopy: bool = False,
    total_mib: float = 1024,
) -> Sample:
    """A progress sample at ``t`` s in memory iteration ``it``."""
    return Sample(
        elapsed_s=t,
        memory_total_bytes=int(total_mib * MIB),
        memory_processed_bytes=int((total_mib - remaining_mib) * MIB),
        memory_remaining_bytes=int(remaining_mib * MIB),
        dirty_rate_bytes_s=int(dirty_mib_s * MIB),
        bandwidth_bytes_s=int(bw_mib_s * MIB),
        iteration=it,
        postcopy=postcopy,
    )


PRECOPY = MigrationSettings.resolve()
AUTO = MigrationSettings.resolve(post_copy=True)


def postcopy_after(n: int) -> MigrationSettings:
    return MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=n)


#: Built directly, not via resolve(): asks for auto but does not permit post-copy.
AUTO_WITHOUT_POSTCOPY = MigrationSettings(post_copy=False, policy=Policy.AUTO)


@dataclass(frozen=True)
class Case:
    samples: list[Sample]
    settings: MigrationSettings
    now_s: float
    action: Action
    needles: tuple[str, ...]


def case(
    samples: list[Sample],
    settings: MigrationSettings,
    now_s: float,
    action: Action,
    *needles: str,
) -> Case:
    return Case(samples, settings, now_s, action, needles)


C, SW, AB = Action.CONTINUE, Action.SWITCH_TO_POSTCOPY, Action.ABORT

# A pre-copy that converges: each pass starts with half of what the previous one did.
SHRINKING = [
    s(20, 2, 400, 50),
    s(20.25, 2, 300, 50),
    s(24, 3, 200, 50),
    s(24.25, 3, 150, 50),
]

# Each pass ends just under the downtime threshold, whatever the guest does, so comparing
# the smallest readings of two passes (25 MiB vs 20 MiB) would say "not shrinking"; what
# each pass starts with (200 MiB vs 400 MiB) says it is.
PASS_ENDS_LOOK_FLAT = [
    s(20, 2, 400, 50),
    s(21, 2, 200, 50),
    s(23.9, 2, 20, 50),
    s(24, 3, 200, 50),
    s(25, 3, 100, 50),
    s(25.9, 3, 25, 50),
    s(26, 4, 100, 50),
]

CASES: dict[str, Case] = {
    # --- every policy ------------------------------------------------------------------
    "precopy: no sample yet": case([], PRECOPY, 0.0, C, "waiting for the first progress sample"),
    "auto: no sample yet": case([], AUTO, 0.0, C, "waiting for the first progress sample"),
    "postcopy N=0: no sample yet": case(
        [], postcopy_after(0), 0.0, C, "waiting for the first progress sample"
    ),
    "auto: already in post-copy, past the timeout": case(
        [s(10, 3, 500, 99), s(400, 3, 200, postcopy=True)],
        AUTO,
        400.0,
        C,
        "in post-copy",
        "200.0 MiB left to pull",
        "never aborted in post-copy",
    ),
    "precopy settings: already in post-copy, past the timeout, never aborted": case(
        [s(400, 3, 200, postcopy=True)], PRECOPY, 400.0, C, "in post-copy"
    ),
    "postcopy N=1: already in post-copy": case(
        [s(10, 2, 200, postcopy=True)], postcopy_after(1), 10.0, C, "in post-copy"
    ),
    # --- stalled (no bytes moved): abort pre-copy whatever the policy ---------------------
    "auto: stalled for 21 s aborts": case(
        [s(10, 1, 600, 0), s(20, 1, 400, 0), s(31, 1, 400, 0), s(41, 1, 400, 0)],
        AUTO,
        41.0,
        AB,
        "no progress for 21 s",
        "the VM stays on the source",
    ),
    "precopy: stalled for 21 s aborts before the timeout": case(
        [s(20, 2, 400, 50), s(41, 2, 400, 50)], PRECOPY, 41.0, AB, "no progress"
    ),
    "postcopy N=3: stalled aborts instead of waiting for passes": case(
        [s(20, 1, 400, 0), s(30, 1, 400, 0), s(40.5, 1, 400, 0)],
        postcopy_after(3),
        40.5,
        AB,
        "stall timeout 20 s",
    ),
    "auto: no progress for 19 s is not yet a stall": case(
        [s(10, 1, 600, 0), s(20, 1, 400, 0), s(39, 1, 400, 0)],
        AUTO,
        39.0,
        C,
        "first pass",
    ),
    "auto: stalled in post-copy is the engine's business": case(
        [s(10, 3, 200, postcopy=True), s(40, 3, 200, postcopy=True)], AUTO, 40.0, C, "in post-copy"
    ),
    # --- precopy ------------------------------------------------------------------------
    "precopy: before the timeout": case(
        [s(299.75, 5, 500, 99)],
        PRECOPY,
        299.75,
        C,
        "pre-copy in progress",
        "500.0 MiB remaining in iteration 5",
        "299.8 s of 300 s",
    ),
    "precopy: at the timeout": case(
        [s(300, 5, 500, 99)],
        PRECOPY,
        300.0,
        AB,
        "pre-copy did not complete within 300 s",
        "the VM stays on the source",
    ),
    "precopy: past the timeout": case(
        [s(301, 5, 500)], PRECOPY, 301.0, AB, "did not complete within 300 s"
    ),
    "precopy: fractional timeout": case(
        [s(12.5, 5, 500)],
        MigrationSettings.resolve(completion_timeout_s=12.5),
        12.5,
        AB,
        "within 12.5 s",
    ),
    "precopy-only object asking for auto acts as precopy: no switch": case(
        [s(10, 3, 500, 99)], AUTO_WITHOUT_POSTCOPY, 10.0, C, "pre-copy in progress"
    ),
    "precopy-only object asking for auto acts as precopy: abort at timeout": case(
        [s(300, 3, 500, 99)], AUTO_WITHOUT_POSTCOPY, 300.0, AB, "the VM stays on the source"
    ),
    "precopy-only object asking for postcopy N=0 acts as precopy": case(
        [s(1, 1, 900)],
        MigrationSettings(post_copy=False, policy=Policy.POSTCOPY, post_copy_after_iterations=0),
        1.0,
        C,
        "pre-copy in progress",
    ),
    # --- postcopy -----------------------------------------------------------------------
    "postcopy N=0: first sample switches": case(
        [s(0.25, 0, 0, bw_mib_s=0)],
        postcopy_after(0),
        0.25,
        SW,
        "post_copy_after_iterations=0",
    ),
    "postcopy N=1: during the first pass": case(
        [s(1, 1, 900)],
        postcopy_after(1),
        1.0,
        C,
        "0 of 1 memory iteration(s) completed",
        "900.0 MiB remaining in iteration 1",
    ),
    "postcopy N=1: after 1 completed iteration": case(
        [s(1, 1, 900), s(9, 2, 300)],
        postcopy_after(1),
        9.0,
        SW,
        "1 memory iteration(s) completed (post_copy_after_iterations=1)",
    ),
    "postcopy default N is 1": case(
        [s(9, 2, 300)],
        MigrationSettings.resolve(post_copy=True, policy="postcopy"),
        9.0,
        SW,
        "(post_copy_after_iterations=1)",
    ),
    "postcopy N=3: after 2 completed iterations": case(
        [s(12, 3, 300)], postcopy_after(3), 12.0, C, "2 of 3 memory iteration(s) completed"
    ),
    "postcopy N=3: after 3 completed iterations": case(
        [s(14, 4, 300)],
        postcopy_after(3),
        14.0,
        SW,
        "3 memory iteration(s) completed (post_copy_after_iterations=3)",
    ),
    "postcopy N=3: at the timeout": case(
        [s(300, 2, 300)],
        postcopy_after(3),
        300.0,
        SW,
        "pre-copy did not complete within 300 s",
        "switching to post-copy to guarantee completion",
    ),
    # --- auto ---------------------------------------------------------------------------
    "auto: at the timeout, even while converging": case(
        [s(300, 9, 10, 50)],
        AUTO,
        300.0,
        SW,
        "pre-copy did not complete within 300 s",
        "to guarantee completion",
    ),
    "auto: first sample, nothing measured": case(
        [s(0.25, 0, 0, bw_mib_s=0)], AUTO, 0.25, C, "first pass over RAM in progress"
    ),
    "auto: first pass over RAM": case(
        [s(1, 1, 900, bw_mib_s=100)],
        AUTO,
        1.0,
        C,
        "first pass over RAM in progress",
        "900.0 MiB of 1024.0 MiB remaining",
    ),
    "auto: first pass with a (bogus) high dirty rate is not evidence": case(
        [s(1, 1, 900, 99)], AUTO, 1.0, C, "first pass over RAM in progress"
    ),
    "auto: converging beats a high dirty rate": case(
        [s(10, 3, 20, 99)],
        AUTO,
        10.0,
        C,
        "converging",
        "20.0 MiB remaining at 100.0 MiB/s",
        "200 ms <= downtime limit 300 ms",
    ),
    "auto: converging exactly at the downtime limit": case(
        [s(10, 3, 30, 99)], AUTO, 10.0, C, "converging", "300 ms <= downtime limit 300 ms"
    ),
    "auto: converging during the first pass": case([s(1, 1, 10)], AUTO, 1.0, C, "converging"),
    "auto: dirty rate 95% of transfer rate": case(
        [s(10, 3, 500, 95)],
        AUTO,
        10.0,
        SW,
        "pre-copy cannot converge",
        "dirty rate 95.0 MiB/s >= 90% of transfer rate 100.0 MiB/s after 2 iteration(s)",
    ),
    "auto: dirty rate exactly 90%": case(
        [s(10, 2, 500, 90)], AUTO, 10.0, SW, "dirty rate 90.0 MiB/s >= 90%", "after 1 iter"
    ),
    "auto: dirty rate above the transfer rate": case(
        [s(10, 2, 500, 950, 1000)],
        AUTO,
        10.0,
        SW,
        "dirty rate 950.0 MiB/s >= 90% of transfer rate 1000.0 MiB/s",
    ),
    "auto: dirty rate 89%, one pass seen": case(
        [s(10, 2, 100, 89)], AUTO, 10.0, C, "pre-copy progressing"
    ),
    "auto: dirty rate not measured yet after the first pass": case(
        [s(10, 2, 500, 0)], AUTO, 10.0, C, "pre-copy progressing", "dirty rate 0.0 MiB/s"
    ),
    "auto: dirty rate 50% and shrinking": case(
        SHRINKING,
        AUTO,
        24.25,
        C,
        "pre-copy progressing",
        "150.0 MiB remaining after 2 iteration(s)",
        "dirty rate 50.0 MiB/s",
        "transfer rate 100.0 MiB/s",
    ),
    "auto: not shrinking (95%)": case(
        [s(20, 2, 400, 50), s(21, 2, 300, 50), s(24, 3, 380, 50)],
        AUTO,
        24.0,
        SW,
        "remaining memory not shrinking",
        "380.0 MiB at the start of iteration 3 vs 400.0 MiB at the start of iteration 2",
    ),
    "auto: not shrinking, exactly 90%": case(
        [s(20, 2, 400, 50), s(24, 3, 360, 50)], AUTO, 24.0, SW, "not shrinking"
    ),
    # at 100 MiB/s and 300 ms, 30 MiB fit in the downtime limit: 45 MiB is nearly there
    "auto: not shrinking but within 1.5x the downtime target": case(
        [s(20, 2, 44, 30), s(24, 3, 44, 30)], AUTO, 24.0, C, "pre-copy progressing"
    ),
    "auto: not shrinking, just above 1.5x the downtime target": case(
        [s(20, 2, 46, 30), s(24, 3, 46, 30)], AUTO, 24.0, SW, "not shrinking"
    ),
    "auto: shrinking just enough (89.75%)": case(
        [s(20, 2, 400, 50), s(24, 3, 359, 50)], AUTO, 24.0, C, "pre-copy progressing"
    ),
    "auto: growing": case(
        [s(20, 2, 300, 50), s(24, 3, 400, 50), s(25, 3, 350, 50)],
        AUTO,
        25.0,
        SW,
        "400.0 MiB at the start of iteration 3 vs 300.0 MiB at the start of iteration 2",
    ),
    "auto: the last two passes are compared": case(
        [s(20, 2, 800, 50), s(24, 3, 400, 50), s(26, 4, 390, 50)],
        AUTO,
        26.0,
        SW,
        "390.0 MiB at the start of iteration 4 vs 400.0 MiB at the start of iteration 3",
    ),
    "auto: an iteration the samples missed is skipped": case(
        [s(20, 2, 400, 50), s(26, 4, 380, 50)],
        AUTO,
        26.0,
        SW,
        "iteration 4 vs 400.0 MiB at the start of iteration 2",
    ),
    "auto: the first pass is not compared": case(
        [s(1, 1, 1000, 50), s(9, 2, 950, 50)], AUTO, 9.0, C, "pre-copy progressing"
    ),
    "auto: passes judged by their start, not their end": case(
        PASS_ENDS_LOOK_FLAT, AUTO, 26.0, C, "pre-copy progressing"
    ),
    "auto: projection exceeds the time left": case(
        [s(250, 2, 2000, 80, total_mib=4096)],
        AUTO,
        250.0,
        SW,
        "pre-copy too slow",
        "19 more iteration(s) taking 98.6 s",
        "30.0 MiB in 300 ms at 100.0 MiB/s",
        "dirty rate 80.0 MiB/s",
        "only 50.0 s left before the 300 s completion timeout",
    ),
    "auto: projection fits in the time left": case(
        [s(100, 2, 2000, 80, total_mib=4096)], AUTO, 100.0, C, "pre-copy progressing"
    ),
}


@pytest.mark.parametrize("c", list(CASES.values()), ids=list(CASES))
def test_decide(c: Case) -> None:
    decision = decide(c.samples, c.settings, c.now_s)
    assert decision.action is c.action, decision.reason
    for needle in c.needles:
        assert needle in decision.reason
    assert "\n" not in decision.reason
    # every decision names its rule: the engine records one per stretch of a rule
    assert decision.rule and decision.rule == decision.rule.strip().lower(), decision


# --- properties over a grid of inputs -------------------------------------------------

GRID_SETTINGS = [
    PRECOPY,
    AUTO,
    postcopy_after(0),
    postcopy_after(1),
    postcopy_after(3),
    AUTO_WITHOUT_POSTCOPY,
    MigrationSettings(post_copy=False, policy=Policy.POSTCOPY, post_copy_after_iterations=0),
    MigrationSettings.resolve(post_copy=True, completion_timeout_s=5, downtime_limit_ms=50),
]
GRID_NOW_S = [0.0, 4.0, 10.0, 299.9, 300.0, 1000.0]


def _grid_histories() -> list[list[Sample]]:
    histories: list[list[Sample]] = [[]]
    for it, remaining, dirty, bw in itertools.product(
        (0, 1, 2, 3, 5), (0, 20, 400, 4000), (0, 50, 95, 200), (0, 100)
    ):
        one = s(10, it, remaining, dirty, bw)
        histories.append([one])
        histories.append([s(5, 2, 400, dirty, bw), one])
    return histories


GRID = list(itertools.product(GRID_SETTINGS, _grid_histories(), GRID_NOW_S, (False, True)))


def test_never_abort_in_postcopy() -> None:
    checked = 0
    for settings, history, now_s, _ in GRID:
        if not history:
            continue
        in_postcopy = [*history[:-1], replace(history[-1], postcopy=True)]
        decision = decide(in_postcopy, settings, now_s)
        assert decision.action is Action.CONTINUE, (settings, in_postcopy, now_s, decision)
        checked += 1
    assert checked > 1000


def test_never_switch_when_postcopy_is_not_permitted() -> None:
    checked = 0
    for settings, history, now_s, _ in GRID:
        if settings.post_copy:
            continue
        decision = decide(history, settings, now_s)
        assert decision.action is not Action.SWITCH_TO_POSTCOPY, (settings, history, now_s)
        checked += 1
    assert checked > 1000


def test_only_precopy_aborts_and_nothing_pauses() -> None:
    for settings, history, now_s, _ in GRID:
        action = decide(history, settings, now_s).action
        assert action is not Action.PAUSE_AND_COMPLETE
        if action is Action.ABORT:
            assert not settings.post_copy or settings.policy is Policy.PRECOPY
            assert now_s >= settings.completion_timeout_s


def test_postcopy_permitted_means_the_timeout_switches() -> None:
    """With post-copy permitted (and policy not precopy) the timeout guarantees completion."""
    for settings in (AUTO, postcopy_after(3)):
        for history in _grid_histories():
            if history:
                decision = decide(history, settings, settings.completion_timeout_s)
                assert decision.action is Action.SWITCH_TO_POSTCOPY, history


def test_decide_is_pure() -> None:
    for c in CASES.values():
        before = copy.deepcopy(c.samples)
        first = decide(c.samples, c.settings, c.now_s)
        second = decide(c.samples, c.settings, c.now_s)
        as_tuple = decide(tuple(c.samples), c.settings, c.now_s)
        assert first == second == as_tuple
        assert c.samples == before


# --- MigrationSettings.resolve ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "policy", "after_iterations"),
    [
        pytest.param({}, Policy.PRECOPY, 1, id="no post-copy: precopy"),
        pytest.param({"policy": "precopy"}, Policy.PRECOPY, 1, id="explicit precopy"),
        pytest.param({"post_copy": True}, Policy.AUTO, 1, id="post-copy: auto"),
        pytest.param(
            {"post_copy": True, "post_copy_after_iterations": 0},
            Policy.POSTCOPY,
            0,
            id="post-copy + after_iterations 0: postcopy",
        ),
        pytest.param(
            {"post_copy": True, "post_copy_after_iterations": 100},
            Policy.POSTCOPY,
            100,
            id="post-copy + after_iterations 100: postcopy",
        ),
        pytest.param(
            {"post_copy": True, "policy": "postcopy"},
            Policy.POSTCOPY,
            1,
            id="post-copy + policy postcopy: default N=1",
        ),
        pytest.param(
            {"post_copy": True, "policy": Policy.PRECOPY},
            Policy.PRECOPY,
            1,
            id="post-copy permitted but precopy asked",
        ),
    ],
)
def test_resolve_defaults(kwargs: dict[str, object], policy: Policy, after_iterations: int) -> None:
    settings = MigrationSettings.resolve(**kwargs)  # type: ignore[arg-type]
    assert settings.policy is policy
    assert settings.post_copy_after_iterations == after_iterations
    assert settings.post_copy is bool(kwargs.get("post_copy", False))
    assert settings.completion_timeout_s == 300.0
    assert settings.downtime_limit_ms == 300
    assert settings.bandwidth_mib_s == 0


def test_resolve_keeps_the_given_limits() -> None:
    settings = MigrationSettings.resolve(
        post_copy=True,
        completion_timeout_s=60,
        downtime_limit_ms=100,
        bandwidth_mib_s=500,
        block_migration=True,
    )
    assert (settings.completion_timeout_s, settings.downtime_limit_ms) == (60, 100)
    assert settings.bandwidth_mib_s == 500
    assert settings.block_migration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"policy": "auto"},
            "migration_policy 'auto' needs post_copy=true",
            id="auto without post-copy",
        ),
        pytest.param(
            {"policy": "postcopy"},
            "migration_policy 'postcopy' needs post_copy=true",
            id="postcopy without post-copy",
        ),
        pytest.param(
            {"post_copy": True, "policy": "fast"},
            "migration_policy must be one of precopy, postcopy, auto, got 'fast'",
            id="unknown policy",
        ),
        pytest.param(
            {"post_copy": True, "post_copy_after_iterations": -1},
            "post_copy_after_iterations must be 0..100, got -1",
            id="after_iterations -1",
        ),
        pytest.param(
            {"post_copy": True, "post_copy_after_iterations": 101},
            "post_copy_after_iterations must be 0..100, got 101",
            id="after_iterations 101",
        ),
        pytest.param(
            {"post_copy_after_iterations": 2},
            "post_copy_after_iterations needs post_copy=true",
            id="after_iterations without post-copy",
        ),
        pytest.param(
            {"bandwidth_mib_s": -1},
            "bandwidth must be >= 0 MiB/s (0 = unlimited), got -1",
            id="negative bandwidth",
        ),
        pytest.param(
            {"completion_timeout_s": 0},
            "completion timeout must be > 0 s, got 0",
            id="zero completion timeout",
        ),
        pytest.param(
            {"downtime_limit_ms": -5},
            "downtime limit must be > 0 ms, got -5",
            id="negative downtime limit",
        ),
    ],
)
def test_resolve_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        MigrationSettings.resolve(**kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


# -- auto with a plan (strategy chosen from measured rates before the start) -------------


def _plan(dirty_mib_s: float, link_mib_s: float = 100) -> Plan:
    facts = Facts(
        ram_bytes=1024 * MIB,
        dirty_rate_bytes_s=dirty_mib_s * MIB,
        bandwidth_bytes_s=link_mib_s * MIB,
        downtime_limit_ms=300,
    )
    return make_plan(facts, link_source="test", dirty_rate_mode="dirty-bitmap", timeout_s=300)


def test_auto_with_a_hot_plan_switches_at_the_first_sample() -> None:
    plan = _plan(2000)
    assert plan.chosen.strategy.switch_after == 0
    d = decide([s(1.1, 1, 1000)], AUTO, 1.1, plan)
    assert d.action is Action.SWITCH_TO_POSTCOPY
    assert d.reason.startswith("as planned: postcopy-after-0: ") and "0 iteration(s)" in d.reason


def test_auto_without_a_plan_waits_for_the_first_pass() -> None:
    assert decide([s(1.1, 1, 1000)], AUTO, 1.1).action is Action.CONTINUE


def test_auto_with_a_quiet_plan_stays_in_precopy() -> None:
    plan = _plan(1)
    samples = [s(1.0 + i, 1, 1000 - 100 * i) for i in range(5)]
    d = decide(samples, AUTO, 5.0, plan)
    assert d.action is Action.CONTINUE and d.reason.startswith("first pass")


def test_auto_replans_when_the_link_is_slower_than_planned() -> None:
    """Planned for 100 MiB/s at 40 MiB/s dirtying (pre-copy converges); the link gives
    30 MiB/s: pre-copy would not converge, so post-copy now."""
    plan = _plan(40)
    assert plan.chosen.strategy.switch_after is None
    samples = [s(1.0 + 0.25 * i, 1, 1000 - 7.5 * i, bw_mib_s=30) for i in range(6)]
    d = decide(samples, AUTO, 2.25, plan)
    assert d.action is Action.SWITCH_TO_POSTCOPY
    assert d.reason.startswith("re-planned (link 30.0 MiB/s measured, not 100.0)")


def test_auto_replans_when_the_guest_turns_hot_after_the_first_pass() -> None:
    plan = _plan(1)
    samples = [s(1.0, 1, 1000), s(11.0, 2, 900, dirty_mib_s=95)]
    d = decide(samples, AUTO, 11.0, plan)
    assert d.action is Action.SWITCH_TO_POSTCOPY
    assert "dirty rate rose to 95.0 MiB/s from 1.0" in d.reason


def _cold_hot_plan() -> Plan:
    """64 MiB/s of distinct pages measured on a 100 MiB/s link: post-copy at once (from
    the measurement alone, a large set written at 64 MiB/s)."""
    plan = _plan(64)
    assert plan.chosen.strategy.switch_after == 0
    return plan


def test_auto_waits_for_write_faults_to_settle_before_post_copy_at_once() -> None:
    plan = _cold_hot_plan()
    samples = [s(1.0, 1, 1000), s(1.25, 1, 975)]
    burst = NewPages(64 * MIB, 40 * MIB, 0.5, FAULT_SETTLE_S - 0.25)
    d = decide(samples, AUTO, 1.25, plan, burst)
    assert d.action is Action.CONTINUE and d.rule == "plan-faults"
    assert f"once KVM's write faults have run {FAULT_SETTLE_S:.2f} s (0.50 s so far)" in d.reason
    # settled, new pages as fast as measured: post-copy at once, as planned
    linear = NewPages(64 * MIB, 64 * MIB, 0.5, FAULT_SETTLE_S)
    assert decide(samples, AUTO, 1.25, plan, linear).action is Action.SWITCH_TO_POSTCOPY
    # a hot set as big as measured would change nothing (2000 MiB/s: all RAM): no waiting
    assert decide(samples, AUTO, 1.25, _plan(2000), burst).action is Action.SWITCH_TO_POSTCOPY
    # before the job has been counted twice: wait too
    assert decide(samples, AUTO, 1.25, plan, NewPages(0, 0.0, 0.0, 0.0)).rule == "plan-faults"
    # settled, but the faults missed what the measurement saw (Intel PML): not trusted
    blind = NewPages(1 * MIB, 0.0, 0.5, FAULT_SETTLE_S)
    assert decide(samples, AUTO, 1.25, plan, blind).action is Action.SWITCH_TO_POSTCOPY
    # no faults at all (TCG): as before
    assert decide(samples, AUTO, 1.25, plan).action is Action.SWITCH_TO_POSTCOPY


def test_auto_keeps_pass_1_when_write_faults_show_a_hot_set() -> None:
    """Settled, and the guest dirties no new pages while it dirties 64 MiB/s: a hot set.
    Pass 1 goes on (it sends the cold memory once), post-copy pulls the set after it."""
    plan = _cold_hot_plan()
    samples = [s(1.0 + 0.25 * i, 1, 1000 - 25 * i) for i in range(4)]
    saturated = NewPages(64 * MIB, 0.0, 0.5, FAULT_SETTLE_S)
    d = decide(samples, AUTO, 1.75, plan, saturated)
    assert d.action is Action.CONTINUE and d.rule == "replanned", d.reason
    assert d.reason.startswith("re-planned (new dirty pages at 0.0 MiB/s in pass 1 (KVM write")
    assert "postcopy-after-1" in d.reason and "first pass over RAM in progress" in d.reason
    ended = [*samples, s(11.0, 2, 64, dirty_mib_s=6)]
    d = decide(ended, AUTO, 11.0, plan, None)  # pass 1 over: the engine reads no faults
    assert d.action is Action.SWITCH_TO_POSTCOPY and "a hot set of 64 MiB" in d.reason


def test_auto_switches_in_pass_1_when_write_faults_show_the_guest_turned_hot() -> None:
    plan = _plan(1)
    samples = [s(1.0 + 0.25 * i, 1, 1000 - 25 * i) for i in range(8)]
    assert decide(samples, AUTO, 2.75, plan, NewPages(1 * MIB, 1 * MIB, 0.5, 1.5)).action is (
        Action.CONTINUE
    )
    d = decide(samples, AUTO, 2.75, plan, NewPages(80 * MIB, 135 * MIB, 0.5, 1.5))
    assert d.action is Action.SWITCH_TO_POSTCOPY, d.reason
    assert d.reason.startswith(
        "re-planned (new dirty pages at 135.0 MiB/s (KVM write faults), not 1.0)"
    )


def test_transfer_rate_needs_a_second_of_precopy() -> None:
    assert transfer_rate([s(1.0, 1, 1000), s(1.5, 1, 950)]) is None
    rate = transfer_rate([s(1.0, 1, 1000), s(1.5, 1, 950), s(3.0, 1, 800)])
    assert rate == pytest.approx(100 * MIB)
    assert transfer_rate([s(1.0, 1, 1000, postcopy=True), s(3.0, 1, 800, postcopy=True)]) is None


def test_auto_switches_when_pass_one_reveals_a_hot_set() -> None:
    """Measured 40 MiB/s (distinct pages in 1 s) on a 100 MiB/s link: pre-copy converges,
    says the plan. Pass 1 (10 s) left only 40 MiB dirty, not 400: the guest rewrites a
    40 MiB hot set, which every pass finds dirty again, and 40 MiB never fits the 30 MiB
    the downtime limit allows."""
    plan = _plan(40)
    assert plan.chosen.strategy.switch_after is None
    samples = [s(1.0 + i, 1, 1000 - 100 * i, total_mib=1000) for i in range(10)]
    samples.append(s(11.0, 2, 40, dirty_mib_s=4, total_mib=1000))
    assert first_pass(samples) == (40 * MIB, 10.0)
    d = decide(samples, AUTO, 11.0, plan)
    assert d.action is Action.SWITCH_TO_POSTCOPY, d.reason
    assert "a hot set of 40 MiB" in d.reason and "not 400" in d.reason


def test_a_saturated_but_slow_working_set_is_no_hot_set() -> None:
    """32 MiB/s measured over a 64 MiB working set: saturated within pass 1, not within a
    second, so short passes dirty less and pre-copy may go on."""
    plan = _plan(32)
    refined = refine(plan, transfer_bytes_s=None, dirty_bytes_s=None, pass1=(64 * MIB, 10.0))
    assert refined.drift == "pass 1 (10.0 s) left 64 MiB dirty, not 320: a working set of 64 MiB"
    assert refined.chosen.strategy is Strategy.PRECOPY  # 64 -> 20 MiB: converges


def test_resume_back_off_doubles_up_to_its_cap() -> None:
    """The engine waits 1, 2, 4 ... 30 s between attempts to resume a paused post-copy."""
    delays = [resume_backoff_s(n, 1.0, 30.0) for n in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert resume_backoff_s(10_000, 1.0, 30.0) == 30  # no overflow however long it lasts


def test_a_stalled_post_copy_is_paused_never_aborted() -> None:
    settings = MigrationSettings.resolve(post_copy=True, postcopy_stall_s=3)
    moving = [s(10 + i, 2, 100 - 10 * i, postcopy=True) for i in range(5)]
    assert postcopy_stall(moving, settings) is None
    stuck = [s(10 + 0.5 * i, 2, 60, postcopy=True) for i in range(6)]  # 2.5 s without bytes
    assert postcopy_stall(stuck, settings) is None
    stuck.append(s(13.0, 2, 60, postcopy=True))  # 3.0 s
    d = postcopy_stall(stuck, settings)
    assert d is not None and d.action is Action.PAUSE_POSTCOPY and d.rule == "postcopy-stalled"
    assert d.reason.startswith("post-copy moved no bytes for 3.0 s (post-copy stall timeout 3 s)")


def test_post_copy_pauses_after_2_s_without_bytes_by_default() -> None:
    """Its own short timeout: the pre-copy stall timeout (20 s) does not delay it."""
    settings = MigrationSettings.resolve(post_copy=True)
    assert settings.stall_timeout_s == 20
    stuck = [s(10 + 0.25 * i, 2, 60, postcopy=True) for i in range(8)]  # 1.75 s
    assert postcopy_stall(stuck, settings) is None
    stuck.append(s(12.0, 2, 60, postcopy=True))
    assert postcopy_stall(stuck, settings) is not None


def _dom(state: DomainState, reason: str = "") -> DomainInfo:
    return DomainInfo("vm", "u", state, reason, memory_mib=128, vcpus=1, persistent=True)


RUNNING, PAUSED, SHUTOFF = DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTOFF


@pytest.mark.parametrize(
    ("src", "dst", "abort", "by_policy", "phase", "needle"),
    [
        (_dom(RUNNING, "postcopy"), _dom(RUNNING), None, False, Phase.RUNNING_POSTCOPY, "running"),
        (None, _dom(RUNNING), None, False, Phase.COMPLETED, ""),
        (_dom(SHUTOFF), _dom(RUNNING), None, False, Phase.COMPLETED, ""),
        (None, _dom(RUNNING, "postcopy-failed"), None, False, Phase.POSTCOPY_PAUSED, "settle"),
        (_dom(PAUSED, "postcopy-failed"), _dom(RUNNING, "postcopy-failed"), None, False,
         Phase.POSTCOPY_PAUSED, "broke"),
        (_dom(PAUSED, "migration"), _dom(RUNNING), None, False, Phase.COMPLETED, ""),
        (_dom(RUNNING), None, "operator said so", False, Phase.CANCELLED, "operator said so"),
        (_dom(RUNNING), None, "timeout", True, Phase.FAILED, "timeout"),
        (_dom(RUNNING), None, None, False, Phase.FAILED, "without moving the VM"),
        (None, None, None, False, Phase.ERROR, "absent on the source and absent"),
        (_dom(PAUSED, "user"), _dom(PAUSED, "user"), None, False, Phase.ERROR, "operator must"),
    ],
)  # fmt: skip
def test_where_the_vm_runs_decides_the_outcome(
    src: DomainInfo | None,
    dst: DomainInfo | None,
    abort: str | None,
    by_policy: bool,
    phase: Phase,
    needle: str,
) -> None:
    got, why = outcome_from_hosts("vm", src, dst, abort_reason=abort, policy_aborted=by_policy)
    assert got is phase, why
    assert (why is None) if not needle else (why is not None and needle in why), why
