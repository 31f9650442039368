"""Benchmark: which switch policy finishes a live migration, how fast, at what cost.

Runs the matrix {quiet, moderate, full-RAM dirtier} x {precopy, postcopy-after-0,
postcopy-after-1, auto} plus libvirt's own ``virsh migrate --postcopy
--postcopy-after-precopy`` as the reference, each a real migration between two lab hosts
over a link shaped with tc (QEMU's bandwidth cap stops applying in post-copy, the link's
does not). Prints a table and writes JSON (a list of runs).

    sudo .venv/bin/python -m benchmarks.policies [--quick] --json results.json

Per run:
- ``converged``: the migration completed (pre-copy may give up at its completion timeout);
- ``total_s`` and ``limit_ratio``: wall time, and its ratio to the physical limit
  (RAM / link rate): 1.0 would be the guest's RAM sent once at line rate;
- ``downtime_ms``: QEMU's measure of the pause at the switch-over;
- ``bytes_over_ram``: memory sent / RAM;
- ``iterations``, ``postcopy_requests``: QEMU's counters;
- ``guest_slowdown``: 1 - (pages the guest wrote per second of its own time during the
  migration) / (the same before it): what the migration cost the workload (0 = nothing);
- ``verification_errors``: pages the guest found wrong after the migration (must be 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import environment
from orbit.lab.guest import Guests, GuestSpec, Heartbeat
from orbit.lab.lab import Lab, LabHost
from orbit.lab.network import Shaping, rate_bits_s
from orbit.migration.engine import Migration, MigrationRequest
from orbit.migration.model import MIB, MigrationSettings
from orbit.migration.phase import Phase
from orbit.virt.driver import EVENT_JOB_COMPLETED, JobStats
from orbit.virt.libvirt_driver import LibvirtDriver

WARM_UP_BEATS = 10  # heartbeats before the migration starts (1 s)
BASELINE_BEATS = 5  # heartbeats over which the undisturbed write rate is measured
POLICIES = ("precopy", "postcopy-after-0", "postcopy-after-1", "auto", "virsh-postcopy")


@dataclass(frozen=True)
class Workload:
    name: str
    wss_mib: int  # 0 = the whole RAM (minus the guest's own reserve)
    rate_mib_s: int  # 0 = as fast as possible


WORKLOADS = (
    Workload("quiet", wss_mib=8, rate_mib_s=2),
    Workload("moderate-64MiB", wss_mib=64, rate_mib_s=32),
    Workload("full-RAM", wss_mib=0, rate_mib_s=0),
)


@dataclass
class Outcome:
    """What one migration did, from ORBIT's engine or from virsh."""

    converged: bool
    total_s: float
    downtime_ms: int | None = None
    memory_bytes: int = 0
    iterations: int = 0
    postcopy_requests: int = 0
    switch_at_s: float | None = None
    note: str = ""


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
    guest_write_mib_s: float = 0.0  # the guest's undisturbed write rate before migrating
    note: str = ""


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


def write_rate(a: Heartbeat, b: Heartbeat) -> float:
    """Pages per second of guest time between two heartbeats."""
    return (b.pages - a.pages) / max(b.ms - a.ms, 1) * 1000


def run_virsh(src: LabHost, dst: LabHost, name: str, driver: LibvirtDriver) -> Outcome:
    """libvirt's reference: virsh's own post-copy switch after the first pass."""
    final: list[JobStats] = []
    done = threading.Event()

    def on_event(event: str, stats: JobStats | None) -> None:
        if event == EVENT_JOB_COMPLETED and stats is not None:
            final.append(stats)
            done.set()

    unwatch = driver.watch(src.uri, name, on_event)
    started = time.monotonic()
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
    out = Outcome(converged=proc.returncode == 0, total_s=total, note=proc.stderr.strip())
    if final:
        out.downtime_ms = final[0].downtime_ms
        out.memory_bytes = final[0].memory_processed_bytes
        out.iterations = final[0].iteration
        out.postcopy_requests = final[0].postcopy_requests
    return out


def run_engine(
    src: LabHost, dst: LabHost, name: str, driver: LibvirtDriver, settings: MigrationSettings
) -> Outcome:
    request = MigrationRequest(name, src.uri, dst.uri, settings, dst.migration_uri)
    result = Migration(driver, request).run()
    converged = result.phase is Phase.COMPLETED
    return Outcome(
        converged=converged,
        total_s=result.total_s,
        downtime_ms=result.downtime_ms,
        memory_bytes=result.memory_bytes,
        iterations=result.iterations,
        postcopy_requests=result.postcopy_requests,
        switch_at_s=result.switch_at_s,
        note="" if converged else f"{result.phase.value}: {result.error}",
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
    timeout_s: float,
) -> Run:
    src, dst = lab.host("h1"), lab.host("h2")
    name = f"{workload.name}-{policy}".replace("_", "-")
    wss = workload.wss_mib or memory_mib - 32
    spec = GuestSpec(name, memory_mib=memory_mib, wss_mib=wss, rate_mib_s=workload.rate_mib_s)
    first = guests.start(src.name, spec)
    assert first is not None
    base_a = guests.wait_heartbeat(src.name, name, after_seq=first.seq + WARM_UP_BEATS)
    base_b = guests.wait_heartbeat(src.name, name, after_seq=base_a.seq + BASELINE_BEATS - 1)
    baseline = write_rate(base_a, base_b)
    limit_s = memory_mib * MIB * 8 / link_bits_s
    try:
        if policy == "virsh-postcopy":
            out = run_virsh(src, dst, name, driver)
        else:
            out = run_engine(src, dst, name, driver, settings_for(policy, timeout_s))
        where = guests.locate(name)
        assert where is not None
        # the first heartbeat on the final host after the migration, then a verified pass
        after = guests.wait_heartbeat(where.name, name, after_seq=base_b.seq + 1)
        verified = guests.wait_verified(where.name, name)
        slowdown = max(0.0, 1 - write_rate(base_b, after) / baseline) if baseline else 0.0
        return Run(
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
            guest_write_mib_s=round(baseline * 4 / 1024, 1),
            note=out.note,
        )
    finally:
        guests.destroy(name)


def print_table(runs: list[Run]) -> None:
    head = (
        f"{'workload':<16}{'policy':<18}{'conv':<6}{'total s':>8}{'xlimit':>8}"
        f"{'down ms':>9}{'bytes/RAM':>10}{'iter':>6}{'pc req':>8}{'slowdown':>10}"
        f"{'errors':>8}  on"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        print(
            f"{r.workload:<16}{r.policy:<18}{'yes' if r.converged else 'NO':<6}"
            f"{r.total_s:>8.2f}{r.limit_ratio:>8.2f}"
            f"{r.downtime_ms if r.downtime_ms is not None else '-':>9}"
            f"{r.bytes_over_ram:>10.2f}{r.iterations:>6}{r.postcopy_requests:>8}"
            f"{r.guest_slowdown:>10.1%}{r.verification_errors:>8}  {r.ended_on}"
        )


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
            for workload in WORKLOADS:
                for policy in POLICIES:
                    run = one_run(
                        lab,
                        guests,
                        driver,
                        workload,
                        policy,
                        memory_mib=memory_mib,
                        link_bits_s=link_bits_s,
                        timeout_s=timeout_s,
                    )
                    runs.append(run)
                    print(
                        f"  {run.workload} / {run.policy}: "
                        f"{'converged' if run.converged else 'did not converge'} "
                        f"in {run.total_s:.1f} s, {run.verification_errors} errors",
                        flush=True,
                    )
        finally:
            driver.close()
    print()
    print(environment.header(env))
    print_table(runs)
    if args.json:
        meta = {"memory_mib": memory_mib, "link": args.rate, "limit_s": round(limit_s, 2)}
        doc = {
            "environment": env,
            "runs": [asdict(r) | meta | {"accelerator": env["accelerator"]} for r in runs],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {len(runs)} runs to {args.json}")
    return 0 if all(r.verification_errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
