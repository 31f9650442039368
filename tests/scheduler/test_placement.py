"""The scheduler's pure choice of a destination."""

from __future__ import annotations

import random

import pytest

from orbit.errors import NoValidHost
from orbit.scheduler.placement import HostView, pick_host, place_in_order


def test_most_free_memory_wins_and_never_the_source() -> None:
    hosts = [HostView("h1", True, 9000), HostView("h2", True, 4000), HostView("h3", True, 6000)]
    assert pick_host(hosts, source="h1", memory_mib=512) == "h3"


def test_ties_are_broken_by_name() -> None:
    hosts = [HostView("h3", True, 4000), HostView("h2", True, 4000)]
    assert pick_host(hosts, source="h1", memory_mib=512) == "h2"


def test_down_and_full_hosts_are_skipped() -> None:
    hosts = [HostView("h2", False, 9000), HostView("h3", True, 256), HostView("h4", True, 600)]
    assert pick_host(hosts, source="h1", memory_mib=512) == "h4"


@pytest.mark.parametrize(
    ("hosts", "needle"),
    [
        ([HostView("h1", True, 9000)], "no other host"),
        ([HostView("h2", False, 9000)], "h2 is down"),
        ([HostView("h2", True, 100)], "h2 has 100 MiB free"),
    ],
)
def test_no_valid_host_says_why(hosts: list[HostView], needle: str) -> None:
    with pytest.raises(NoValidHost, match=needle):
        pick_host(hosts, source="h1", memory_mib=512)


def test_memory_reserved_for_incoming_migrations_is_not_free() -> None:
    hosts = [HostView("h2", True, 9000, memory_reserved_mib=8000), HostView("h3", True, 6000)]
    assert pick_host(hosts, source="h1", memory_mib=512) == "h3"
    with pytest.raises(NoValidHost, match=r"h2 has 1000 MiB free \(9000 MiB less 8000 MiB"):
        pick_host(hosts[:1], source="h1", memory_mib=2048)


def _one_by_one(hosts: list[HostView], vms: list[tuple[str, int]]) -> dict[str, HostView]:
    """What place_in_order must equal: pick_host for each VM, its memory reserved."""
    views = {h.name: h for h in hosts}
    for source, mib in vms:
        try:
            name = pick_host(list(views.values()), source=source, memory_mib=mib)
        except NoValidHost:
            continue
        h = views[name]
        views[name] = HostView(
            h.name, h.up, h.memory_free_mib, h.memory_reserved_mib + mib, disabled=h.disabled
        )
    return views


def test_placing_a_queue_in_order_is_pick_host_for_each() -> None:
    """place_in_order gives every host the same reservations as pick_host one VM at a time
    (sources skipped, ties by name, full, down and disabled hosts left out), on random
    hosts and queues."""
    rng = random.Random(12)
    for _ in range(300):
        hosts = [
            HostView(
                f"h{i}",
                up=rng.random() > 0.1,
                memory_free_mib=rng.choice((0, 512, 1024, 2048, 4096)),
                memory_reserved_mib=rng.choice((0, 0, 512)),
                disabled=rng.random() < 0.1,
            )
            for i in range(rng.randint(1, 8))
        ]
        vms = [
            (f"h{rng.randint(0, 8)}", rng.choice((256, 512, 1024, 2048)))
            for _ in range(rng.randint(0, 20))
        ]
        assert place_in_order(hosts, vms) == _one_by_one(hosts, vms)
