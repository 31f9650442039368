"""The inventory survey: hosts are asked in parallel, with no database session open."""

from __future__ import annotations

import threading

from orbit.conductor.inventory import survey_hosts
from orbit.errors import HostUnreachable
from orbit.virt.driver import HostInfo
from orbit.virt.fake import FakeDriver


class _TogetherDriver(FakeDriver):
    """host_info answers only once every host is being asked at the same time."""

    def __init__(self, hosts: int) -> None:
        super().__init__()
        self.together = threading.Barrier(hosts, timeout=5.0)

    def host_info(self, uri: str) -> HostInfo:
        try:
            self.together.wait()
        except threading.BrokenBarrierError as err:
            raise HostUnreachable(f"{uri} was asked alone") from err
        return super().host_info(uri)


def test_hosts_are_asked_at_once_so_a_slow_one_holds_up_only_itself() -> None:
    uris = [f"fake://h{i}" for i in range(1, 5)]
    driver = _TogetherDriver(len(uris))
    for uri in uris:
        driver.add_host(uri)
    surveys = survey_hosts(driver, uris)
    assert list(surveys) == uris
    assert all(s.capacity is not None and s.error is None for s in surveys.values())


def test_a_host_that_does_not_answer_is_reported_with_its_error() -> None:
    driver = FakeDriver()
    driver.add_host("fake://h1")
    driver.add_host("fake://h2").up = False
    surveys = survey_hosts(driver, ["fake://h1", "fake://h2"])
    assert surveys["fake://h1"].capacity is not None
    assert surveys["fake://h2"].capacity is None
    assert "does not answer" in (surveys["fake://h2"].error or "")
