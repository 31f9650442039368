"""The libvirt driver without a daemon: which versions it will not ask to take a post-copy
resume, and which errors make it replace a cached connection."""

from __future__ import annotations

import libvirt
import pytest

from orbit.errors import HypervisorError
from orbit.virt.libvirt_driver import LibvirtDriver, resume_defect_of


@pytest.mark.parametrize("version", [9_000_000, 10_010_000, 11_001_000])
def test_versions_before_11_2_can_resume(version: int) -> None:
    assert resume_defect_of(version) is None


@pytest.mark.parametrize(("version", "text"), [(11_002_000, "11.2.0"), (11_003_000, "11.3.0")])
def test_versions_from_11_2_crash_on_a_resume_and_say_so(version: int, text: str) -> None:
    why = resume_defect_of(version)
    assert why is not None and f"libvirt {text}" in why and "crashes" in why


def _error(domain: int, message: str) -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (libvirt.VIR_ERR_SYSTEM_ERROR, domain, message, 2, None, None, None, 0, 0)
    return err


class _Conn:
    def __init__(self, error: libvirt.libvirtError | None) -> None:
        self.error = error

    def lookupByName(self, name: str) -> str:
        if self.error is not None:
            raise self.error
        return f"domain {name}"


def test_a_connection_that_died_in_an_outage_is_replaced_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'Connection reset by peer' on the cached connection: one more try on a fresh one
    (a 20 s cut left the record 'cannot tell where fb runs' though the VM had arrived)."""
    driver = LibvirtDriver()
    conns = [_Conn(_error(libvirt.VIR_FROM_RPC, "Cannot recv data: Connection reset")), _Conn(None)]
    forgotten: list[str] = []
    monkeypatch.setattr(driver, "_conn", lambda uri: conns[len(forgotten)])
    monkeypatch.setattr(driver, "_forget", lambda uri: forgotten.append(uri))
    assert driver._domain("qemu+tcp://h2/system", "fb") == "domain fb"
    assert forgotten == ["qemu+tcp://h2/system"]


def test_a_failing_call_on_a_live_connection_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = LibvirtDriver()
    dead = _Conn(_error(libvirt.VIR_FROM_QEMU, "no domain with matching name 'fb'"))
    forgotten: list[str] = []
    monkeypatch.setattr(driver, "_conn", lambda uri: dead)
    monkeypatch.setattr(driver, "_forget", lambda uri: forgotten.append(uri))
    with pytest.raises(HypervisorError):
        driver._domain("qemu+tcp://h2/system", "fb")
    assert forgotten == []
