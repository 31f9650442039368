"""The fake hypervisor behaves like libvirt where callers depend on it."""

from __future__ import annotations

import pytest

from orbit.errors import HypervisorError
from orbit.virt.driver import DomainState
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

SRC = "fake://src"


def test_dirty_rate_is_the_workloads_and_refused_when_not_running() -> None:
    driver = FakeDriver(tick_s=0.01)
    driver.add_domain(SRC, "vm", workload=FakeWorkload(dirty_bytes=MIB))
    driver.add_domain(SRC, "off", state=DomainState.SHUTOFF)
    rate = driver.measure_dirty_rate(SRC, "vm")
    assert rate.bytes_s == 100 * MIB and rate.period_s == 1
    with pytest.raises(HypervisorError, match="not running"):
        driver.measure_dirty_rate(SRC, "off")
