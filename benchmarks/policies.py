"""Benchmark: which switch policy finishes a live migration, how fast, at what cost.

Runs {quiet, moderate (64 MiB at 32 MiB/s), whole RAM as fast as possible, cold RAM with a
32 MiB hot set, whole RAM at 75 % of the link, quiet then hot} x {auto, precopy,
postcopy-after-0, postcopy-after-1} plus libvirt's own ``virsh migrate --postcopy
--postcopy-after-precopy`` as the reference, each a real migration between two lab hosts
over a link shaped with tc (QEMU's bandwidth cap stops applying in post-copy, the link's
does not). Every guest's working set holds data from boot (``prefill``). One unrecorded
warm-up migration runs first. A migration shorter than 3 s runs 3 times, and the table
keeps the median (by score; the JSON has every total): a second's migration varies by a
third from run to run, more than the policies differ. Prints a table, auto against the
best fixed policy per workload, and writes JSON ({"environment", "runs", "verdicts"}).

    sudo .venv/bin/python -m benchmarks.policies [--quick] --json results.json

One clock for every time: the benchmark's monotonic clock on the host. A migration's total
runs from its request (``Migration.run()`` for ORBIT; the ``virsh migrate`` process's start
for the reference, whose start-up therefore counts, as it does for whoever runs it) until
the request returns: the job finished, the VM running on the destination (or left on the
source). The guest's figures are on the same clock: each heartbeat line (one per 100 ms of
the guest's own time) is stamped as it arrives in the serial log
(orbit/lab/guest_clock.py), whatever the guest's own clock does while QEMU stops it.

Per run:
- ``converged``: the migration completed (pre-copy may give up at its completion timeout);
- ``total_s`` and ``limit_ratio``: the total (above; auto measures beside the first pass) and its
  ratio to the physical limit (RAM / link rate);
- ``postcopy_s``: seconds in post-copy (the VM depends on both hosts), from the switch (the
  source's post-copy phase entered) to the end; ``score`` = ``total_s + postcopy_s``
  (auto's default objective, post-copy weight 1);
- ``predicted_total_s``: the model's total (orbit/migration/predict.py) for this policy,
  from a dirty-rate measurement taken just before the run (auto: its own plan, made about
  a second in; pre-copy's when auto made no plan; none when the model says it never
  finishes);
  ``prediction_ok``: within +-25 %, or, for a run that did not finish, the model said it
  would not finish within the completion timeout;
- ``downtime_ms``: QEMU's measure of the pause at the switch-over (for post-copy the
  switch alone, not the page faults after it);
- ``stall_max_ms``, ``stalled_ms``: the guest's longest stall and its total stalled time
  during the migration, on the host's clock: an interval between two heartbeats longer
  than 150 ms counts as a stall of its length minus 100 ms (what the switch-over and the
  page faults cost the guest, next to QEMU's downtime);
- ``bytes_over_ram``: memory sent / RAM;
- ``iterations``, ``postcopy_requests``: QEMU's counters;
- ``guest_slowdown``: 1 - (pages the guest wrote per second of host time during the
  migration) / (the same before it): what the migration cost the workload (0 = nothing;
  a paced workload catches up after short stalls, so its stalls show in ``stalled_ms``);
- ``verification_errors``: pages the guest found wrong after the migration (must be 0);
- auto only: ``strategy`` (its plan), ``plan_reason``, ``switch_reason``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks import environment
from orbit.errors import HypervisorError
from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.guest_clock import Arrival, HeartbeatClock, stalls, write_rate
from orbit.lab.lab import Lab, LabHost
from orbit.lab.network import Shaping, rate_bits_s
from orbit.migration.engine import Migration, MigrationListener, MigrationRequest
from orbit.migration.model import DEFAULT_DOWNTIME_LIMIT_MS, MIB, Action, MigrationSettings
from orbit.migration.phase import Phase
from orbit.migration.predict import (
    DEFAULT_FINISH_S,
    DEFAULT_START_S,
    MEASURE_PERIOD_S,
    Facts,
    Link,
    Plan,
    Strategy,
    configured_link,
    guest_bytes,
    new_pages,
    predict,
    with_faults,
)
from orbit.virt.driver import EVENT_JOB_COMPLETED, EVENT_SUSPENDED_POSTCOPY, JobStats
from orbit.virt.libvirt_driver import LibvirtDriver

WARM_UP_BEATS = 10  # heartbeats before the migration starts (1 s)
BASELINE_BEATS = 5  # heartbeats over which the undisturbed write rate is measured
HEARTBEAT_TIMEOUT_S = 30.0
#: auto first: its measurement gives the facts from which every policy's time is predicted
POLICIES = ("auto", "precopy", "postcopy-after-0", "postcopy-after-1", "virsh-postcopy")
FIXED = tuple(p for p in POLICIES if p != "auto")
#: which strategy of the model a fixed policy is (virsh switches after the first pass)
STRATEGY_OF = {
    "precopy": Strategy.PRECOPY,
    "postcopy-after-0": Strategy.POSTCOPY_AFTER_0,
    "postcopy-after-1": Strategy.POSTCOPY_AFTER_1,
    "virsh-postcopy": Strategy.POSTCOPY_AFTER_1,
}
PREDICTION_TOLERANCE = 0.25
#: A migration this short is run REPEATS times and its median (by score) kept: a second's
#: migration varies by a third from run to run (start-up and the guest's timing), more than
#: the policies differ.
SHORT_S = 3.0
REPEATS = 3


GUEST_OWN_MIB = 32  # RAM the guest keeps for itself below its working set


@dataclass(frozen=True)
class Workload:
    name: str
    wss_mib: int  # 0 = the whole RAM (minus the guest's own reserve)
    rate_mib_s: int  # 0 = as fast as possible
    #: the rest of RAM holds data written once at boot (never a free zero page)
    cold: bool = False
    #: dirty rate as a share of the link's rate (replaces rate_mib_s when set)
    link_share: float = 0.0
    #: seconds after boot at 1 MiB/s before the rate applies (the migration starts ~1.5 s
    #: after boot, and auto measures for ~1 s: 4 s turns hot early in the first pass)
    quiet_s: int = 0

    def spec(self, name: str, memory_mib: int, link_bits_s: int) -> GuestSpec:
        wss = self.wss_mib or memory_mib - GUEST_OWN_MIB
        rate = (
            round(self.link_share * link_bits_s / 8 / MIB) if self.link_share else self.rate_mib_s
        )
        return GuestSpec(
            name,
            memory_mib=memory_mib,
            wss_mib=wss,
            rate_mib_s=rate,
            cold_mib=memory_mib - GUEST_OWN_MIB - wss if self.cold else 0,
            quiet_s=self.quiet_s,
            prefill=True,
        )


#: Every working set holds data from boot (prefill), as in a VM that has run a while.
WORKLOADS = (
    Workload("quiet", wss_mib=8, rate_mib_s=2),
    Workload("moderate-64MiB", wss_mib=64, rate_mib_s=32),
    Workload("full-RAM", wss_mib=0, rate_mib_s=0),
    Workload("cold+hot-32MiB", wss_mib=32, rate_mib_s=0, cold=True),
    Workload("RAM-at-75%-link", wss_mib=0, rate_mib_s=0, link_share=0.75),
    Workload("turns-hot", wss_mib=0, rate_mib_s=0, quiet_s=5),
)


@dataclass
class Outcome:
    """What one migration did, from ORBIT's engine or from virsh; times on the benchmark's
    clock, from the request."""

    converged: bool
    total_s: float
    downtime_ms: int | None = None
    memory_bytes: int = 0
    iterations: int = 0
    postcopy_requests: int = 0
    switch_at_s: float | None = None
    note: str = ""
    plan: Plan | None = None
    #: why it switched to post-copy (the policy's decision), or why not
    switch_reason: str = ""


@dataclass
class Run:
    workload: str
    policy: str
    converged: bool
    total_s: float
    limit_ratio: float
    downtime_ms: int | None
    bytes_over_ram: float
    iterations: int
    postcopy_requests: int
    switch_at_s: float | None
    guest_slowdown: float
    verification_errors: int
    ended_on: str
    #: the guest's longest stall and total stalled time during the migration (host clock)
    stall_max_ms: float = 0.0
    stalled_ms: float = 0.0
    guest_write_mib_s: float = 0.0  # the guest's undisturbed write rate before migrating
    note: str = ""
    #: seconds in post-copy (the VM depends on both hosts), and the objective
    postcopy_s: float | None = None
    score: float | None = None
    #: the model's total for this policy, from auto's measurement of the same workload
    predicted_total_s: float | None = None
    #: auto only: the strategy it chose and why
    strategy: str = ""
    plan_reason: str = ""
    switch_reason: str = ""

    #: a prediction was made (False: auto without a plan)
    predicted: bool = False
    timeout_s: float = 0.0
    #: a short migration's totals, every repeat (this run is their median by score)
    repeat_totals_s: list[float] = field(default_factory=list)

    @property
    def prediction_ok(self) -> bool | None:
        """Within +-25 % of the actual total; for a run that did not finish, right if the
        model said it would not finish within the completion timeout. None: no prediction."""
        if not self.predicted:
            return None
        p = self.predicted_total_s
        finishes = p is not None and p <= self.timeout_s
        if not self.converged:
            return not finishes
        return p is not None and abs(p - self.total_s) <= PREDICTION_TOLERANCE * self.total_s


def settings_for(policy: str, timeout_s: float) -> MigrationSettings:
    if policy == "precopy":
        return MigrationSettings.resolve(completion_timeout_s=timeout_s)
    if policy == "auto":
        return MigrationSettings.resolve(
            post_copy=True, policy="auto", completion_timeout_s=timeout_s
        )
    after = int(policy.rsplit("-", 1)[1])
    return MigrationSettings.resolve(
        post_copy=True, post_copy_after_iterations=after, completion_timeout_s=timeout_s
    )


#: How often KVM's write faults are counted during the measurement (see measure_facts).
FAULT_COUNT_EVERY_S = 0.2


def measure_facts(driver: LibvirtDriver, uri: str, name: str, link: Link) -> Facts:
    """What auto's plan would be made from (see Migration._make_plan), for predicting
    every policy's time: the dirty rate measured over 1 s, and KVM's write faults counted
    during it (a hot set shows as new dirty pages that stop; auto learns the same during
    pass 1, see predict.with_faults)."""
    ram = driver.domain_info(uri, name).memory_mib * MIB
    base = _faults(driver, uri, name)
    driver.start_dirty_rate(uri, name, period_s=MEASURE_PERIOD_S)
    started = time.monotonic()
    counts: list[tuple[float, int]] = []
    while (rate := driver.read_dirty_rate(uri, name)) is None:
        if time.monotonic() - started > MEASURE_PERIOD_S + 10:
            raise RuntimeError(f"the dirty rate of {name} was not measured within 11 s")
        count = _faults(driver, uri, name) if base is not None else None
        at = time.monotonic() - started
        if count is not None and at <= MEASURE_PERIOD_S:  # after it, the log is off
            counts.append((at, count))
        time.sleep(FAULT_COUNT_EVERY_S)  # the pace of the counts, not a wait for a state
    facts = Facts(
        ram_bytes=ram,
        dirty_rate_bytes_s=float(rate.bytes_s),
        bandwidth_bytes_s=link.bytes_s,
        downtime_limit_ms=DEFAULT_DOWNTIME_LIMIT_MS,
        first_pass_bytes=guest_bytes(driver.resident_bytes(uri, name), ram),
        start_s=DEFAULT_START_S,
        finish_s=DEFAULT_FINISH_S,
    )
    pages = None if base is None else new_pages(base, counts)
    return facts if pages is None else with_faults(facts, pages)


def _faults(driver: LibvirtDriver, uri: str, name: str) -> int | None:
    try:
        return driver.new_page_faults(uri, name)
    except HypervisorError:
        return None


def warm_up(lab: Lab, guests: Guests, driver: LibvirtDriver) -> None:
    """One migration that is not recorded: the first in a fresh lab pays for cold caches
    and connections (~1 s on the lab), which would count against whichever policy ran
    first."""
    src, dst = lab.host("h1"), lab.host("h2")
    spec = GuestSpec("warm-up", memory_mib=128, wss_mib=8, rate_mib_s=1)
    guests.start(src.name, spec)
    try:
        run_engine(src, dst, spec.name, driver, MigrationSettings.resolve(), Link(1, "-"))
    finally:
        guests.destroy(spec.name)


def run_virsh(
    src: LabHost, dst: LabHost, name: str, driver: LibvirtDriver, started: float
) -> Outcome:
    """libvirt's reference: virsh's own post-copy switch after the first pass. ``started``:
    the request's time on the benchmark's clock (the watch is set up before it)."""
    final: list[JobStats] = []
    switched: list[float] = []
    done = threading.Event()

    def on_event(event: str, stats: JobStats | None) -> None:
        if event == EVENT_JOB_COMPLETED and stats is not None:
            final.append(stats)
            done.set()
        if event == EVENT_SUSPENDED_POSTCOPY and not switched:
            switched.append(time.monotonic())

    unwatch = driver.watch(src.uri, name, on_event)
    started = max(started, time.monotonic())  # the clock starts with the request
    try:
        proc = subprocess.run(
            [
                "virsh", "-c", src.uri, "migrate", "--live", "--p2p", "--persistent",
                "--undefinesource", "--postcopy", "--postcopy-after-precopy",
                name, dst.uri, dst.migration_uri,
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        total = time.monotonic() - started
        done.wait(2.0)
    finally:
        unwatch()
    out = Outcome(
        converged=proc.returncode == 0,
        total_s=total,
        note=proc.stderr.strip(),
        switch_at_s=round(switched[0] - started, 3) if switched else None,
    )
    if final:
        out.downtime_ms = final[0].downtime_ms
        out.memory_bytes = final[0].memory_processed_bytes
        out.iterations = final[0].iteration
        out.postcopy_requests = final[0].postcopy_requests
    return out


class _SwitchClock(MigrationListener):
    """When (benchmark clock) the engine entered post-copy."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_phase(self, phase: Phase, at_s: float, reason: str) -> None:
        if phase is Phase.RUNNING_POSTCOPY and self.at is None:
            self.at = time.monotonic()


def _beats(clock: HeartbeatClock, n: int) -> list[Arrival]:
    """Wait for ``n`` more heartbeats; all stamped so far."""
    have = len(clock.arrivals())
    if not clock.wait_for(lambda a: len(a) >= have + n, HEARTBEAT_TIMEOUT_S):
        raise RuntimeError(f"guest {clock.name}: no {n} heartbeats in {HEARTBEAT_TIMEOUT_S} s")
    return clock.arrivals()


def run_engine(
    src: LabHost,
    dst: LabHost,
    name: str,
    driver: LibvirtDriver,
    settings: MigrationSettings,
    link: Link,
) -> Outcome:
    request = MigrationRequest(name, src.uri, dst.uri, settings, dst.migration_uri, link)
    switched = _SwitchClock()
    started = time.monotonic()
    result = Migration(driver, request, listener=switched).run()
    total = time.monotonic() - started
    converged = result.phase is Phase.COMPLETED
    return Outcome(
        converged=converged,
        total_s=total,
        downtime_ms=result.downtime_ms,
        memory_bytes=result.memory_bytes,
        iterations=result.iterations,
        postcopy_requests=result.postcopy_requests,
        switch_at_s=None if switched.at is None else round(switched.at - started, 3),
        note="" if converged else f"{result.phase.value}: {result.error}",
        plan=result.plan,
        switch_reason=next(
            (d.reason for d in result.decisions if d.action is Action.SWITCH_TO_POSTCOPY),
            "no switch",
        ),
    )


def one_run(
    lab: Lab,
    guests: Guests,
    driver: LibvirtDriver,
    workload: Workload,
    policy: str,
    *,
    memory_mib: int,
    link_bits_s: int,
    link_name: str,
    timeout_s: float,
) -> Run:
    """One migration, and the model's prediction of its time from a measurement just before
    (the engine's own for auto)."""
    src, dst = lab.host("h1"), lab.host("h2")
    name = re.sub(r"[^A-Za-z0-9.-]", "-", f"{workload.name}-{policy}")
    spec = workload.spec(name, memory_mib, link_bits_s)
    limit_s = memory_mib * MIB * 8 / link_bits_s
    link = configured_link(link_bits_s / 8, f"configured: {link_name}")
    with HeartbeatClock(guests, name) as clock:
        first = guests.start(src.name, spec)
        assert first is not None
        try:
            beats = _beats(clock, WARM_UP_BEATS + BASELINE_BEATS)
            base_a, base_b = beats[-BASELINE_BEATS], beats[-1]
            baseline = write_rate(beats, base_a.at_s, base_b.at_s) or 0.0
            facts = measure_facts(driver, src.uri, name, link)  # before the clock starts
            if policy == "virsh-postcopy":
                out = run_virsh(src, dst, name, driver, time.monotonic())
            else:
                out = run_engine(src, dst, name, driver, settings_for(policy, timeout_s), link)
            ended = time.monotonic()
            started = ended - out.total_s
            beats = _beats(clock, 2)  # the first heartbeats after the migration
        except BaseException:
            guests.destroy(name)
            raise
    try:
        where = guests.locate(name)
        assert where is not None
        verified = guests.wait_verified(where.name, name)
        during = write_rate(beats, started, ended)
        slowdown = max(0.0, 1 - during / baseline) if baseline and during is not None else 0.0
        stalled = stalls([b.at_s for b in beats], started, ended)
        postcopy_s = None
        if out.converged:
            postcopy_s = 0.0 if out.switch_at_s is None else out.total_s - out.switch_at_s
        predicted = None
        if out.plan is not None:
            predicted = out.plan.chosen
        elif policy in STRATEGY_OF:
            predicted = predict(facts, STRATEGY_OF[policy])
        elif policy == "auto":  # no plan: it ran pre-copy, deciding from its evidence
            predicted = predict(facts, Strategy.PRECOPY)
        run = Run(
            workload=workload.name,
            policy=policy,
            converged=out.converged,
            total_s=round(out.total_s, 2),
            limit_ratio=round(out.total_s / limit_s, 2),
            downtime_ms=out.downtime_ms,
            bytes_over_ram=round(out.memory_bytes / (memory_mib * MIB), 2),
            iterations=out.iterations,
            postcopy_requests=out.postcopy_requests,
            switch_at_s=out.switch_at_s,
            guest_slowdown=round(slowdown, 3),
            verification_errors=verified.errors,
            ended_on=where.name,
            stall_max_ms=stalled.longest_ms,
            stalled_ms=stalled.total_ms,
            guest_write_mib_s=round(baseline * 4 / 1024, 1),
            note=out.note,
            postcopy_s=None if postcopy_s is None else round(postcopy_s, 2),
            score=None if postcopy_s is None else round(out.total_s + postcopy_s, 2),
            predicted_total_s=(
                round(predicted.total_s, 2) if predicted and predicted.finishes else None
            ),
            predicted=predicted is not None,
            timeout_s=timeout_s,
            strategy=out.plan.chosen.strategy.value if out.plan else "",
            plan_reason=out.plan.reason() if out.plan else "",
            switch_reason=out.switch_reason,
        )
        return run
    finally:
        guests.destroy(name)


def median_run(runs: list[Run]) -> Run:
    """The run of median score (total for one that did not finish), with every total."""
    ranked = sorted(runs, key=lambda r: (r.score if r.score is not None else math.inf, r.total_s))
    return replace(
        ranked[len(ranked) // 2],
        repeat_totals_s=[r.total_s for r in runs],
        verification_errors=sum(r.verification_errors for r in runs),  # every repeat's
    )


def _num(value: float | None, width: int, fmt: str = ".2f") -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def print_table(runs: list[Run]) -> None:
    head = (
        f"{'workload':<17}{'policy':<18}{'conv':<5}{'total s':>8}{'pred s':>8}{'pc s':>7}"
        f"{'score':>8}{'xlimit':>7}{'down ms':>8}{'bytes/RAM':>10}{'iter':>5}{'pc req':>8}"
        f"{'stall ms':>9}{'stalled':>8}{'slowdown':>9}{'errors':>7}  on"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        print(
            f"{r.workload:<17}{r.policy:<18}{'yes' if r.converged else 'NO':<5}"
            f"{r.total_s:>8.2f}{_num(r.predicted_total_s, 8)}{_num(r.postcopy_s, 7)}"
            f"{_num(r.score, 8)}{r.limit_ratio:>7.2f}"
            f"{r.downtime_ms if r.downtime_ms is not None else '-':>8}"
            f"{r.bytes_over_ram:>10.2f}{r.iterations:>5}{r.postcopy_requests:>8}"
            f"{r.stall_max_ms:>9.0f}{r.stalled_ms:>8.0f}"
            f"{r.guest_slowdown:>9.1%}{r.verification_errors:>7}  {r.ended_on}"
        )


@dataclass
class Verdict:
    """auto against the best fixed policy on one workload (score: lower is better)."""

    workload: str
    strategy: str
    auto_score: float | None
    best_policy: str
    best_score: float | None
    #: auto switched although pre-copy finished within 1.10 x the best score
    needless_switch: bool

    @property
    def ratio(self) -> float | None:
        if self.auto_score is None or not self.best_score:
            return None
        return self.auto_score / self.best_score


def verdicts(runs: list[Run]) -> list[Verdict]:
    out = []
    for workload in dict.fromkeys(r.workload for r in runs):
        mine = [r for r in runs if r.workload == workload]
        auto = next(r for r in mine if r.policy == "auto")
        fixed = [r for r in mine if r.policy in FIXED and r.score is not None]
        best = min(fixed, key=lambda r: r.score or math.inf, default=None)
        pre = next((r for r in fixed if r.policy == "precopy"), None)
        best_score = best.score if best else None
        pre_ok = pre is not None and best_score is not None and (pre.score or 0) <= 1.1 * best_score
        out.append(
            Verdict(
                workload,
                auto.strategy or "(no plan)",
                auto.score,
                best.policy if best else "-",
                best_score,
                needless_switch=pre_ok and auto.switch_at_s is not None,
            )
        )
    return out


def print_verdicts(runs: list[Run]) -> None:
    print(f"\n{'workload':<17}{'auto chose':<19}{'auto':>8}{'best fixed':>24}{'ratio':>7}")
    for v in verdicts(runs):
        best = f"{v.best_policy} {_num(v.best_score, 0)}"
        print(
            f"{v.workload:<17}{v.strategy:<19}{_num(v.auto_score, 8)}{best:>24}"
            f"{_num(v.ratio, 7)}{'  needless switch' if v.needless_switch else ''}"
        )
    judged = [r for r in runs if r.prediction_ok is not None]
    good = sum(1 for r in judged if r.prediction_ok)
    print(
        f"predicted total within +-{PREDICTION_TOLERANCE:.0%} of actual: {good} of {len(judged)} "
        f"runs ({good / len(judged) if judged else 0:.0%})"
    )
    for r in runs:
        if r.policy == "auto":
            print(f"  {r.workload}: {r.plan_reason or '(no plan)'}\n    -> {r.switch_reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB guest (default 512)")
    parser.add_argument("--json", type=Path, help="write the runs here")
    parser.add_argument("--rate", default="400mbit", help="link rate (default 400mbit)")
    parser.add_argument("--memory-mib", type=int, help="guest RAM (overrides --quick)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    memory_mib = args.memory_mib or (256 if args.quick else 512)
    link_bits_s = rate_bits_s(args.rate)
    limit_s = memory_mib * MIB * 8 / link_bits_s
    timeout_s = max(20.0, 3 * limit_s)
    print(
        f"guest {memory_mib} MiB, link {args.rate}: physical limit {limit_s:.1f} s, "
        f"pre-copy completion timeout {timeout_s:.0f} s"
    )
    lab = Lab.from_env()
    runs: list[Run] = []
    with lab.session(2):
        env = environment.describe(lab, args.rate)
        print(environment.header(env), flush=True)
        lab.shape("h1", Shaping(rate=args.rate))
        guests = Guests(lab)
        driver = LibvirtDriver()
        try:
            warm_up(lab, guests, driver)
            for workload in WORKLOADS:
                for policy in POLICIES:
                    tries: list[Run] = []
                    while not tries or (tries[0].total_s < SHORT_S and len(tries) < REPEATS):
                        run = one_run(
                            lab,
                            guests,
                            driver,
                            workload,
                            policy,
                            memory_mib=memory_mib,
                            link_bits_s=link_bits_s,
                            link_name=args.rate,
                            timeout_s=timeout_s,
                        )
                        tries.append(run)
                        print(
                            f"  {run.workload} / {run.policy}: "
                            f"{'converged' if run.converged else 'did not converge'} "
                            f"in {run.total_s:.1f} s, {run.verification_errors} errors",
                            flush=True,
                        )
                    runs.append(median_run(tries) if len(tries) > 1 else tries[0])
        finally:
            driver.close()
    print()
    print(environment.header(env))
    print_table(runs)
    print_verdicts(runs)
    if args.json:
        meta = {"memory_mib": memory_mib, "link": args.rate, "limit_s": round(limit_s, 2)}
        doc = {
            "environment": env,
            "runs": [
                asdict(r)
                | meta
                | {"accelerator": env["accelerator"]}
                | {"prediction_ok": r.prediction_ok}
                for r in runs
            ],
            "verdicts": [asdict(v) | {"ratio": v.ratio} for v in verdicts(runs)],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {len(runs)} runs to {args.json}")
    return 0 if all(r.verification_errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
