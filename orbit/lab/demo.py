"""``make demo``: a two-host lab, a memory-dirtying guest, one post-copy live migration.

It drives libvirt directly: pre-copy first, then ``migrateStartPostCopy`` once the first
memory iteration is done (the seed's behaviour). The migration engine (orbit.migration)
takes this over with its policies; the demo stays a readable end-to-end check of the lab.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import libvirt

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import connection, start_event_loop
from orbit.lab.network import Shaping

SAMPLE_INTERVAL_S = 0.25
MIGRATION_TIMEOUT_S = 300.0
POST_MIGRATION_BEATS = 10  # heartbeats to see on the destination after the migration
GUEST = "demo-vm"
MIB = 1024 * 1024


@dataclass
class DemoResult:
    total_s: float = 0.0
    switch_after_s: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def migrate_postcopy(src_uri: str, dst_uri: str, dst_migration_uri: str, name: str) -> DemoResult:
    """Migrate ``name`` with post-copy permitted; switch after the first memory iteration."""
    result = DemoResult()
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_POSTCOPY
    )
    done = threading.Event()

    def run() -> None:  # migrateToURI3 blocks its connection: it gets one of its own
        try:
            with connection(src_uri) as conn:
                conn.lookupByName(name).migrateToURI3(
                    dst_uri, {libvirt.VIR_MIGRATE_PARAM_URI: dst_migration_uri}, flags
                )
        except Exception as err:  # reported below, in the main thread
            result.error = str(err)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, name="migrate", daemon=True).start()
    with connection(src_uri) as monitor:
        dom = monitor.lookupByName(name)
        while not done.wait(SAMPLE_INTERVAL_S):
            elapsed = time.monotonic() - started
            if elapsed > MIGRATION_TIMEOUT_S:
                dom.abortJob()
                break
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:
                continue
            iteration = int(stats.get("memory_iteration", 0))
            remaining = int(stats.get("memory_remaining", 0))
            print(
                f"  t={elapsed:5.1f} s  iteration={iteration}  "
                f"remaining={remaining / MIB:7.1f} MiB  "
                f"rate={int(stats.get('memory_bps', 0)) / MIB:6.1f} MiB/s"
                + ("  [post-copy]" if result.switch_after_s is not None else "")
            )
            if result.switch_after_s is None and iteration >= 2:
                dom.migrateStartPostCopy()
                result.switch_after_s = elapsed
                print(
                    f"  -> switched to post-copy after {elapsed:.1f} s "
                    f"(first memory iteration done)"
                )
    result.total_s = time.monotonic() - started
    if result.error is None:
        with connection(dst_uri) as conn:
            result.stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return result


def run_demo(*, memory_mib: int = 512, rate: str = "800mbit") -> int:
    lab = Lab.from_env()
    start_event_loop()
    print(
        f"== ORBIT demo: post-copy live migration of a {memory_mib} MiB guest "
        f"dirtying all its memory, link {rate}"
    )
    with lab.session(2) as (h1, h2):
        print(f"lab up: {h1.name} {h1.uri}, {h2.name} {h2.uri}")
        lab.shape(h1.name, Shaping(rate=rate))
        guests = Guests(lab)
        wss = memory_mib - 32
        first = guests.start(
            h1.name, GuestSpec(GUEST, memory_mib=memory_mib, wss_mib=wss, rate_mib_s=0)
        )
        assert first is not None
        warm = guests.wait_heartbeat(h1.name, GUEST, after_seq=first.seq + 10)
        print(
            f"guest {GUEST} on {h1.name}: working set {wss} MiB, dirtying "
            f"{warm.rate_kib_s / 1024:.0f} MiB/s (heartbeat seq={warm.seq})"
        )
        print(f"migrating {GUEST} {h1.name} -> {h2.name} (pre-copy, then post-copy):")
        result = migrate_postcopy(h1.uri, h2.uri, h2.migration_uri, GUEST)
        if result.error:
            print(f"migration FAILED after {result.total_s:.1f} s: {result.error}")
            return 1
        src_beats = guests.heartbeats(h1.name, GUEST)
        first_dst = guests.wait_heartbeat(h2.name, GUEST)
        after = guests.wait_heartbeat(
            h2.name, GUEST, after_seq=first_dst.seq + POST_MIGRATION_BEATS
        )
        dst_beats = guests.heartbeats(h2.name, GUEST)
        s = result.stats
        print("== result")
        print(f"  where now          : {guests.locate(GUEST).name}")  # type: ignore[union-attr]
        print(
            f"  total time         : {result.total_s:.2f} s "
            f"(switch to post-copy at {result.switch_after_s or 0:.2f} s)"
        )
        print(f"  downtime           : {s.get('downtime', 0)} ms")
        print(
            f"  memory sent        : {int(s.get('memory_processed', 0)) / MIB:.0f} MiB "
            f"= {int(s.get('memory_processed', 0)) / (memory_mib * MIB):.2f} x RAM"
        )
        print(f"  memory iterations  : {s.get('memory_iteration', '?')}")
        print(f"  post-copy requests : {s.get('memory_postcopy_requests', '?')}")
        print(
            f"  heartbeat          : last on {h1.name} seq={src_beats[-1].seq}, first on "
            f"{h2.name} seq={dst_beats[0].seq}, longest gap seen by the guest "
            f"{after.max_gap_ms} ms"
        )
        print(f"  verification errors: {after.errors} (after {after.passes} passes)")
        ok = after.errors == 0 and dst_beats[0].seq - src_beats[-1].seq <= 2
    print("lab down: every namespace, libvirtd and QEMU removed")
    print("demo " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1
