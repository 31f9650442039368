"""Plan the drain of a host: where each VM goes, in which order, how many at once. Pure.

Every VM on the host leaves over the same uplink, so running ``P`` migrations at once gives
each about 1/P of it: parallelism overlaps each migration's fixed costs (libvirt's set-up,
the take-over) but makes a busy guest's pre-copy converge later, or never. The plan:

1. **Parallelism**: every ``P`` from 1 to ``min(max_parallel, the host's outgoing limit,
   number of VMs)`` is planned (steps 2-5) and the soonest predicted drain wins (a tie goes
   to the smaller ``P``).
2. **Strategy per VM**, predicted with :func:`orbit.migration.predict.predict` at the
   shared rate ``link / P``: with post-copy permitted, the least score of pre-copy and
   post-copy after 0, 1, 2 passes. A VM planned for post-copy after N passes runs policy
   ``postcopy`` after N: the drain has measured it already, so its migration does not
   spend a second measuring again; one planned for pre-copy runs ``auto``, which still
   switches if the guest turns out busier. Without post-copy: pre-copy, and a VM that
   would not converge is *at risk*: it will hit the completion timeout and stay on the host.
3. **Destination**: largest VM first, each to the target with the most memory still
   available after the VMs placed before it (worst fit spreads the load); a VM that fits
   nowhere is reported with the numbers, never dropped.
4. **Order**: longest predicted migration first (the classic makespan rule: the tail is
   short), VMs at risk last so that they hold up no one.
5. **Prediction of the drain**: list scheduling of that order on ``P`` lanes; a VM at risk
   counts its completion timeout.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from orbit.migration.model import DEFAULT_POSTCOPY_WEIGHT, MIB
from orbit.migration.predict import (
    DEFAULT_FINISH_S,
    DEFAULT_START_S,
    Facts,
    Prediction,
    Strategy,
    choose,
    predict,
    predict_all,
)


@dataclass(frozen=True)
class DrainVM:
    server_id: str
    name: str
    memory_mib: int
    #: measured before the drain; None when it could not be measured (taken as 0)
    dirty_rate_bytes_s: float | None


@dataclass(frozen=True)
class Target:
    name: str
    #: free memory less what queued and running migrations to it will take
    available_mib: int
    #: the expected transfer rate from the drained host to this one
    link_bytes_s: float


@dataclass(frozen=True)
class Move:
    server_id: str
    name: str
    memory_mib: int
    #: None: no target has room for it
    dest: str | None
    #: 'postcopy' (planned for post-copy after ``post_copy_after`` passes), 'auto' (post-copy
    #: permitted, planned for pre-copy) or 'precopy'
    policy: str
    #: the predicted strategy, e.g. 'postcopy-after-1'; '' when it cannot move
    strategy: str
    predicted_s: float
    predicted_postcopy_s: float
    #: pre-copy only, and it would not converge: it will stay on the host
    at_risk: bool
    reason: str
    post_copy_after: int | None = None


@dataclass(frozen=True)
class DrainPlan:
    #: in the order they start
    moves: list[Move]
    parallel: int
    predicted_s: float
    #: None when there is no deadline
    within_deadline: bool | None
    notes: list[str] = field(default_factory=list)


def _facts(vm: DrainVM, link_bytes_s: float, downtime_limit_ms: int) -> Facts:
    return Facts(
        ram_bytes=vm.memory_mib * MIB,
        dirty_rate_bytes_s=vm.dirty_rate_bytes_s or 0.0,
        bandwidth_bytes_s=link_bytes_s,
        downtime_limit_ms=downtime_limit_ms,
        start_s=DEFAULT_START_S,
        finish_s=DEFAULT_FINISH_S,
    )


def _predicted(
    vm: DrainVM,
    share_bytes_s: float,
    *,
    post_copy: bool,
    timeout_s: float,
    downtime_limit_ms: int,
    postcopy_weight: float,
) -> Prediction:
    facts = _facts(vm, share_bytes_s, downtime_limit_ms)
    if post_copy:
        return choose(predict_all(facts), timeout_s=timeout_s, postcopy_weight=postcopy_weight)
    return predict(facts, Strategy.PRECOPY)


def _place(vms: list[DrainVM], targets: list[Target]) -> dict[str, str | None]:
    """Largest first, each to the target with the most room left (worst fit)."""
    room = {t.name: t.available_mib for t in targets}
    placed: dict[str, str | None] = {}
    for vm in sorted(vms, key=lambda v: (-v.memory_mib, v.name)):
        fits = [name for name, free in room.items() if free >= vm.memory_mib]
        if not fits:
            placed[vm.server_id] = None
            continue
        best = min(fits, key=lambda name: (-room[name], name))
        room[best] -= vm.memory_mib
        placed[vm.server_id] = best
    return placed


def _makespan(durations: list[float], lanes: int) -> float:
    """List scheduling: each duration, in order, on the lane that frees first."""
    free = [0.0] * lanes
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def _moves(
    vms: list[DrainVM],
    targets: list[Target],
    placed: dict[str, str | None],
    parallel: int,
    *,
    post_copy: bool,
    timeout_s: float,
    downtime_limit_ms: int,
    postcopy_weight: float,
) -> list[Move]:
    """Each VM's move with ``parallel`` migrations sharing the uplink, in the start order."""
    links = {t.name: t.link_bytes_s for t in targets}
    room = ", ".join(f"{t.name} {t.available_mib} MiB" for t in targets) or "no target"
    moves: list[Move] = []
    for vm in vms:
        dest = placed[vm.server_id]
        policy = "auto" if post_copy else "precopy"
        if dest is None:
            why = f"no target has {vm.memory_mib} MiB free ({room})"
            moves.append(
                Move(vm.server_id, vm.name, vm.memory_mib, None, policy, "", 0.0, 0.0, False, why)
            )
            continue
        share = links[dest] / parallel
        p = _predicted(
            vm,
            share,
            post_copy=post_copy,
            timeout_s=timeout_s,
            downtime_limit_ms=downtime_limit_ms,
            postcopy_weight=postcopy_weight,
        )
        rate = "not measured" if vm.dirty_rate_bytes_s is None else (
            f"{vm.dirty_rate_bytes_s / MIB:.1f} MiB/s")  # fmt: skip
        at_risk = not p.finishes
        reason = (
            f"{p.summary()} at {share / MIB:.1f} MiB/s (1/{parallel} of the link to {dest}), "
            f"dirty rate {rate}"
            + ("; pre-copy only: it will not converge and stays on the host" if at_risk else "")
        )
        after = p.strategy.switch_after if post_copy else None
        moves.append(
            Move(
                vm.server_id,
                vm.name,
                vm.memory_mib,
                dest,
                "postcopy" if after is not None else policy,
                p.strategy.value,
                timeout_s if at_risk else p.total_s,
                p.postcopy_s,
                at_risk,
                reason,
                after,
            )
        )
    movable = [m for m in moves if m.dest is not None]
    order = sorted(movable, key=lambda m: (m.at_risk, -m.predicted_s, m.name))
    return order + [m for m in moves if m.dest is None]


def plan_drain(
    vms: list[DrainVM],
    targets: list[Target],
    *,
    post_copy: bool,
    max_parallel: int,
    host_limit: int,
    timeout_s: float,
    downtime_limit_ms: int,
    deadline_s: float | None = None,
    postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT,
) -> DrainPlan:
    """The plan for moving ``vms`` to ``targets``; see the module docstring."""
    notes: list[str] = []
    cap = max(1, min(max_parallel, host_limit, len(vms) or 1))
    if max_parallel > host_limit:
        notes.append(
            f"at most {host_limit} at a time: the host's limit of outgoing migrations "
            f"(max_outgoing_per_host) is below the {max_parallel} asked for"
        )
    placed = _place(vms, targets)
    options = []
    for parallel in range(1, cap + 1):
        moves = _moves(
            vms,
            targets,
            placed,
            parallel,
            post_copy=post_copy,
            timeout_s=timeout_s,
            downtime_limit_ms=downtime_limit_ms,
            postcopy_weight=postcopy_weight,
        )
        makespan = _makespan([m.predicted_s for m in moves if m.dest is not None], parallel)
        options.append((makespan, parallel, moves))
    # the soonest; a tie goes to fewer at once (less load on the hosts for nothing)
    predicted_s, parallel, order = min(options, key=lambda o: (round(o[0], 1), o[1]))
    if cap > 1:
        notes.append(
            f"{parallel} at a time (of up to {cap}): predicted "
            + ", ".join(f"{p} at a time {s:.1f} s" for s, p, _m in options)
        )
    within = None if deadline_s is None else predicted_s <= deadline_s
    if within is False:
        notes.append(f"predicted {predicted_s:.0f} s exceeds the deadline of {deadline_s:.0f} s")
    return DrainPlan(order, parallel, predicted_s, within, notes)
