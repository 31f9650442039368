"""Several orbit-server instances on one PostgreSQL database (issue 12): each migration is
driven by exactly one instance, and another takes over, within 4/3 of the lease,
the migrations of an instance that stops renewing its claims (it died, froze or lost the
database); the earlier claim's writes are refused.

Two conductors share one database and one fake driver (the hosts). One stopped without
releasing its leases is, to the database, a crashed or frozen instance: it renews nothing;
its engines still watch their jobs (as a frozen instance's would when it wakes), and their
writes are refused once another instance has claimed the migrations.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from orbit.conductor.conductor import LEASE_RENEWALS, Claim, Conductor, _Recorder
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host, Migration, Server
from orbit.db.types import utcnow
from orbit.migration.model import MIB, MigrationSettings
from orbit.migration.phase import Phase
from orbit.virt.driver import DomainState
from orbit.virt.fake import FakeDriver, FakeWorkload
from tests.conductor.test_recorder import claimed_recorder
from tests.db.test_models import add_migration, add_world

HOSTS = 2
VMS_PER_HOST = 2
#: 512 MiB at 4 MiB per 50 ms tick: each migration lasts ~6.4 s, longer than a take-over
SLOW = FakeWorkload(memory_bytes=512 * MIB, bandwidth_bytes=4 * MIB, dirty_bytes=0)
#: a short lease: the take-over comes within 4/3 of it
LEASE_S = 2.0


def test_a_recorder_of_an_earlier_claim_writes_nothing(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    old = claimed_recorder(db, mid, owner="instance-a")
    new = claimed_recorder(db, mid, owner="instance-b")  # took it over
    old.on_phase(Phase.RUNNING_POSTCOPY, 2.0, "switched by the old owner")
    old.flush()
    new.on_phase(Phase.POSTCOPY_PAUSED, 3.0, "paused by the new owner")
    new.flush()
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.status == Phase.POSTCOPY_PAUSED.value
        assert Phase.RUNNING_POSTCOPY.value not in m.phase_times
    stale = _Recorder(db, mid, Claim("instance-b", 0))  # right owner, earlier fence
    stale.on_phase(Phase.RUNNING_PRECOPY, 4.0, "")
    stale.close()
    old.close()
    new.close()
    with db.session() as s:
        assert s.get_one(Migration, mid).status == Phase.POSTCOPY_PAUSED.value


def test_renewal_extends_the_claims_held_and_gives_up_those_taken_over(db: Database) -> None:
    """One statement renews every claim this instance holds; a claim found with another
    owner, or with a later fence (taken over, or taken again), is dropped with its engine."""
    with db.session() as s:
        *_, h1, _h2, first = add_world(s)
        servers = [
            first,
            *(
                Server(id=str(uuid.uuid4()), name=name, host=h1, memory_mib=512)
                for name in ("vm2", "vm3")
            ),
        ]
        s.add_all(servers)
        s.flush()
        mids = [add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
                for server in servers]  # fmt: skip
    conductor = Conductor(db, FakeDriver(), ServerConfig(driver="fake", lease_s=LEASE_S))
    past = utcnow() - timedelta(seconds=1)
    with db.session() as s:
        for mid, (owner, fence) in zip(
            mids,
            [(conductor.instance_id, 3), ("another-instance", 3), (conductor.instance_id, 4)],
            strict=True,
        ):
            m = s.get_one(Migration, mid)
            m.owner, m.fence, m.lease_until = owner, fence, past
    conductor._fences = dict.fromkeys(mids, 3)  # the claims it made
    conductor._renew_leases()
    assert conductor._fences == {mids[0]: 3}
    with db.session() as s:
        leases = [s.get_one(Migration, mid).lease_until for mid in mids]
    assert leases[0] is not None and leases[0] > utcnow()
    assert leases[1:] == [past, past]


@pytest.fixture
def two_instances(db: Database) -> Iterator[tuple[Conductor, Conductor, FakeDriver]]:
    driver = FakeDriver(tick_s=0.05)
    with db.session() as s:
        for i in range(1, HOSTS + 1):
            driver.add_host(f"fake://h{i}")
            s.add(Host(name=f"h{i}", uri=f"fake://h{i}"))
            for j in range(VMS_PER_HOST):
                driver.add_domain(f"fake://h{i}", f"vm{i}-{j}", workload=SLOW)
    config = ServerConfig(driver="fake", sync_interval_s=0.5, max_outgoing_per_host=2,
                          max_incoming_per_host=2, lease_s=LEASE_S)  # fmt: skip
    a, b = Conductor(db, driver, config), Conductor(db, driver, config)
    a.start()
    b.start()
    try:
        yield a, b, driver
    finally:
        a.stop()
        b.stop()


#: several instances share PostgreSQL; SQLite serves one (orbit.db.database.InstanceLock)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_each_migration_has_one_driver_and_a_silent_instances_are_taken_over(
    db: Database, two_instances: tuple[Conductor, Conductor, FakeDriver]
) -> None:
    a, b, driver = two_instances
    with db.session() as s:
        servers = list(s.scalars(select(Server).order_by(Server.name)))
        assert len(servers) == HOSTS * VMS_PER_HOST
        for server in servers:  # each VM to the next host
            i = int(server.name[2])
            a.request_migration(
                s, server=server, dest_host_name=f"h{i % HOSTS + 1}",
                settings=MigrationSettings.resolve(post_copy=False), block_migration_auto=False,
                disk_over_commit=False, user_id=None, project_id=None,
            )  # fmt: skip
    a.kick()
    b.kick()
    deadline = time.monotonic() + 30
    while True:  # both instances drive some, each its own
        with db.session() as s:
            running = [m for m in s.scalars(select(Migration)) if m.status == "running-precopy"]
        if {m.owner for m in running} == {a.instance_id, b.instance_id}:
            break
        assert time.monotonic() < deadline, [(m.id, m.owner) for m in running]
        time.sleep(0.05)
    stopped_at = time.monotonic()  # its lease loop stops at once: silence from here
    # a crash, as far as the database can tell (stop() waits a while for its engines)
    stopping = threading.Thread(target=a.stop, kwargs={"release": False})
    stopping.start()
    orphaned = {m.id for m in running if m.owner == a.instance_id}
    assert orphaned
    deadline = time.monotonic() + 60
    while True:
        with db.session() as s:
            rows = list(s.scalars(select(Migration)))
        taken = {m.id for m in rows if m.id in orphaned and m.owner == b.instance_id}
        if taken == orphaned and not any(m.owner == a.instance_id for m in rows
                                         if not m.phase.is_final):  # fmt: skip
            takeover_s = time.monotonic() - stopped_at
            break
        assert time.monotonic() < deadline, [(m.id, m.owner, m.status) for m in rows]
        time.sleep(0.05)
    print(f"take-over {takeover_s:.1f} s after the instance went silent")
    assert takeover_s <= LEASE_S * (1 + 1 / LEASE_RENEWALS) + 1.0, takeover_s
    stopping.join(60)
    deadline = time.monotonic() + 60
    while True:  # every migration completes, once: each VM runs on exactly one host
        with db.session() as s:
            statuses = [m.status for m in s.scalars(select(Migration))]
        if all(st == "completed" for st in statuses):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
    for i in range(1, HOSTS + 1):
        for j in range(VMS_PER_HOST):
            where = [uri for uri, h in driver.hosts.items()
                     if h.domains.get(f"vm{i}-{j}") is not None
                     and h.domains[f"vm{i}-{j}"].state is DomainState.RUNNING]  # fmt: skip
            assert where == [f"fake://h{i % HOSTS + 1}"], (f"vm{i}-{j}", where)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_instance_forwards_operator_requests_to_the_one_driving(
    db: Database, two_instances: tuple[Conductor, Conductor, FakeDriver]
) -> None:
    """Force-complete and abort sent to an instance that does not drive the migration are
    left in the record for the one that does, which applies them at its next renewal."""
    a, b, driver = two_instances
    with db.session() as s:
        first, second = list(s.scalars(select(Server).order_by(Server.name)))[:2]
        for server in (first, second):  # ~3 s each: longer than a lease renewal (0.7 s)
            driver.hosts["fake://h1"].workloads[server.name] = FakeWorkload(
                memory_bytes=256 * MIB, bandwidth_bytes=4 * MIB, dirty_bytes=0
            )
            a.request_migration(
                s, server=server, dest_host_name="h2",
                settings=MigrationSettings.resolve(post_copy=True, policy="precopy"),
                block_migration_auto=False, disk_over_commit=False, user_id=None,
                project_id=None,
            )  # fmt: skip
    a.kick()
    b.kick()

    def running() -> list[Migration]:
        with db.session() as s:
            return [m for m in s.scalars(select(Migration)) if m.status == "running-precopy"]

    deadline = time.monotonic() + 30
    while len(running()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    to_force, to_abort = sorted(running(), key=lambda m: m.id)
    for record, what in ((to_force, "force"), (to_abort, "abort")):
        owner = a if record.owner == a.instance_id else b
        other = b if owner is a else a
        with db.session() as s:
            m = s.get_one(Migration, record.id)
            if what == "force":
                said = other.force_complete(s, m)
                assert f"asked {owner.instance_id}" in said, said
            else:
                other.abort(s, m)
    deadline = time.monotonic() + 30
    while True:
        with db.session() as s:
            forced = s.get_one(Migration, to_force.id)
            aborted = s.get_one(Migration, to_abort.id)
            aborted_vm = aborted.server.name
            if forced.phase.is_final and aborted.phase.is_final:
                break
        assert time.monotonic() < deadline, (forced.status, aborted.status)
        time.sleep(0.1)
    assert forced.status == "completed" and forced.switch_at_s is not None
    assert any(d["source"] == "operator" for d in forced.decisions)
    assert aborted.status == "cancelled", aborted.error
    assert forced.requested is None and aborted.requested is None
    assert driver.hosts["fake://h1"].domains[aborted_vm].state is DomainState.RUNNING


def test_a_migration_whose_instance_died_before_it_started_is_started_afresh(
    db: Database,
) -> None:
    """The record says running-precopy, its owner is gone (lease over), and no job ever
    reached the host: the adopter starts it (once) and it completes."""
    driver = FakeDriver(tick_s=0.01)
    quick = FakeWorkload(memory_bytes=64 * MIB, bandwidth_bytes=16 * MIB, dirty_bytes=0)
    with db.session() as s:
        for i in (1, 2):
            driver.add_host(f"fake://h{i}")
            s.add(Host(name=f"h{i}", uri=f"fake://h{i}"))
        driver.add_domain("fake://h1", "vm", workload=quick)
    config = ServerConfig(driver="fake", sync_interval_s=0.5, lease_s=LEASE_S)
    conductor = Conductor(db, driver, config)
    conductor.sync()
    with db.session() as s:
        server = s.scalars(select(Server)).one()
        mid = conductor.request_migration(
            s, server=server, dest_host_name="h2",
            settings=MigrationSettings.resolve(post_copy=False), block_migration_auto=False,
            disk_over_commit=False, user_id=None, project_id=None,
        )  # fmt: skip
        record = s.get_one(Migration, mid)
        record.status = Phase.RUNNING_PRECOPY.value  # claimed by an instance that then died
        record.owner, record.fence = "dead-instance", 1
        record.lease_until = utcnow() - timedelta(seconds=1)
    conductor.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with db.session() as s:
                m = s.get_one(Migration, mid)
                if m.phase.is_final:
                    break
            assert time.monotonic() < deadline, m.status
            time.sleep(0.05)
    finally:
        conductor.stop()
    assert m.status == "completed", m.error
    assert driver.calls.count("migrate vm post_copy=False") == 1
    assert "vm" in driver.hosts["fake://h2"].domains


def test_a_survey_by_another_instance_spares_this_one_its_own(db: Database) -> None:
    """Instances share the hosts: once every host that answers was surveyed (by any
    instance) after this one was asked to sync, its sync would learn nothing and is
    skipped; a host not surveyed since, or none answering, means a sync is needed."""
    driver = FakeDriver()
    for i in (1, 2):
        driver.add_host(f"fake://h{i}")
    with db.session() as s:
        s.add_all([Host(name=f"h{i}", uri=f"fake://h{i}") for i in (1, 2)])
    conductor = Conductor(db, driver, ServerConfig(driver="fake"))
    before = utcnow()
    assert not conductor.surveyed_since(before)  # no host has answered yet
    conductor.sync()  # as another instance's sync would
    assert conductor.surveyed_since(before)
    assert not conductor.surveyed_since(utcnow())
    with db.session() as s:
        h2 = s.scalars(select(Host).where(Host.name == "h2")).one()
        h2.last_seen_at = before - timedelta(seconds=1)
    assert not conductor.surveyed_since(before)
