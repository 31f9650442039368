"""Benchmark: empty a host of six busy VMs: ORBIT's planned drain against two baselines.

Three lab hosts; h1's link shaped to 400 mbit/s (the drain's bottleneck: every VM leaves
through it). h1 runs six guests whose memory is all written (``prefill``, ``cold_mib``):

- ``hot1``, ``hot2``: 256 MiB, rewriting 232 MiB as fast as they can (whole-RAM hot: all
  the guest can use, 24 MiB being its own);
- ``mod1``, ``mod2``: 192 MiB, rewriting 64 MiB at 32 MiB/s;
- ``quiet1``, ``quiet2``: 128 MiB, rewriting 16 MiB at 1 MiB/s.

Scenarios (each starts from the six guests on h1, h1 disabled so nothing returns to it):

- ``orbit``: ORBIT's drain (:mod:`orbit.conductor.drains`): measured, planned (its
  parallelism too, up to ``--parallel``, default 3, the hosts' limits), post-copy permitted;
- ``kubevirt-like``: 2 at a time in name order, pre-copy, switched to post-copy when the
  completion timeout (150 s per GiB, KubeVirt's ``completionTimeoutPerGiB``) passes;
- ``nova-like``: one at a time (Nova's ``max_concurrent_live_migrations`` 1), pre-copy,
  aborted at the completion timeout (800 s per GiB, ``live_migration_completion_timeout``
  with ``live_migration_timeout_action = abort``): a VM that cannot converge stays.

Figures, on the benchmark's monotonic clock: drain time (from the request until every VM
has moved or ended its last attempt), drain time / (sum of RAM / link rate), VMs moved and
left on h1, the guests' verification errors (every guest re-checks all of its memory
after the drain, wherever it runs), and each VM's destination, strategy and time.

    sudo .venv/bin/python -m benchmarks.drain --json benchmarks/results/kvm/drain.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from benchmarks import environment
from orbit.conductor.conductor import Conductor
from orbit.conductor.drains import DrainRequest
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Drain, Host, Migration, Server
from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.network import Shaping
from orbit.migration.model import MAX_POST_COPY_AFTER_ITERATIONS, MIB, MigrationSettings
from orbit.virt.libvirt_driver import LibvirtDriver

LINK_RATE = "400mbit"
LINK_BYTES_S = 400e6 / 8
GUESTS = [
    GuestSpec("hot1", memory_mib=256, wss_mib=232, rate_mib_s=0, prefill=True),
    GuestSpec("hot2", memory_mib=256, wss_mib=232, rate_mib_s=0, prefill=True),
    GuestSpec("mod1", memory_mib=192, wss_mib=64, rate_mib_s=32, prefill=True, cold_mib=104),
    GuestSpec("mod2", memory_mib=192, wss_mib=64, rate_mib_s=32, prefill=True, cold_mib=104),
    GuestSpec("quiet1", memory_mib=128, wss_mib=16, rate_mib_s=1, prefill=True, cold_mib=88),
    GuestSpec("quiet2", memory_mib=128, wss_mib=16, rate_mib_s=1, prefill=True, cold_mib=88),
]
SCENARIOS = ("orbit", "kubevirt-like", "nova-like")
#: KubeVirt's completionTimeoutPerGiB and Nova's live_migration_completion_timeout
KUBEVIRT_S_PER_GIB = 150.0
NOVA_S_PER_GIB = 800.0
POLL_S = 0.5
SCENARIO_TIMEOUT_S = 1800.0


@dataclass
class VmOutcome:
    name: str
    memory_mib: int
    dest: str | None
    status: str
    strategy: str
    total_s: float | None
    switch_at_s: float | None
    ended_on: str
    verification_errors: int


@dataclass
class DrainRun:
    scenario: str
    drain_s: float
    ideal_s: float
    ratio: float
    moved: int
    left_on_source: int
    verification_errors: int
    vms: list[VmOutcome] = field(default_factory=list)
    plan_predicted_s: float | None = None


def _until(cond: Callable[[], bool], what: str, timeout_s: float = SCENARIO_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


class Bench:
    def __init__(self, lab: Lab, workdir: Path, parallel: int) -> None:
        self.parallel = parallel
        self.lab = lab
        self.guests = Guests(lab)
        self.db = Database(f"sqlite:///{workdir / 'orbit.db'}")
        self.db.upgrade()
        self.driver = LibvirtDriver()
        config = ServerConfig(
            driver="libvirt",
            sync_interval_s=1.0,
            max_outgoing_per_host=parallel,
            max_incoming_per_host=parallel,
        )
        self.conductor = Conductor(self.db, self.driver, config)
        with self.db.session() as s:
            for h in lab.hosts():
                s.add(Host(name=h.name, uri=h.uri, migration_address=h.migration_uri,
                           link_mib_s=round(LINK_BYTES_S / MIB)))  # fmt: skip
        self.conductor.start()

    def close(self) -> None:
        self.conductor.stop()
        self.driver.close()
        self.db.dispose()

    # -- set-up of each scenario ---------------------------------------------------------

    def reset(self) -> None:
        """The six guests fresh on h1, h1 disabled (draining), every server listed."""
        for spec in GUESTS:
            if self.guests.locate(spec.name, missing_ok=True) is not None:
                self.guests.destroy(spec.name)
        with self.db.session() as s:
            s.execute(update(Host).values(disabled=False, disabled_reason=None))
        for spec in GUESTS:
            self.guests.start("h1", spec)
        names = {g.name for g in GUESTS}

        def listed() -> bool:
            self.conductor.sync()
            with self.db.session() as s:
                rows = s.execute(
                    select(Server.name).join(Host).where(Host.name == "h1",
                                                          Server.status == "ACTIVE")
                )  # fmt: skip
                return names <= {r[0] for r in rows}

        _until(listed, "the guests listed on h1", 120.0)

    def _disable_h1(self) -> None:
        with self.db.session() as s:
            s.execute(update(Host).where(Host.name == "h1").values(
                disabled=True, disabled_reason="benchmark drain"))  # fmt: skip

    # -- the scenarios -------------------------------------------------------------------

    def orbit(self) -> tuple[float, dict[str, str], float | None]:
        request = DrainRequest(
            "h1", None, post_copy=True, max_parallel=self.parallel, deadline_s=None
        )
        start = time.monotonic()
        with self.db.session() as s:
            planned = self.conductor.drains.plan(s, request)
            drain = self.conductor.drains.start(s, request, planned, user_id=None,
                                                project_id=None)  # fmt: skip
            drain_id = drain.id
        strategies = {m.name: m.strategy for m in planned.plan.moves}

        def ended() -> bool:
            with self.db.session() as s:
                return s.get_one(Drain, drain_id).state.is_final

        _until(ended, "the drain to end")
        return time.monotonic() - start, strategies, planned.plan.predicted_s

    def baseline(self, *, parallel: int, settings_of: Callable[[GuestSpec], MigrationSettings]
                 ) -> float:  # fmt: skip
        """Each VM migrated, ``parallel`` at a time, in name order; the scheduler chooses."""
        self._disable_h1()
        start = time.monotonic()
        todo = sorted(GUESTS, key=lambda g: g.name)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    spec = todo.pop(0)
                self._migrate_and_wait(spec, settings_of(spec))

        threads = [threading.Thread(target=worker) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - start

    def _migrate_and_wait(self, spec: GuestSpec, settings: MigrationSettings) -> None:
        with self.db.session() as s:
            server = s.scalars(
                select(Server).join(Host).where(
                    Server.name == spec.name, Host.name == "h1", Server.status == "ACTIVE")
            ).one()  # fmt: skip
            mid = self.conductor.request_migration(
                s, server=server, dest_host_name=None, settings=settings,
                block_migration_auto=False, disk_over_commit=False, user_id=None,
                project_id=None,
            )  # fmt: skip
            s.commit()
        self.conductor.kick()

        def ended() -> bool:
            with self.db.session() as s:
                return s.get_one(Migration, mid).phase.is_final

        _until(ended, f"{spec.name}'s migration")

    # -- the outcome ---------------------------------------------------------------------

    def outcome(self, scenario: str, drain_s: float, strategies: dict[str, str]) -> DrainRun:
        vms = []
        for spec in GUESTS:
            where = self.guests.locate(spec.name)
            assert where is not None, f"{spec.name} is nowhere: lost"
            errors = self.guests.wait_verified(where.name, spec.name).errors
            with self.db.session() as s:
                m = s.scalars(
                    select(Migration).join(Server).where(Server.name == spec.name)
                    .order_by(Migration.id.desc())
                ).first()  # fmt: skip
                dest = m.dest_host.name if m and m.dest_host else None
                status = m.status if m else "not started"
                strategy = (
                    strategies.get(spec.name)
                    or ((m.prediction or {}).get("strategy") if m else "")
                    or (m.policy if m else "")
                )
                vms.append(VmOutcome(spec.name, spec.memory_mib, dest, status, str(strategy),
                                     m.total_s if m else None, m.switch_at_s if m else None,
                                     where.name, errors))  # fmt: skip
        ideal = sum(g.memory_mib for g in GUESTS) * MIB / LINK_BYTES_S
        moved = sum(1 for v in vms if v.ended_on != "h1")
        return DrainRun(
            scenario, round(drain_s, 2), round(ideal, 2), round(drain_s / ideal, 2), moved,
            len(vms) - moved, sum(v.verification_errors for v in vms), vms,
        )  # fmt: skip


def _kubevirt(spec: GuestSpec) -> MigrationSettings:
    return MigrationSettings.resolve(
        post_copy=True,
        post_copy_after_iterations=MAX_POST_COPY_AFTER_ITERATIONS,
        completion_timeout_s=KUBEVIRT_S_PER_GIB * spec.memory_mib / 1024,
    )


def _nova(spec: GuestSpec) -> MigrationSettings:
    return MigrationSettings.resolve(
        post_copy=False, completion_timeout_s=NOVA_S_PER_GIB * spec.memory_mib / 1024
    )


def run(bench: Bench, scenario: str) -> DrainRun:
    bench.reset()
    predicted = None
    if scenario == "orbit":
        drain_s, strategies, predicted = bench.orbit()
    elif scenario == "kubevirt-like":
        drain_s, strategies = bench.baseline(parallel=2, settings_of=_kubevirt), {}
    else:
        drain_s, strategies = bench.baseline(parallel=1, settings_of=_nova), {}
    result = bench.outcome(scenario, drain_s, strategies)
    result.plan_predicted_s = None if predicted is None else round(predicted, 1)
    return result


def print_table(runs: list[DrainRun]) -> None:
    print(f"{'scenario':<15}{'drain_s':>9}{'ideal_s':>9}{'ratio':>7}{'moved':>7}"
          f"{'left':>6}{'errors':>8}  per VM: name dest status strategy total_s")  # fmt: skip
    for r in runs:
        print(f"{r.scenario:<15}{r.drain_s:>9.1f}{r.ideal_s:>9.1f}{r.ratio:>7.2f}{r.moved:>7}"
              f"{r.left_on_source:>6}{r.verification_errors:>8}")  # fmt: skip
        for v in r.vms:
            took = "-" if v.total_s is None else f"{v.total_s:.1f}"
            switch = "" if v.switch_at_s is None else f" (post-copy at {v.switch_at_s:.1f} s)"
            print(f"{'':<17}{v.name:<8}{v.dest or '-':<4}{v.status:<11}{v.strategy:<18}"
                  f"{took:>7}{switch}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    for spec in GUESTS:
        spec.validate()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="run only these")
    parser.add_argument(
        "--parallel",
        type=int,
        default=3,
        help="the most migrations at once ORBIT may plan, and the hosts' limits (default 3)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    lab = Lab.from_env()
    runs: list[DrainRun] = []
    with lab.session(3), tempfile.TemporaryDirectory(prefix="orbit-drain-") as tmp:
        env = environment.describe(lab, LINK_RATE)
        print(environment.header(env), flush=True)
        lab.shape("h1", Shaping(rate=LINK_RATE))
        bench = Bench(lab, Path(tmp), args.parallel)
        try:
            for scenario in args.only or SCENARIOS:
                result = run(bench, scenario)
                runs.append(result)
                print(f"  {scenario}: {result.drain_s:.1f} s ({result.ratio:.2f} x ideal), "
                      f"moved {result.moved}, left {result.left_on_source}, "
                      f"{result.verification_errors} errors", flush=True)  # fmt: skip
        finally:
            bench.close()
    print()
    print_table(runs)
    if args.json:
        doc: dict[str, Any] = {
            "environment": env,
            "parallel": args.parallel,
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0 if all(r.verification_errors == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
