"""The test guest on a real lab host: boots fast, dirties at the rate asked, checks itself."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from orbit.errors import ConfigError
from orbit.lab.guest import (
    PROBE_MIN_RATE_MIB_S,
    Guests,
    GuestSpec,
    Heartbeat,
    firmware,
    parse_heartbeat,
    probe_verdict,
)
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import connection
from orbit.migration.model import MIB
from orbit.virt.libvirt_driver import LibvirtDriver
from tests.helpers import run_orbit

FIRST_HEARTBEAT_LIMIT_S = 2.0
RATE_TOLERANCE = 0.10
HEARTBEAT_MS = 100
#: the longest gap between two heartbeats of an undisturbed guest (guest time); on a
#: busy 2-core host its vCPU may be descheduled for a while, so not exactly 100 ms
MAX_HEARTBEAT_GAP_MS = 300
PAGE_KIB = 4
#: heartbeats (100 ms each) over which the dirty rate is measured
RATE_WINDOW_BEATS = 15


def _measured_rate_mib_s(a: Heartbeat, b: Heartbeat) -> float:
    """Dirty rate between two heartbeats, from the guest's page counter and its own clock."""
    return (b.pages - a.pages) * PAGE_KIB / 1024 / ((b.ms - a.ms) / 1000)


def test_guest_boots_and_heartbeats_within_two_seconds(lab: Lab, guests: Guests) -> None:
    started = time.monotonic()
    first = guests.start("h1", GuestSpec("boot", memory_mib=128, wss_mib=16, rate_mib_s=4))
    elapsed = time.monotonic() - started
    assert first is not None and first.seq >= 1
    assert elapsed < FIRST_HEARTBEAT_LIMIT_S, f"first heartbeat after {elapsed:.2f} s"
    later = guests.wait_heartbeat("h1", "boot", after_seq=first.seq + 3)
    assert later.seq > first.seq and later.errors == 0


@pytest.mark.parametrize("rate_mib_s", [5, 20, 60])
def test_dirty_rate_matches_the_request(lab: Lab, guests: Guests, rate_mib_s: int) -> None:
    name = f"rate{rate_mib_s}"
    first = guests.start("h1", GuestSpec(name, memory_mib=192, wss_mib=128, rate_mib_s=rate_mib_s))
    assert first is not None
    a = guests.wait_heartbeat("h1", name, after_seq=first.seq + 2)  # past the start-up
    b = guests.wait_heartbeat("h1", name, after_seq=a.seq + RATE_WINDOW_BEATS)
    measured = _measured_rate_mib_s(a, b)
    assert abs(measured - rate_mib_s) <= RATE_TOLERANCE * rate_mib_s, (
        f"asked {rate_mib_s} MiB/s, measured {measured:.1f} MiB/s over {b.ms - a.ms} ms"
    )
    assert b.errors == 0
    # the heartbeat keeps its 100 ms grid (guest time) while the guest paces its writes
    window = [hb for hb in guests.heartbeats("h1", name) if a.seq <= hb.seq <= b.seq]
    gaps = sorted(y.ms - x.ms for x, y in itertools.pairwise(window))
    assert len(gaps) >= RATE_WINDOW_BEATS
    assert abs(gaps[len(gaps) // 2] - HEARTBEAT_MS) <= 5, gaps
    assert gaps[-1] <= MAX_HEARTBEAT_GAP_MS, gaps


def test_corrupted_page_is_detected(lab: Lab, guests: Guests) -> None:
    first = guests.start(
        "h1", GuestSpec("corrupt", memory_mib=64, wss_mib=8, rate_mib_s=8, corrupt=True)
    )
    assert first is not None
    deadline = time.monotonic() + 10.0
    hb = first
    while hb.errors == 0 and time.monotonic() < deadline:
        hb = guests.wait_heartbeat("h1", "corrupt", after_seq=hb.seq)
    assert hb.errors > 0, f"the checker missed the corrupted page: {hb}"


def test_heartbeat_cli_prints_json_wherever_the_guest_runs(lab: Lab, guests: Guests) -> None:
    guests.start("h2", GuestSpec("hbcli", memory_mib=64, wss_mib=8, rate_mib_s=2))
    proc = run_orbit("lab", "guest", "heartbeat", "hbcli")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["host"] == "h2" and doc["name"] == "hbcli"
    assert doc["seq"] >= 1 and doc["errors"] == 0 and doc["pages"] > 0


def test_guest_runs_on_the_accelerator_the_lab_chose(lab: Lab, guests: Guests) -> None:
    """KVM guests without the TCG work-around, TCG guests with it; qboot when installed."""
    accel, why = lab.accelerator()
    assert accel in ("kvm", "tcg") and why
    guests.start("h1", GuestSpec("accel", memory_mib=64, wss_mib=8, rate_mib_s=2))
    with connection(lab.host("h1").uri) as conn:
        xml = conn.lookupByName("accel").XMLDesc(0)
    assert f"type='{'kvm' if accel == 'kvm' else 'qemu'}'" in xml.split(">", 1)[0]
    assert f"tlbflush={int(accel == 'tcg')}" in xml
    rom = firmware()
    assert (rom is not None and str(rom) in xml) or (rom is None and "<loader" not in xml)
    hb = guests.wait_heartbeat("h1", "accel", after_seq=2)
    assert hb.errors == 0


@pytest.mark.parametrize(
    ("rates_kib_s", "accel"),
    [
        ([3_800_000, 3_900_000, 3_700_000], "kvm"),  # native: GiB/s
        ([PROBE_MIN_RATE_MIB_S * 1024] * 3, "kvm"),  # exactly the threshold
        ([900, 1_000, 800], "tcg"),  # emulated instruction by instruction: ~1 MiB/s
        ([3_800_000, 90_000, 80_000], "tcg"),  # the median decides, not one fast beat
        ([], "tcg"),  # no heartbeat at all
    ],
)
def test_probe_verdict(rates_kib_s: list[int], accel: str) -> None:
    got, why = probe_verdict(rates_kib_s)
    assert got == accel and why


#: libvirt's dirty-rate calculation against the guest's own write rate: dirty-bitmap (KVM)
#: counts every dirtied page; page-sampling (TCG) hashes ~512 pages per GiB, an estimate
#: (measured 50-82 MiB/s for a guest writing 60 MiB/s)
DIRTY_RATE_TOLERANCE = {"dirty-bitmap": 0.30, "page-sampling": 0.50}


@pytest.mark.parametrize("rate_mib_s", [20, 60])
def test_hypervisor_measures_the_guests_dirty_rate(
    lab: Lab, guests: Guests, rate_mib_s: int
) -> None:
    name = f"dirty{rate_mib_s}"
    guests.start("h1", GuestSpec(name, memory_mib=192, wss_mib=128, rate_mib_s=rate_mib_s))
    driver = LibvirtDriver()
    try:
        measured = driver.measure_dirty_rate(lab.host("h1").uri, name, period_s=1)
    finally:
        driver.close()
    expected_mode = "dirty-bitmap" if lab.accelerator()[0] == "kvm" else "page-sampling"
    assert measured.mode == expected_mode and measured.period_s == 1
    mib_s = measured.bytes_s / MIB
    assert abs(mib_s - rate_mib_s) <= DIRTY_RATE_TOLERANCE[measured.mode] * rate_mib_s, (
        f"guest writes {rate_mib_s} MiB/s, {measured.mode} measured {mib_s:.1f} MiB/s"
    )


def test_guest_spec_cold_and_quiet_are_validated() -> None:
    """No lab: cold memory counts against the guest's RAM; negative values are refused."""
    GuestSpec("g", memory_mib=256, wss_mib=16, cold_mib=216).validate()  # 16+216+24 = 256
    with pytest.raises(ConfigError, match="--cold-mib 217: the guest needs at least 257 MiB"):
        GuestSpec("g", memory_mib=256, wss_mib=16, cold_mib=217).validate()
    with pytest.raises(ConfigError, match="--cold-mib must be >= 0"):
        GuestSpec("g", cold_mib=-1).validate()
    with pytest.raises(ConfigError, match="more than the guest's 3072 MiB"):
        GuestSpec("g", memory_mib=8192, wss_mib=1024, cold_mib=2049).validate()
    with pytest.raises(ConfigError, match=r"--quiet-s must be 0\.\.3600"):
        GuestSpec("g", quiet_s=-1).validate()
    with pytest.raises(ConfigError, match=r"--quiet-s must be 0\.\.3600"):
        GuestSpec("g", quiet_s=3601).validate()


def test_guest_cmdline_has_cold_and_quiet_only_when_set() -> None:
    plain = GuestSpec("g", wss_mib=16, rate_mib_s=5).cmdline()
    assert plain == "wss_mib=16 rate_mib_s=5 pattern=seq corrupt=0 tlbflush=0"
    assert "cold_mib" not in plain and "quiet_s" not in plain
    both = GuestSpec("g", wss_mib=16, rate_mib_s=5, cold_mib=160, quiet_s=3).cmdline()
    assert both == plain + " cold_mib=160 quiet_s=3"
    assert GuestSpec("g", quiet_s=2).cmdline().endswith("tlbflush=0 quiet_s=2")
    assert GuestSpec("g", prefill=True).cmdline().endswith("tlbflush=0 prefill=1")


def test_heartbeat_parser_reads_cold_checked_when_present() -> None:
    old = "HB seq=1 ms=100 pages=26 passes=0 errors=0 rate_kib_s=1039 max_gap_ms=100"
    hb = parse_heartbeat(old)
    assert hb is not None and hb.cold_checked == 0  # a guest build without the field
    hb = parse_heartbeat(old + " cold_checked=512")
    assert hb is not None and hb.cold_checked == 512 and hb.max_gap_ms == 100


QUIET_S = 3
QUIET_RATE_LIMIT_MIB_S = 2.0


def test_quiet_start_then_the_configured_rate(lab: Lab, guests: Guests) -> None:
    """~1 MiB/s for quiet_s seconds of guest time, then rate_mib_s (no burst in between)."""
    rate = 50
    spec = GuestSpec("quiet", memory_mib=192, wss_mib=128, rate_mib_s=rate, quiet_s=QUIET_S)
    first = guests.start("h1", spec)
    assert first is not None
    start_line = next(
        line
        for line in guests.serial_log("h1", "quiet").read_text().splitlines()
        if line.startswith("ORBIT-GUEST start")
    )
    assert f" quiet_s={QUIET_S} " in start_line and " cold_mib=0 " in start_line
    hb = first
    while hb.ms < 2000:
        hb = guests.wait_heartbeat("h1", "quiet", after_seq=hb.seq)
    quiet = [b for b in guests.heartbeats("h1", "quiet") if b.ms <= 2000]
    quiet_rate = _measured_rate_mib_s(quiet[0], quiet[-1])
    assert quiet[-1].ms - quiet[0].ms >= 1500, quiet
    assert 0.5 <= quiet_rate <= QUIET_RATE_LIMIT_MIB_S, f"{quiet_rate:.2f} MiB/s while quiet"
    while hb.ms < (QUIET_S + 1) * 1000:
        hb = guests.wait_heartbeat("h1", "quiet", after_seq=hb.seq)
    later = guests.wait_heartbeat("h1", "quiet", after_seq=hb.seq + RATE_WINDOW_BEATS)
    full_rate = _measured_rate_mib_s(hb, later)
    assert abs(full_rate - rate) <= RATE_TOLERANCE * rate, (
        f"asked {rate} MiB/s after the quiet start, measured {full_rate:.1f} MiB/s"
    )
    assert later.errors == 0


COLD_MIB = 160
COLD_CHECK_PAGES = 256  # cold pages the guest verifies per heartbeat


def _rss_mib(lab: Lab, host: str, name: str) -> float:
    """Resident memory of the domain's QEMU process (libvirt's memory stats, KiB)."""
    with connection(lab.host(host).uri) as conn:
        stats = conn.lookupByName(name).memoryStats()
    return float(stats["rss"]) / 1024


def test_cold_memory_is_resident_and_checked(lab: Lab, guests: Guests) -> None:
    """cold_mib fills real memory (QEMU's RSS grows by it) that heartbeats keep verifying;
    prefill does the same for the working set."""
    spec = GuestSpec("cold", memory_mib=256, wss_mib=16, rate_mib_s=4, cold_mib=COLD_MIB)
    first = guests.start("h1", spec)
    guests.start("h1", GuestSpec("warm", memory_mib=256, wss_mib=16, rate_mib_s=4))
    prefilled = GuestSpec("full", memory_mib=256, wss_mib=16 + COLD_MIB, rate_mib_s=4, prefill=True)
    guests.start("h1", prefilled)
    assert first is not None and first.cold_checked >= COLD_CHECK_PAGES
    start_line = next(
        line
        for line in guests.serial_log("h1", "cold").read_text().splitlines()
        if line.startswith("ORBIT-GUEST start")
    )
    assert f" cold_mib={COLD_MIB} " in start_line
    # both guests have written their whole working set (16 MiB at 4 MiB/s) by now
    guests.wait_verified("h1", "warm")
    hb = guests.wait_verified("h1", "cold")
    extra = _rss_mib(lab, "h1", "cold") - _rss_mib(lab, "h1", "warm")
    assert extra >= 0.9 * COLD_MIB, f"cold memory adds only {extra:.0f} MiB of RSS"
    extra = _rss_mib(lab, "h1", "full") - _rss_mib(lab, "h1", "warm")
    assert extra >= 0.9 * COLD_MIB, f"prefill adds only {extra:.0f} MiB of RSS"
    # each rewrite first verifies the prefilled page (generation 1): none may be wrong
    hb_full = guests.heartbeats("h1", "full")[-1]
    assert hb_full.pages > 0 and hb_full.errors == 0, hb_full
    # the checks go on: 256 pages per heartbeat, all passing, for at least 2 s more
    later = hb
    while later.ms - hb.ms < 2000:
        later = guests.wait_heartbeat("h1", "cold", after_seq=later.seq)
    checked = later.cold_checked - hb.cold_checked
    assert checked == (later.seq - hb.seq) * COLD_CHECK_PAGES, (hb, later)
    assert later.errors == 0


def test_corrupted_cold_page_is_detected(lab: Lab, guests: Guests) -> None:
    """The cold checks catch a bad cold page long before the working set's pass would."""
    spec = GuestSpec("coldbad", memory_mib=128, wss_mib=64, rate_mib_s=1, cold_mib=8, corrupt=True)
    first = guests.start("h1", spec)
    assert first is not None
    hb = guests.wait_heartbeat("h1", "coldbad", after_seq=first.seq + 2)
    assert hb.passes == 0  # 64 MiB at 1 MiB/s: the working set's fault is a minute away
    assert hb.errors == 1, f"the cold check missed the corrupted cold page: {hb}"
