"""Pure unit tests of the lab's parsing and validation (no root, no libvirt needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbit.errors import ConfigError
from orbit.lab.guest import GuestSpec, Heartbeat, complete_lines, domain_xml, parse_heartbeat
from orbit.lab.network import Shaping, rate_bits_s, tbf_args


def test_parse_heartbeat_complete_line() -> None:
    line = "HB seq=12 ms=1200 pages=3072 passes=1 errors=0 rate_kib_s=10240 max_gap_ms=101"
    assert parse_heartbeat(line) == Heartbeat(12, 1200, 3072, 1, 0, 10240, 101)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ORBIT-GUEST start wss_mib=64",
        "HB seq=12 ms=1200 pages=30",  # cut short by a switch-over
        "HB seq=x ms=1 pages=1 passes=0 errors=0 rate_kib_s=0 max_gap_ms=0",
        "xHB seq=1 ms=1 pages=1 passes=0 errors=0 rate_kib_s=0 max_gap_ms=0",
    ],
)
def test_parse_heartbeat_rejects_partial_or_foreign_lines(line: str) -> None:
    assert parse_heartbeat(line) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GuestSpec("g", memory_mib=64, wss_mib=64), "too small for --wss-mib 64"),
        (GuestSpec("g", memory_mib=16), "out of range"),
        (GuestSpec("g", wss_mib=0), "at least 1 MiB"),
        (GuestSpec("g", rate_mib_s=-1), ">= 0"),
        (GuestSpec("g", pattern="zigzag"), "seq, random"),
        (GuestSpec("bad name"), "not valid"),
        (GuestSpec("g", disk_mib=-5), "--disk-mib"),
    ],
)
def test_guest_spec_rejects_bad_input(spec: GuestSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec.validate()


def test_guest_spec_accepts_the_smallest_fitting_memory() -> None:
    GuestSpec("g", memory_mib=64 + 24, wss_mib=64).validate()  # raises if it does not fit
    with pytest.raises(ConfigError, match="at least 88 MiB"):
        GuestSpec("g", memory_mib=64 + 23, wss_mib=64).validate()


def test_domain_xml_carries_workload_and_serial_log() -> None:
    spec = GuestSpec("vm1", memory_mib=512, wss_mib=100, rate_mib_s=30, pattern="random")
    xml = domain_xml(spec, Path("/k/orbit-guest.elf"), kvm=False)
    assert "<domain type='qemu'>" in xml
    assert "<memory unit='MiB'>512</memory>" in xml
    assert "wss_mib=100 rate_mib_s=30 pattern=random corrupt=0" in xml
    assert "/var/log/libvirt/qemu/vm1-serial.log" in xml
    assert "<disk" not in xml
    with_disk = domain_xml(GuestSpec("vm2", disk_mib=64), Path("/k"), kvm=True)
    assert "/var/lib/libvirt/images/vm2.qcow2" in with_disk and "type='kvm'" in with_disk


@pytest.mark.parametrize(
    ("shaping", "flag"),
    [
        (Shaping(rate="fast"), "--rate"),
        (Shaping(rate="400"), "--rate"),
        (Shaping(delay="1 ms"), "--delay"),
        (Shaping(loss="10"), "--loss"),
        (Shaping(loss="100%"), "below 100%"),
        (Shaping(rate="500kbit"), "minimum"),
    ],
)
def test_shaping_rejects_bad_values(shaping: Shaping, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        shaping.validate()


def test_rate_parsing_and_token_bucket() -> None:
    assert rate_bits_s("400mbit") == 400_000_000
    assert rate_bits_s("1.5gbit") == 1_500_000_000
    # 10 ms worth of bytes at 400 Mbit/s = 500 kB, above the 64 KiB floor
    assert tbf_args("400mbit") == ["tbf", "rate", "400mbit", "burst", "500000", "latency", "100ms"]
    assert tbf_args("10mbit")[4] == str(64 * 1024)
    assert Shaping().is_empty()


def test_a_half_written_last_line_is_not_read() -> None:
    """A heartbeat caught while the guest writes it would parse without its optional
    fields (cold_checked=0): only ended lines count."""
    assert complete_lines("HB seq=1\nHB seq=2 ms=200 max_gap_ms=100") == ["HB seq=1"]
    assert complete_lines("HB seq=1\n") == ["HB seq=1"]
    assert complete_lines("") == []
