"""The drain planner: a pure function, checked case by case."""

from __future__ import annotations

import math
from typing import Any

import pytest

from orbit.migration.model import MIB
from orbit.scheduler.drain import DrainPlan, DrainVM, Target, _makespan, plan_drain

LINK = 100 * MIB  # bytes/s
TIMEOUT_S = 300.0


def _vm(name: str, mib: int, dirty_mib_s: float | None = 0.0) -> DrainVM:
    rate = None if dirty_mib_s is None else dirty_mib_s * MIB
    return DrainVM(f"id-{name}", name, mib, rate)


def _plan(vms: list[DrainVM], targets: list[Target] | None = None, **kw: Any) -> DrainPlan:
    args: dict[str, Any] = {
        "post_copy": True,
        "max_parallel": 2,
        "host_limit": 2,
        "timeout_s": TIMEOUT_S,
        "downtime_limit_ms": 300,
    }
    args.update(kw)
    targets = targets or [Target("h2", 4096, LINK), Target("h3", 4096, LINK)]
    return plan_drain(vms, targets, **args)


def test_quiet_vms_go_by_pre_copy_and_spread_over_the_targets() -> None:
    plan = plan_drain(
        [_vm("a", 512), _vm("b", 256), _vm("c", 256)],
        [Target("h2", 1000, LINK), Target("h3", 600, LINK)],
        post_copy=True, max_parallel=2, host_limit=2, timeout_s=TIMEOUT_S,
        downtime_limit_ms=300,
    )  # fmt: skip
    where = {m.name: m.dest for m in plan.moves}
    # worst fit: a (512) to h2 (1000 -> 488 left), b to h3 (600 -> 344), c to h2 (488 > 344)
    assert where == {"a": "h2", "b": "h3", "c": "h2"}
    assert all(m.strategy == "precopy" and not m.at_risk for m in plan.moves)
    assert all(m.policy == "auto" for m in plan.moves)
    assert plan.moves[0].name == "a"  # the longest first
    assert plan.parallel == 2


def test_a_hot_vm_is_planned_with_post_copy_when_permitted() -> None:
    # it rewrites 80 MiB/s; each of 2 parallel migrations gets 50 MiB/s: never converges
    plan = _plan([_vm("hot", 256, 80.0), _vm("quiet", 256, 0.0)])
    hot = next(m for m in plan.moves if m.name == "hot")
    assert hot.strategy.startswith("postcopy-after-") and not hot.at_risk
    # planned for post-copy after N: its migration runs policy postcopy after N, measured once
    assert hot.policy == "postcopy" and hot.post_copy_after == int(hot.strategy[-1])
    assert hot.predicted_postcopy_s > 0 and "50.0 MiB/s (1/2 of the link to" in hot.reason


def test_without_post_copy_a_hot_vm_is_at_risk_and_goes_last() -> None:
    # it dirties faster than the whole link sends: pre-copy never converges
    plan = _plan([_vm("hot", 128, 150.0), _vm("q1", 256), _vm("q2", 128)], post_copy=False)
    names = [m.name for m in plan.moves]
    assert names[-1] == "hot"
    hot = plan.moves[-1]
    assert hot.at_risk and hot.policy == "precopy" and hot.predicted_s == TIMEOUT_S
    assert "will not converge and stays on the host" in hot.reason
    assert plan.predicted_s >= TIMEOUT_S


def test_a_vm_that_fits_nowhere_is_reported_not_dropped() -> None:
    plan = plan_drain(
        [_vm("big", 2048), _vm("small", 128)],
        [Target("h2", 1024, LINK)],
        post_copy=True, max_parallel=1, host_limit=1, timeout_s=TIMEOUT_S,
        downtime_limit_ms=300,
    )  # fmt: skip
    assert [(m.name, m.dest) for m in plan.moves] == [("small", "h2"), ("big", None)]
    assert plan.moves[-1].reason == "no target has 2048 MiB free (h2 1024 MiB)"


def test_the_planner_chooses_how_many_at_once() -> None:
    # without post-copy, a guest dirtying 80 MiB/s converges on the whole 100 MiB/s link but
    # not on half of it: one at a time is sooner than two
    plan = _plan([_vm("busy", 256, 80.0), _vm("q", 128)], post_copy=False, max_parallel=2)
    assert plan.parallel == 1 and not any(m.at_risk for m in plan.moves)
    assert "1 at a time (of up to 2)" in plan.notes[-1]
    # quiet guests: two at a time overlap each migration's fixed costs
    plan = _plan([_vm("a", 256), _vm("b", 256)], post_copy=False, max_parallel=2)
    assert plan.parallel == 2 and "2 at a time (of up to 2)" in plan.notes[-1]


def test_parallelism_is_capped_by_the_hosts_limit_and_the_vm_count() -> None:
    plan = _plan([_vm("a", 16), _vm("b", 16), _vm("c", 16)], max_parallel=4, host_limit=2)
    assert plan.parallel == 2
    assert "max_outgoing_per_host" in plan.notes[0]
    assert _plan([_vm("a", 128)], max_parallel=4, host_limit=8).parallel == 1


def test_an_unmeasured_dirty_rate_counts_as_zero_and_says_so() -> None:
    plan = _plan([_vm("x", 128, None)])
    move = plan.moves[0]
    assert move.strategy == "precopy" and "dirty rate not measured" in move.reason


@pytest.mark.parametrize(
    ("durations", "lanes", "makespan"),
    [
        ([10.0, 8.0, 5.0, 3.0], 1, 26.0),
        ([10.0, 8.0, 5.0, 3.0], 2, 13.0),  # 10 | 8 + 5 -> 13, then 3 on the 10-lane: 13
        ([10.0, 8.0, 5.0, 3.0], 4, 10.0),
        ([], 2, 0.0),
    ],
)
def test_makespan_is_list_scheduling(durations: list[float], lanes: int, makespan: float) -> None:
    assert math.isclose(_makespan(durations, lanes), makespan)


def test_the_deadline_is_checked_against_the_prediction() -> None:
    vms = [_vm("a", 1024), _vm("b", 1024)]
    ok = _plan(vms, deadline_s=600.0)
    assert ok.within_deadline is True and not any("deadline" in n for n in ok.notes)
    late = _plan(vms, deadline_s=1.0)
    assert late.within_deadline is False
    assert "exceeds the deadline of 1 s" in late.notes[-1]
    assert _plan(vms).within_deadline is None
