"""Benchmark: how fast ORBIT's engine recovers from faults injected in a migration.

Each scenario migrates a guest that rewrites its whole working set (128 MiB RAM, 96 MiB
working set; 256/200 MiB for the flapping link, so that the migration outlasts the flaps)
from h1 to h2 over a link shaped to 100 mbit/s, with post-copy from the start (the VM runs
on the destination while its memory is split), and injects one fault:

- ``link-cut-3s``, ``link-cut-20s``, ``link-cut-60s``: h2's link down that long during
  post-copy, then back;
- ``link-flapping``: h2's link down 2 s, up 4 s, five times (30 s) during post-copy;
- ``precopy-link-cut``: h2's link cut during pre-copy: the migration fails, the VM stays
  on h1; the link comes back once the migration has ended;
- ``dst-libvirtd-restart``, ``src-libvirtd-restart``: that host's libvirtd killed
  (SIGKILL) during post-copy and started again; its QEMUs run on;
- ``loss-10pct``: 10 % packet loss on h2's link (plus 20 ms delay where the kernel has
  netem) for the whole migration.

Every figure is on one clock (the benchmark's monotonic clock), per run:

- ``outage_s``: how long the fault lasted (link down; daemon down until it listens again;
  for the flapping link, its longest cut);
- ``flowing_after_s``: from the link's (or the daemon's) return until the migration moves
  bytes again: the first of two consecutive samples after the return whose bytes grew
  (at most one sampling interval, 0.25 s, late); for the flapping link, the worst return;
  "-" when the migration ended before two more samples;
- ``guest_stall_ms``, ``guest_stalled_ms``: the guest's longest stall and its total stalled
  time from the request until the migration ended, on the same clock: each heartbeat line
  (one per 100 ms of the guest's own time) is stamped as it arrives in the serial log
  (orbit/lab/guest_clock.py), whatever the guest's own clock does while QEMU stops it; an
  interval over 150 ms counts as its length minus 100 ms;
- ``stall_minus_outage_s``: the longest stall minus the outage: what ORBIT and libvirt
  added to the fault (none for the pre-copy cut: the guest runs on through it);
- ``total_s``: from the migration's request until it ended; verification errors after it.

Each scenario runs ``--runs`` times (default 5); the table shows the median of each figure
and the worst error count. Prints the table and writes JSON with every run.

    sudo .venv/bin/python -m benchmarks.faults --json benchmarks/results/kvm/faults.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import environment
from orbit.errors import GuestError
from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.guest_clock import HeartbeatClock, stalls
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import list_domains
from orbit.lab.network import Shaping, netem_available
from orbit.migration.engine import Migration, MigrationListener, MigrationRequest
from orbit.migration.model import Action, MigrationSettings, Sample
from orbit.migration.phase import Phase
from orbit.virt.libvirt_driver import LibvirtDriver

GUEST = GuestSpec("fb", memory_mib=128, wss_mib=96, rate_mib_s=0)
BIG_GUEST = GuestSpec("fb", memory_mib=256, wss_mib=200, rate_mib_s=0)
LINK_RATE = "100mbit"
PRECOPY_STALL_S = 4.0
FLAPS = 5
FLAP_DOWN_S = 2.0
FLAP_UP_S = 4.0
TIMEOUT_S = 240.0


@dataclass
class FaultRun:
    scenario: str
    outcome: str
    ended_on: str
    outage_s: float | None
    flowing_after_s: float | None
    guest_stall_ms: float | None
    guest_stalled_ms: float | None
    stall_minus_outage_s: float | None
    total_s: float
    verification_errors: int
    pauses: int
    resume_attempts: int
    error: str | None = None
    note: str = ""


@dataclass
class _Samples(MigrationListener):
    """Every sample the engine takes, stamped on the benchmark's clock."""

    seen: list[tuple[float, int]] = field(default_factory=list)

    def on_sample(self, sample: Sample) -> None:
        self.seen.append(
            (time.monotonic(), sample.memory_processed_bytes + sample.disk_processed_bytes)
        )

    def flowing_after(self, back_at: float) -> float | None:
        """Seconds from ``back_at`` until bytes grew between two samples both taken after
        it (None: never, or the migration ended before two more samples)."""
        after = [(t, sent) for t, sent in list(self.seen) if t >= back_at]
        for (_, prev), (t, sent) in itertools.pairwise(after):
            if sent > prev:
                return t - back_at
        return None


def _until(cond: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def _postcopy_underway(m: Migration) -> bool:
    return m.phase is Phase.RUNNING_POSTCOPY and sum(s.postcopy for s in m.result.samples) >= 4


def _cut_for(lab: Lab, host: str, seconds: float) -> tuple[float, float]:
    """Cut ``host``'s link for ``seconds`` (the fault's length); (down at, back at)."""
    lab.cut(host)
    down = time.monotonic()
    time.sleep(seconds)
    lab.restore(host)
    return down, time.monotonic()


def run_scenario(lab: Lab, guests: Guests, driver: LibvirtDriver, scenario: str) -> FaultRun:
    """One run of ``scenario``, the guest's heartbeats stamped on the benchmark's clock."""
    guest = BIG_GUEST if scenario == "link-flapping" else GUEST
    with HeartbeatClock(guests, guest.name) as clock:
        return _run_scenario(lab, guests, driver, scenario, guest, clock)


def _run_scenario(
    lab: Lab,
    guests: Guests,
    driver: LibvirtDriver,
    scenario: str,
    guest: GuestSpec,
    clock: HeartbeatClock,
) -> FaultRun:
    src, dst = lab.host("h1"), lab.host("h2")
    note = ""
    if scenario == "loss-10pct":
        delay = "20ms" if netem_available() else None
        note = "" if delay else "no netem in this kernel: loss only, no delay"
        lab.shape("h2", Shaping(loss="10%", delay=delay))
    guests.start(src.name, guest)
    if not clock.wait_for(lambda a: len(a) >= 6, TIMEOUT_S):
        raise GuestError(f"guest {guest.name} gave no heartbeats")
    beats = clock.arrivals()
    before = stalls([b.at_s for b in beats], beats[0].at_s, beats[-1].at_s)
    if scenario == "precopy-link-cut":
        settings = MigrationSettings.resolve(stall_timeout_s=PRECOPY_STALL_S)
    else:
        settings = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=0)
    samples = _Samples()
    m = Migration(
        driver,
        MigrationRequest(guest.name, src.uri, dst.uri, settings, dst.migration_uri),
        listener=samples,
    )
    thread = threading.Thread(target=m.run, daemon=True)
    started = time.monotonic()
    thread.start()
    outages: list[tuple[float, float]] = []  # (fault began, fault over)
    try:
        if scenario.startswith("link-cut-"):
            _until(lambda: _postcopy_underway(m))
            outages.append(_cut_for(lab, dst.name, float(scenario.split("-")[-1].rstrip("s"))))
        elif scenario == "link-flapping":
            _until(lambda: _postcopy_underway(m))
            for _ in range(FLAPS):
                if not thread.is_alive():
                    break
                outages.append(_cut_for(lab, dst.name, FLAP_DOWN_S))
                time.sleep(FLAP_UP_S)  # the link's up time between cuts
            if len(outages) < FLAPS:
                note = f"the migration ended after {len(outages)} of {FLAPS} cuts"
        elif scenario == "precopy-link-cut":
            _until(lambda: len(m.result.samples) >= 4)
            lab.cut(dst.name)
            down = time.monotonic()
            thread.join(TIMEOUT_S)
            lab.restore(dst.name)
            outages.append((down, time.monotonic()))
        elif scenario in ("dst-libvirtd-restart", "src-libvirtd-restart"):
            host = dst if scenario.startswith("dst") else src
            _until(lambda: _postcopy_underway(m))
            down = time.monotonic()
            lab.restart_libvirtd(host.name)  # returns once the new daemon listens
            outages.append((down, time.monotonic()))
        thread.join(TIMEOUT_S)
    finally:
        lab.restore(dst.name)
    ended = time.monotonic()
    clock.wait_for(lambda a: a[-1].at_s > ended, 5.0)  # the first heartbeat after the end
    stalled = stalls([b.at_s for b in clock.arrivals()], started, ended)
    if thread.is_alive():  # still migrating: say so, never record it as finished
        note = f"did not end within {TIMEOUT_S:.0f} s; {note}".rstrip("; ")
    r = m.result
    running = [h.name for h in lab.hosts() if list_domains(h.uri).get(guest.name) == "running"]
    where = running[0] if len(running) == 1 else ",".join(running) or "none"
    verified = None
    if len(running) == 1:
        try:
            verified = guests.wait_verified(running[0], guest.name)
        except GuestError as err:  # a guest that stands still: record it, go on
            note = f"{err}; {note}".rstrip("; ")
    outage = max((back - down for down, back in outages), default=None)
    flowing: float | None = None
    if outages and scenario != "precopy-link-cut":
        # a return after the last sample (the migration had ended) has nothing to measure
        last = samples.seen[-1][0] if samples.seen else 0.0
        after = [samples.flowing_after(back) for _, back in outages if back < last]
        known = [a for a in after if a is not None]
        flowing = max(known) if known and len(known) == len(after) else None
    run = FaultRun(
        scenario=scenario,
        outcome=r.phase.value if not thread.is_alive() else f"still {r.phase.value}",
        ended_on=where,
        outage_s=_round(outage),
        flowing_after_s=_round(flowing),
        guest_stall_ms=stalled.longest_ms if verified else None,
        guest_stalled_ms=stalled.total_ms if verified else None,
        stall_minus_outage_s=(
            _round(stalled.longest_ms / 1000 - outage)
            if outage is not None and verified and scenario != "precopy-link-cut"
            else None  # a pre-copy's guest runs on through the cut: there is no stall to add
        ),
        total_s=round(ended - started, 2),
        verification_errors=(verified.errors if verified else -1),
        pauses=sum(d.action is Action.PAUSE_POSTCOPY for d in r.decisions),
        resume_attempts=r.resume_attempts,
        error=r.error,
        note=note or (f"guest stalled before: {before.longest_ms:.0f} ms" if before.count else ""),
    )
    guests.destroy(guest.name)
    lab.shape(dst.name, Shaping())
    return run


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


SCENARIOS = (
    "link-cut-3s",
    "link-cut-20s",
    "link-cut-60s",
    "link-flapping",
    "precopy-link-cut",
    "dst-libvirtd-restart",
    "src-libvirtd-restart",
    "loss-10pct",
)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def summarize(runs: list[FaultRun]) -> list[dict[str, object]]:
    """One row per scenario: medians over its runs, the worst error count, all outcomes."""
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == scenario]
        rows.append({
            "scenario": scenario,
            "runs": len(mine),
            "outcomes": sorted({f"{r.outcome} on {r.ended_on}" for r in mine}),
            "outage_s": _median([r.outage_s for r in mine]),
            "flowing_after_s": _median([r.flowing_after_s for r in mine]),
            "stall_minus_outage_s": _median([r.stall_minus_outage_s for r in mine]),
            "guest_stalled_ms": _median([r.guest_stalled_ms for r in mine]),
            "total_s": _median([r.total_s for r in mine]),
            "verification_errors": max(r.verification_errors for r in mine),
            "resume_attempts": _median([float(r.resume_attempts) for r in mine]),
        })  # fmt: skip
    return rows


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, object]]) -> None:
    cols = [
        ("scenario", 22), ("runs", 5), ("outcomes", 26), ("outage_s", 9),
        ("flowing_after_s", 16), ("stall_minus_outage_s", 21), ("guest_stalled_ms", 17),
        ("total_s", 9),
        ("verification_errors", 8), ("resume_attempts", 8),
    ]  # fmt: skip
    heads = {"verification_errors": "errors", "resume_attempts": "resumes"}
    line = "".join(f"{heads.get(c, c):>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(cols))
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = []
        for i, (c, w) in enumerate(cols):
            v = row[c]
            text = ", ".join(v) if isinstance(v, list) else _fmt(v)
            cells.append(f"{text:<{w}}" if i == 0 else f"{text:>{w}}")
        print("".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the runs and the medians here")
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="run only these")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    logging.basicConfig(level=logging.WARNING)
    lab = Lab.from_env()
    runs: list[FaultRun] = []
    with lab.session(2):
        env = environment.describe(lab, LINK_RATE)
        print(environment.header(env), flush=True)
        lab.shape("h1", Shaping(rate=LINK_RATE))
        guests = Guests(lab)
        driver = LibvirtDriver()
        stopped: str | None = None  # why the benchmark ended early (the runs so far stay)
        try:
            for n in range(args.runs):
                for scenario in args.only or SCENARIOS:
                    try:
                        run = run_scenario(lab, guests, driver, scenario)
                    except Exception as err:  # the lab is in an unknown state: stop here
                        stopped = f"run {n + 1} {scenario}: {type(err).__name__}: {err}"
                        break
                    runs.append(run)
                    print(f"  run {n + 1} {scenario}: {run.outcome} on {run.ended_on}, "
                          f"back->flowing {_fmt(run.flowing_after_s)} s, stall-outage "
                          f"{_fmt(run.stall_minus_outage_s)} s, {run.verification_errors} errors",
                          flush=True)  # fmt: skip
                if stopped:
                    break
        finally:
            driver.close()
    rows = summarize(runs)
    print()
    print(environment.header(env))
    print(f"median of {args.runs} run(s) per scenario; seconds on one monotonic clock")
    print_table(rows)
    notes = {  # what a row cannot show: a fault not injected as asked, a run cut short
        (r.scenario, r.note)
        for r in runs
        if r.note and not r.note.startswith("guest stalled before")
    }
    for scenario, note in sorted(notes):
        print(f"  note {scenario}: {note}")
    for r in runs:
        if r.outcome != "completed" and r.scenario != "precopy-link-cut":
            print(f"  {r.scenario}: {r.outcome} on {r.ended_on}: {r.error}")
    if stopped:
        print(f"  stopped early: {stopped}")
    if args.json:
        doc = {
            "environment": env,
            "stopped_early": stopped,
            "runs_per_scenario": args.runs,
            "summary": rows,
            "runs": [asdict(r) | {"accelerator": env["accelerator"]} for r in runs],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {len(runs)} runs to {args.json}")
    ok = all(r.verification_errors == 0 and "," not in r.ended_on for r in runs)
    return 0 if ok and not stopped else 1


if __name__ == "__main__":
    sys.exit(main())
