"""Bad input to ``orbit lab``: one readable line, a non-zero exit, nothing half-made."""

from __future__ import annotations

from orbit.lab import network
from orbit.lab.guest import Guests
from orbit.lab.lab import Lab
from tests.helpers import assert_one_line_error, run_orbit


def _domains(lab: Lab) -> dict[str, dict[str, str]]:
    return {s.name: s.domains for s in lab.status()}


def test_up_twice_is_refused_and_the_lab_keeps_working(lab: Lab) -> None:
    before = lab.hosts()
    assert_one_line_error(run_orbit("lab", "up", "--hosts", "2"), "already up")
    assert lab.hosts() == before
    assert all(s.answers for s in lab.status())


def test_unknown_host(lab: Lab) -> None:
    for args in (
        ("lab", "cut", "h9"),
        ("lab", "restore", "h9"),
        ("lab", "link", "h9", "--rate", "400mbit"),
        ("lab", "guest", "start", "h9", "g1"),
    ):
        assert_one_line_error(run_orbit(*args), "no lab host named 'h9'")
    assert network.link_is_up("h1") and network.link_is_up("h2")
    assert _domains(lab) == {"h1": {}, "h2": {}}


def test_guest_memory_smaller_than_working_set(lab: Lab, guests: Guests) -> None:
    proc = run_orbit(
        "lab", "guest", "start", "h1", "big", "--memory-mib", "128", "--wss-mib", "256"
    )
    assert_one_line_error(proc, "--memory-mib 128 is too small for --wss-mib 256")
    assert _domains(lab) == {"h1": {}, "h2": {}}
    assert not guests.serial_log("h1", "big").exists()


def test_bad_link_values_change_nothing(lab: Lab) -> None:
    assert_one_line_error(run_orbit("lab", "link", "h1", "--rate", "fast"), "--rate 'fast'")
    assert network.current_shaping("h1") == ""


def test_duplicate_guest_name(lab: Lab, guests: Guests) -> None:
    ok = run_orbit(
        "lab",
        "guest",
        "start",
        "h1",
        "dup",
        "--memory-mib",
        "64",
        "--wss-mib",
        "8",
        "--rate-mib-s",
        "1",
    )
    assert ok.returncode == 0, ok.stderr
    assert_one_line_error(run_orbit("lab", "guest", "start", "h2", "dup"), "already exists on h1")
    assert "dup" not in _domains(lab)["h2"]


def test_link_shaping_cut_and_restore(lab: Lab) -> None:
    proc = run_orbit("lab", "link", "h2", "--rate", "400mbit", "--loss", "10%")
    assert proc.returncode == 0, proc.stderr
    assert network.current_shaping("h2") == "rate 400Mbit loss 10%"
    proc = run_orbit("lab", "link", "h2", "--rate", "200mbit")  # replaces, not adds
    assert network.current_shaping("h2") == "rate 200Mbit"
    assert run_orbit("lab", "cut", "h2").returncode == 0
    assert not network.link_is_up("h2")
    assert not lab.status()[1].answers  # the daemon cannot be reached over a cut link
    assert run_orbit("lab", "restore", "h2").returncode == 0
    assert network.link_is_up("h2")
    assert run_orbit("lab", "link", "h2").returncode == 0
    assert network.current_shaping("h2") == ""
