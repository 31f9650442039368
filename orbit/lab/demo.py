"""``make demo``: a two-host lab, a memory-dirtying guest, one post-copy live migration.

The migration runs through ORBIT's engine on the real libvirt driver with the seed's
behaviour: pre-copy first, post-copy after the first complete memory iteration. The guest
dirties all of its working set as fast as it can, so pre-copy alone would not converge.
"""

from __future__ import annotations

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.network import Shaping, rate_bits_s
from orbit.migration.engine import DecisionRecord, Migration, MigrationListener, MigrationRequest
from orbit.migration.model import MIB, MigrationSettings, Sample
from orbit.migration.phase import Phase
from orbit.virt.libvirt_driver import LibvirtDriver

GUEST = "demo-vm"
POST_MIGRATION_BEATS = 10  # heartbeats to see on the destination after the migration
PRINT_EVERY_S = 0.5


class _Printer(MigrationListener):
    """Prints the migration's progress as it happens."""

    def __init__(self) -> None:
        self._last_print = -PRINT_EVERY_S

    def on_phase(self, phase: Phase, at_s: float, reason: str) -> None:
        print(f"  t={at_s:5.2f} s  phase -> {phase.value}" + (f" ({reason})" if reason else ""))

    def on_sample(self, sample: Sample) -> None:
        if sample.elapsed_s - self._last_print < PRINT_EVERY_S:
            return
        self._last_print = sample.elapsed_s
        print(
            f"  t={sample.elapsed_s:5.2f} s  iteration={sample.iteration}  "
            f"remaining={sample.memory_remaining_bytes / MIB:6.1f} MiB  "
            f"transfer={sample.bandwidth_bytes_s / MIB:5.1f} MiB/s  "
            f"dirty={sample.dirty_rate_bytes_s / MIB:5.1f} MiB/s"
            + (f"  post-copy requests={sample.postcopy_requests}" if sample.postcopy else "")
        )

    def on_decision(self, record: DecisionRecord) -> None:
        print(f"  t={record.at_s:5.2f} s  {record.source}: {record.action.value}: {record.reason}")


def run_demo(*, memory_mib: int = 512, rate: str = "400mbit") -> int:
    lab = Lab.from_env()
    print(
        f"== ORBIT demo: post-copy live migration of a {memory_mib} MiB guest "
        f"dirtying its whole working set, link {rate}"
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
        settings = MigrationSettings.resolve(post_copy=True, post_copy_after_iterations=1)
        print(
            f"migrating {GUEST} {h1.name} -> {h2.name}: policy {settings.policy.value}, "
            f"post-copy after {settings.post_copy_after_iterations} iteration(s)"
        )
        driver = LibvirtDriver()
        try:
            request = MigrationRequest(
                GUEST, h1.uri, h2.uri, settings, dst_migration_uri=h2.migration_uri
            )
            result = Migration(driver, request, listener=_Printer()).run()
        finally:
            driver.close()
        if result.phase is not Phase.COMPLETED:
            print(f"migration {result.phase.value} after {result.total_s:.1f} s: {result.error}")
            return 1
        src_beats = guests.heartbeats(h1.name, GUEST)
        first_dst = guests.wait_heartbeat(h2.name, GUEST)
        after = guests.wait_heartbeat(
            h2.name, GUEST, after_seq=first_dst.seq + POST_MIGRATION_BEATS
        )
        dst_beats = guests.heartbeats(h2.name, GUEST)
        where = guests.locate(GUEST)
        seq_gap = dst_beats[0].seq - src_beats[-1].seq
        print("== result")
        print(f"  where now          : {where.name if where else '?'}")
        print(
            f"  total time         : {result.total_s:.2f} s "
            f"(switch to post-copy at {result.switch_at_s or 0:.2f} s); "
            f"physical limit {memory_mib * MIB * 8 / rate_bits_s(rate):.2f} s"
        )
        print(f"  downtime           : {result.downtime_ms} ms")
        print(
            f"  memory sent        : {result.memory_bytes / MIB:.0f} MiB "
            f"= {result.memory_bytes / (memory_mib * MIB):.2f} x RAM"
        )
        print(f"  memory iterations  : {result.iterations}")
        print(f"  post-copy requests : {result.postcopy_requests}")
        print(
            f"  heartbeat          : last on {h1.name} seq={src_beats[-1].seq}, first on "
            f"{h2.name} seq={dst_beats[0].seq} (continuous: {seq_gap <= 2})"
        )
        print(f"  verification errors: {after.errors} (after {after.passes} passes)")
        ok = after.errors == 0 and seq_gap <= 2 and where is not None and where.name == h2.name
    print("lab down: every namespace, libvirtd and QEMU removed")
    print("demo " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1
