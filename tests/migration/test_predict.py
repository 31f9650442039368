"""The pure prediction model: table tests with numbers worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from orbit.migration.model import MIB
from orbit.migration.predict import (
    FAULT_SETTLE_S,
    PAGE_BYTES,
    SATURATED,
    SWITCH_DOWNTIME_MS,
    Facts,
    NewPages,
    Plan,
    Prediction,
    Strategy,
    choose,
    guest_bytes,
    make_plan,
    new_pages,
    predict,
    predict_all,
    refine,
    with_faults,
)

LINK = 50 * MIB  # bytes/s: 512 MiB take 10.24 s
RAM = 512 * MIB


def facts(dirty_mib_s: float, wss_mib: int | None = None, **kw: Any) -> Facts:
    return Facts(
        ram_bytes=RAM,
        dirty_rate_bytes_s=dirty_mib_s * MIB,
        bandwidth_bytes_s=LINK,
        downtime_limit_ms=300,
        wss_bytes=None if wss_mib is None else wss_mib * MIB,
        **kw,
    )


def test_idle_guest_converges_after_one_pass() -> None:
    p = predict(facts(0), Strategy.PRECOPY)
    assert p.finishes and p.passes == 1
    assert p.total_s == pytest.approx(10.24)
    assert p.postcopy_s == 0 and p.downtime_ms == 0 and p.bytes_sent == RAM


def test_moderate_guest_pass_by_pass() -> None:
    """64 MiB working set dirtied at 25 MiB/s: each pass leaves half of what it sent."""
    p = predict(facts(25, wss_mib=64), Strategy.PRECOPY)
    # pass 1: 512 MiB, 10.24 s; dirtied min(64, 256) = 64 MiB; then 32, 16 (0.32 s > 0.3 s
    # limit), 8 MiB (0.16 s): stop and copy 8 MiB.
    assert p.finishes and p.passes == 4
    assert p.bytes_sent == (512 + 64 + 32 + 16 + 8) * MIB
    assert p.total_s == pytest.approx((512 + 64 + 32 + 16 + 8) / 50)
    assert p.downtime_ms == 160 and p.postcopy_s == 0


def test_hot_guest_never_converges_in_precopy() -> None:
    p = predict(facts(3800, wss_mib=480), Strategy.PRECOPY)
    assert not p.finishes and math.isinf(p.total_s)
    assert p.summary() == "precopy: does not converge"


@pytest.mark.parametrize(
    ("strategy", "total_mib", "postcopy_mib", "passes"),
    [
        (Strategy.POSTCOPY_AFTER_0, 512, 512, 0),  # everything is pulled in post-copy
        (Strategy.POSTCOPY_AFTER_1, 512 + 480, 480, 1),  # pass 1, then the working set
        (Strategy.POSTCOPY_AFTER_2, 512 + 480 + 480, 480, 2),  # a pass that gains nothing
    ],
)
def test_hot_guest_postcopy_after_n(
    strategy: Strategy, total_mib: int, postcopy_mib: int, passes: int
) -> None:
    p = predict(facts(3800, wss_mib=480), strategy)
    assert p.finishes and p.passes == passes
    assert p.total_s == pytest.approx(total_mib / 50)
    assert p.postcopy_s == pytest.approx(postcopy_mib / 50)
    assert p.bytes_sent == total_mib * MIB and p.downtime_ms == SWITCH_DOWNTIME_MS


def test_postcopy_strategy_that_converges_first_is_precopy() -> None:
    p = predict(facts(1, wss_mib=8), Strategy.POSTCOPY_AFTER_2)
    assert p.finishes and p.postcopy_s == 0 and p.passes == 1


def test_first_pass_sends_only_written_memory() -> None:
    p = predict(facts(0, first_pass_bytes=8 * MIB), Strategy.PRECOPY)
    assert p.total_s == pytest.approx(8 / 50) and p.bytes_sent == 8 * MIB


@pytest.mark.parametrize(
    ("dirty", "wss", "weight", "timeout_s", "chosen"),
    [
        (0, None, 1.0, 300, Strategy.PRECOPY),  # idle: nothing to gain from post-copy
        (3800, 480, 1.0, 300, Strategy.POSTCOPY_AFTER_0),  # hot: at once (score 20.5)
        (25, 64, 1.0, 300, Strategy.PRECOPY),  # 12.64 s against 11.52 + 1.28 s (after 1)
        (25, 64, 0.5, 300, Strategy.POSTCOPY_AFTER_1),  # 11.52 + 0.64 < 12.64
        (25, 64, 0.0, 300, Strategy.POSTCOPY_AFTER_0),  # fastest to finish: 10.24 s
        (25, 64, 3.0, 12.0, Strategy.POSTCOPY_AFTER_1),  # pre-copy would miss the timeout
        (3800, 480, 1.0, 5.0, Strategy.POSTCOPY_AFTER_0),  # none fits: the soonest
    ],
)
def test_choose(
    dirty: float, wss: int | None, weight: float, timeout_s: float, chosen: Strategy
) -> None:
    best = choose(predict_all(facts(dirty, wss)), timeout_s=timeout_s, postcopy_weight=weight)
    assert best.strategy is chosen


def test_choose_needs_predictions_and_facts_are_checked() -> None:
    with pytest.raises(ValueError, match="nothing to choose"):
        choose([], timeout_s=10)
    with pytest.raises(ValueError, match="out of range"):
        Facts(ram_bytes=RAM, dirty_rate_bytes_s=1, bandwidth_bytes_s=0, downtime_limit_ms=300)


def test_summary_has_numbers_with_units() -> None:
    p: Prediction = predict(facts(3800, wss_mib=480), Strategy.POSTCOPY_AFTER_1)
    assert p.summary() == ("postcopy-after-1: 19.8 s (9.6 s in post-copy), 992 MiB, downtime 10 ms")


# -- the plan and its refinement ---------------------------------------------------------


def plan_for(dirty_mib_s: float, link_mib_s: float = 50, wss_mib: int | None = None) -> Plan:
    f = Facts(
        ram_bytes=RAM,
        dirty_rate_bytes_s=dirty_mib_s * MIB,
        bandwidth_bytes_s=link_mib_s * MIB,
        downtime_limit_ms=300,
        wss_bytes=None if wss_mib is None else wss_mib * MIB,
    )
    return make_plan(f, link_source="test", dirty_rate_mode="dirty-bitmap", timeout_s=300)


def test_plan_records_its_choice_and_the_alternatives() -> None:
    plan = plan_for(3800)
    assert plan.chosen.strategy is Strategy.POSTCOPY_AFTER_0
    assert len(plan.predictions) == len(Strategy)
    reason = plan.reason()
    assert reason.startswith("plan postcopy-after-0: 10.2 s (10.2 s in post-copy)")
    assert "dirty rate 3800.0 MiB/s (dirty-bitmap)" in reason and "link 50.0 MiB/s (test)" in reason
    assert "precopy: does not converge" in reason
    d = plan.to_dict()
    assert d["strategy"] == "postcopy-after-0" and d["total_s"] == pytest.approx(10.24)
    assert d["score"] == pytest.approx(20.48) and d["others"]["precopy"] is None  # type: ignore[index]


def test_refine_keeps_the_plan_when_rates_agree() -> None:
    plan = plan_for(2)
    same = refine(plan, transfer_bytes_s=55 * MIB, dirty_bytes_s=2.4 * MIB)  # within 25 %
    assert same.chosen is plan.chosen and same.drift == ""
    lower = refine(plan_for(3800), transfer_bytes_s=None, dirty_bytes_s=1 * MIB)
    assert lower.drift == "" and lower.chosen.strategy is Strategy.POSTCOPY_AFTER_0


def test_refine_replans_on_a_slower_link() -> None:
    """40 MiB/s dirtying: pre-copy converges on a 1 GiB/s link, not on a 35 MiB/s one."""
    plan = plan_for(40, link_mib_s=1024)
    assert plan.chosen.strategy is Strategy.PRECOPY
    slow = refine(plan, transfer_bytes_s=35 * MIB, dirty_bytes_s=None)
    assert slow.chosen.strategy is not Strategy.PRECOPY
    assert slow.drift == "link 35.0 MiB/s measured, not 1024.0"


def test_refine_replans_when_the_guest_turns_hot() -> None:
    plan = plan_for(1)
    assert plan.chosen.strategy is Strategy.PRECOPY
    hot = refine(plan, transfer_bytes_s=None, dirty_bytes_s=60 * MIB)
    assert hot.chosen.strategy.switch_after is not None
    assert hot.drift == "dirty rate rose to 60.0 MiB/s from 1.0"


def test_start_and_finish_count_in_the_total_and_finish_in_post_copy() -> None:
    f = facts(3800, wss_mib=480, start_s=0.5, finish_s=1.5)
    pre = predict(facts(0, start_s=0.5, finish_s=1.5), Strategy.PRECOPY)
    assert pre.total_s == pytest.approx(0.5 + 10.24 + 1.5) and pre.postcopy_s == 0
    at_once = predict(f, Strategy.POSTCOPY_AFTER_0)
    assert at_once.total_s == pytest.approx(0.5 + 10.24 + 1.5)
    assert at_once.postcopy_s == pytest.approx(10.24 + 1.5)
    after1 = predict(f, Strategy.POSTCOPY_AFTER_1)
    assert after1.postcopy_s == pytest.approx(480 / 50 + 1.5)


def test_a_hot_set_is_dirty_again_after_every_pass() -> None:
    """16 MiB rewritten faster than any pass: 16 MiB never fits the 15 MiB that 300 ms at
    50 MiB/s allow, so pre-copy never converges; without hot_set the model would expect
    the short passes to dirty less and converge."""
    hot = Facts(RAM, 16 * MIB, LINK, 300, wss_bytes=16 * MIB, hot_set=True)
    assert not predict(hot, Strategy.PRECOPY).finishes
    assert predict(replace(hot, hot_set=False), Strategy.PRECOPY).finishes
    after1 = predict(hot, Strategy.POSTCOPY_AFTER_1)
    assert after1.postcopy_s == pytest.approx(16 / 50)


@pytest.mark.parametrize(("resident_mib", "written_mib"), [(30, 0), (40, 0), (100, 60), (600, 512)])
def test_guest_bytes_is_resident_memory_less_qemus_own(resident_mib: int, written_mib: int) -> None:
    assert guest_bytes(resident_mib * MIB, RAM) == written_mib * MIB


def test_a_plan_made_during_pass_1_predicts_from_what_it_has_left() -> None:
    """Planned 2 s in: pass 1 ran 1.5 s and has 400 MiB left (8 s at 50 MiB/s), the guest
    dirties 10 MiB/s of a large set. Pre-copy's pass 2 sends what the whole of pass 1
    (9.5 s) dirtied: 95 MiB; post-copy at once pulls the 400 MiB left and the 15 MiB that
    the guest dirtied again of what pass 1 sent."""
    f = facts(
        10,
        first_pass_bytes=400 * MIB,
        first_pass_elapsed_s=1.5,
        first_pass_sent_bytes=75 * MIB,
        start_s=2.0,
    )
    pre = predict(f, Strategy.PRECOPY)
    # passes: 400 MiB (8 s) -> 95 MiB (1.9 s) -> 19 MiB (0.38 s) -> 3.8 MiB fits 300 ms
    assert pre.finishes and pre.passes == 3
    assert pre.total_s == pytest.approx(2.0 + 8 + 1.9 + 0.38 + 0.076)
    assert pre.bytes_sent == round((400 + 95 + 19 + 3.8) * MIB)
    now = predict(f, Strategy.POSTCOPY_AFTER_0)
    assert now.bytes_sent == 415 * MIB
    assert now.total_s == pytest.approx(2.0 + 415 / 50) and now.postcopy_s == pytest.approx(8.3)
    # never more again than pass 1 has sent; planned before it ran, no page twice
    assert predict(
        replace(f, first_pass_sent_bytes=5 * MIB), Strategy.POSTCOPY_AFTER_0
    ).bytes_sent == (405 * MIB)
    assert predict(
        replace(f, first_pass_elapsed_s=0.0, first_pass_sent_bytes=0), Strategy.POSTCOPY_AFTER_0
    ).bytes_sent == (400 * MIB)


def test_the_previous_migrations_first_pass_reveals_a_hot_set() -> None:
    """32 MiB/s of distinct pages in 1 s could be a large set written at 32 MiB/s (then
    post-copy at once) or a 32 MiB set rewritten many times a second. Pass 1 of the guest's
    last migration left 32 MiB dirty after 10.5 s, not 336: a hot set, so post-copy after
    one pass (only the hot set is left to pull)."""
    f = Facts(RAM, 32 * MIB, LINK, 300, first_pass_bytes=480 * MIB, start_s=0.5, finish_s=1.5)
    blind = make_plan(f, link_source="t", dirty_rate_mode="dirty-bitmap", timeout_s=300)
    assert blind.chosen.strategy is Strategy.POSTCOPY_AFTER_0 and blind.prior == ""
    told = make_plan(
        f,
        link_source="t",
        dirty_rate_mode="dirty-bitmap",
        timeout_s=300,
        previous_pass1=(32 * MIB, 10.5),
    )
    assert told.chosen.strategy is Strategy.POSTCOPY_AFTER_1, told.reason()
    assert told.prior == "pass 1 (10.5 s) left 32 MiB dirty, not 336: a hot set of 32 MiB"
    assert "its last migration: pass 1 (10.5 s)" in told.reason()
    # a pass that dirtied what the rate predicts says nothing new
    same = make_plan(
        f,
        link_source="t",
        dirty_rate_mode="dirty-bitmap",
        timeout_s=300,
        previous_pass1=(320 * MIB, 10.0),
    )
    assert same.prior == "" and same.chosen == blind.chosen


def pages(mib: float) -> int:
    return round(mib * MIB / PAGE_BYTES)


def test_new_pages_are_a_rate_over_the_last_half_second() -> None:
    """Counts as the engine reads them, 4 a second: a burst of 64 MiB after the
    protections, then none (the lab's cold+hot guest)."""
    counts = [(0.49, pages(44)), (0.81, pages(64)), (1.08, pages(64)), (1.35, pages(64))]
    seen = new_pages(0, counts)
    assert seen is not None and seen.since_measure_bytes == 64 * MIB
    assert seen.rate_bytes_s == 0 and seen.window_s == pytest.approx(0.54)
    assert seen.seen_s == pytest.approx(0.86) and seen.settled
    early = new_pages(0, counts[:3])
    assert early is not None and early.window_s == pytest.approx(0.59)
    assert early.rate_bytes_s == pytest.approx(20 * MIB / 0.59) and not early.settled
    one = new_pages(0, counts[:1])  # one count is no rate yet
    assert one is not None and one.rate_bytes_s == 0 and one.window_s == 0 and one.seen_s == 0
    assert new_pages(0, []) == NewPages(0, 0.0, 0.0, 0.0)
    steady = new_pages(pages(10), [(0.5 + 0.25 * i, pages(10 + 8 * i)) for i in range(5)])
    assert steady is not None and steady.rate_bytes_s == pytest.approx(32 * MIB)
    assert steady.since_measure_bytes == 32 * MIB


def test_a_late_moment_of_new_pages_keeps_the_hot_set_the_settled_faults_showed() -> None:
    """The lab's hot set (64 MiB/s measured): the burst after the protections, then no new
    pages for 4 s, then 36 MiB of them in half a second, 5 s into a long pass 1. The last
    window alone reads 48-72 MiB/s, not saturated; the settled period (0.81 s to 5.31 s)
    reads 8 MiB/s: the hot set stands and pass 1 is kept."""
    counts = [(0.49, pages(44)), (0.81, pages(64))]
    counts += [(0.81 + 0.25 * i, pages(64)) for i in range(1, 17)]  # to 4.81 s
    counts += [(5.06, pages(82)), (5.31, pages(100))]
    seen = new_pages(0, counts)
    assert seen is not None and seen.settled
    assert seen.rate_bytes_s > SATURATED * 64 * MIB  # 48-72 MiB/s, as the window falls
    assert seen.settled_rate_bytes_s == pytest.approx(36 * MIB / 4.5)
    assert seen.saturation_rate_bytes_s == seen.settled_rate_bytes_s
    refined = refine(_cold_hot_plan(), transfer_bytes_s=None, dirty_bytes_s=None, faults=seen)
    assert refined.chosen.strategy is Strategy.POSTCOPY_AFTER_1, refined.drift
    assert refined.drift.startswith("new dirty pages at 8.0 MiB/s in pass 1")
    # a guest whose new pages keep coming as fast as measured is no hot set, however long
    linear = [(0.5 + 0.25 * i, pages(16 * i)) for i in range(20)]
    steady = new_pages(0, linear)
    assert steady is not None and steady.saturation_rate_bytes_s == pytest.approx(64 * MIB)
    plan = _cold_hot_plan()
    assert refine(plan, transfer_bytes_s=None, dirty_bytes_s=None, faults=steady).drift == ""
    # a burst longer than the settling time: the last window sees the set saturate first
    long_burst = [(0.25 * i, pages(min(80, 20 * i))) for i in range(1, 9)]  # flat from 1 s
    late = new_pages(0, long_burst)
    assert late is not None and late.rate_bytes_s == 0 and late.settled_rate_bytes_s
    assert late.saturation_rate_bytes_s == 0


def test_counts_that_go_down_say_nothing() -> None:
    """A vCPU unplugged, or a reply that missed one: the drop must not read as a guest
    that stopped dirtying new pages (a hot set)."""
    dropped = [(0.5, 20000), (0.75, 20500), (1.0, 15000), (1.25, 15000), (1.5, 15000)]
    assert new_pages(10000, dropped) is None
    assert new_pages(30000, [(0.5, 20000)]) is None  # below the count before the measurement


def test_a_guest_measured_at_0_mib_s_trusts_no_stray_fault() -> None:
    """libvirt gives whole MiB/s: a guest under 1 MiB/s measures 0, and KVM counts other
    faults too (first touches). A few of them are neither trusted nor a turn."""
    quiet = plan_for(0)
    stray = NewPages(20 * PAGE_BYTES, 0.1 * MIB, 0.5, 0.8)
    assert not stray.trusted(quiet.facts)
    assert refine(quiet, transfer_bytes_s=None, dirty_bytes_s=None, faults=stray).drift == ""
    # trusted, but 0.9 MiB/s of new pages is no turn either: it needs 1 MiB/s over 1.25 x
    slow = NewPages(8 * MIB, 0.9 * MIB, 0.5, 0.8)
    assert slow.trusted(quiet.facts)
    assert refine(quiet, transfer_bytes_s=None, dirty_bytes_s=None, faults=slow).drift == ""
    hot = NewPages(60 * MIB, 50 * MIB, 0.5, 0.8)
    turned = refine(quiet, transfer_bytes_s=None, dirty_bytes_s=None, faults=hot)
    assert turned.drift == "new dirty pages at 50.0 MiB/s (KVM write faults), not 0.0"


def _cold_hot_plan() -> Plan:
    """Plan made 1.2 s in: 64 MiB/s of distinct pages measured, 440 MiB of pass 1 left."""
    f = Facts(
        RAM,
        64 * MIB,
        LINK,
        300,
        first_pass_bytes=440 * MIB,
        first_pass_elapsed_s=0.8,
        first_pass_sent_bytes=40 * MIB,
        start_s=1.2,
        finish_s=0.4,
    )
    return make_plan(f, link_source="t", dirty_rate_mode="dirty-bitmap", timeout_s=300)


@pytest.mark.parametrize(
    ("seen", "strategy", "drift"),
    [
        # settled, and no new pages while it dirties 64 MiB/s: a hot set, pull it after pass 1
        (
            NewPages(64 * MIB, 0.0, 0.5, FAULT_SETTLE_S),
            Strategy.POSTCOPY_AFTER_1,
            "new dirty pages at 0.0 MiB/s in pass 1 (KVM write faults) while it dirties "
            "64.0 MiB/s: a hot set of about 64 MiB",
        ),
        # new pages as fast as measured: a large set, post-copy at once stands
        (NewPages(64 * MIB, 60 * MIB, 0.5, FAULT_SETTLE_S), Strategy.POSTCOPY_AFTER_0, ""),
        # not settled yet: the burst after the protections may still be coming
        (NewPages(64 * MIB, 0.0, 0.5, FAULT_SETTLE_S - 0.1), Strategy.POSTCOPY_AFTER_0, ""),
        # a window too short for a rate
        (NewPages(64 * MIB, 0.0, 0.3, FAULT_SETTLE_S), Strategy.POSTCOPY_AFTER_0, ""),
        # faults that missed what the measurement saw (Intel PML): not trusted
        (NewPages(16 * MIB, 0.0, 0.5, FAULT_SETTLE_S), Strategy.POSTCOPY_AFTER_0, ""),
    ],
)
def test_write_faults_reveal_a_hot_set_during_pass_1(
    seen: NewPages, strategy: Strategy, drift: str
) -> None:
    plan = _cold_hot_plan()
    assert plan.chosen.strategy is Strategy.POSTCOPY_AFTER_0
    refined = refine(plan, transfer_bytes_s=None, dirty_bytes_s=None, faults=seen)
    assert refined.chosen.strategy is strategy, refined.chosen.summary()
    assert refined.drift == drift


def test_write_faults_show_a_guest_turning_hot_during_pass_1() -> None:
    """Measured quiet (1 MiB/s, pre-copy planned); then 135 MiB/s of new pages."""
    plan = plan_for(1)
    assert plan.chosen.strategy is Strategy.PRECOPY
    hot = NewPages(200 * MIB, 135 * MIB, 0.5, 0.5)  # not settled: a rise needs no settling
    refined = refine(plan, transfer_bytes_s=None, dirty_bytes_s=None, faults=hot)
    assert refined.chosen.strategy is Strategy.POSTCOPY_AFTER_0
    assert refined.drift == "new dirty pages at 135.0 MiB/s (KVM write faults), not 1.0"
    # once pass 1 is over its end says more: faults are not asked then
    over = refine(
        plan, transfer_bytes_s=None, dirty_bytes_s=None, pass1=(5 * MIB, 10.0), faults=hot
    )
    assert "write faults" not in over.drift and over.chosen.strategy is Strategy.PRECOPY


def test_faults_counted_beside_a_measurement_give_the_facts_a_hot_set() -> None:
    f = facts(32)
    saturated = NewPages(32 * MIB, 0.0, 0.5, FAULT_SETTLE_S)
    hot = with_faults(f, saturated)
    assert hot.wss_bytes == 32 * MIB and hot.hot_set and hot.dirty_rate_bytes_s == 32 * MIB
    assert with_faults(f, NewPages(32 * MIB, 30 * MIB, 0.5, FAULT_SETTLE_S)) == f  # linear
    assert with_faults(f, NewPages(1 * MIB, 0.0, 0.5, FAULT_SETTLE_S)) == f  # not trusted
