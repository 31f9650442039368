"""The inventory survey: hosts are asked in parallel, with no database session open."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from orbit.conductor.conductor import Conductor, reserved_mib
from orbit.conductor.inventory import Survey, apply_survey, survey_hosts
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host, Server
from orbit.db.types import utcnow
from orbit.errors import HostUnreachable
from orbit.migration.phase import Phase
from orbit.virt.driver import DomainInfo, DomainState, HostInfo, Owner
from orbit.virt.fake import FakeDriver
from tests.db.test_models import add_migration, add_world


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


def _survey_of(asked_at: datetime, uri_domains: dict[str, list[DomainInfo]]) -> dict[str, Survey]:
    return {
        uri: Survey(asked_at, HostInfo(16384, 8192, 4), tuple(domains))
        for uri, domains in uri_domains.items()
    }


def test_a_survey_older_than_a_move_does_not_undo_it(db: Database) -> None:
    """The survey saw vm1 on h1; the migration to h2 then completed (the record moved vm1 to
    h2); the survey is applied after that. vm1 stays on h2, and a survey that saw it
    nowhere while it moved does not make it gone; a fresh survey is applied."""
    with db.session() as s:
        _project, _user, h1, h2, server = add_world(s)
        server_id, h1_uri, h2_uri, h2_id = server.id, h1.uri, h2.uri, h2.id
        info = DomainInfo(name="vm1", uuid=server_id, state=DomainState.RUNNING, reason="",
                          memory_mib=512, vcpus=1, persistent=True)  # fmt: skip
    before = utcnow()
    with db.session() as s:  # the migration completes after the survey was taken
        server = s.get_one(Server, server_id)
        add_migration(s, server, dest_host=s.get_one(Host, h2_id), finished_at=utcnow())
        server.host_id = h2_id
    for stale in (
        _survey_of(before, {h1_uri: [info], h2_uri: []}),  # where it was
        _survey_of(before, {h1_uri: [], h2_uri: []}),  # nowhere: between the two asks
    ):
        with db.session() as s:
            apply_survey(s, stale)
        with db.session() as s:
            server = s.get_one(Server, server_id)
            assert (server.host_id, server.status) == (h2_id, "ACTIVE")
    with db.session() as s:  # asked after the move: it is the truth
        apply_survey(s, _survey_of(utcnow(), {h1_uri: [], h2_uri: []}))
    with db.session() as s:
        assert s.get_one(Server, server_id).status == "SHUTOFF"


def test_a_survey_older_than_a_project_assignment_does_not_undo_it(db: Database) -> None:
    """The survey read vm1's domain naming project demo; the operator then gave vm1 to no
    project (the domain's metadata, then the row); the survey is applied after that, as a
    migration's end kicks one. vm1 keeps no project (make test once saw a member still
    list it); a survey asked after the assignment is the truth again."""
    with db.session() as s:
        project, _user, h1, _h2, server = add_world(s)
        server_id, h1_uri, project_id = server.id, h1.uri, project.id
    owned = DomainInfo(name="vm1", uuid=server_id, state=DomainState.RUNNING, reason="",
                       memory_mib=512, vcpus=1, persistent=True,
                       owner=Owner(project_id, "demo"))  # fmt: skip
    before = utcnow()
    with db.session() as s:  # the assignment, after the survey was taken
        s.get_one(Server, server_id).project_id = None
    with db.session() as s:
        apply_survey(s, _survey_of(before, {h1_uri: [owned]}))
    with db.session() as s:
        assert s.get_one(Server, server_id).project_id is None
    with db.session() as s:  # asked after the assignment (the domain still names demo)
        apply_survey(s, _survey_of(utcnow(), {h1_uri: [owned]}))
    with db.session() as s:
        assert s.get_one(Server, server_id).project_id == project_id


def test_between_two_syncs_a_destination_keeps_what_its_migrations_took(
    db: Database,
) -> None:
    """Memory reserved on each destination: a running migration's, and a completed one's
    until a sync has seen it (the host's reported free memory predates it). A source gets
    nothing back before a sync says so (the VM may have used less than its size)."""
    with db.session() as s:
        *_, h1, h2, vm1 = add_world(s)
        vm2 = Server(id="6e2d9f9f-1d6f-4e64-8b8f-3f1e2c8dab22", name="vm2", host=h2,
                     status="ACTIVE", memory_mib=256)  # fmt: skip
        s.add(vm2)
        synced = utcnow()
        h1.last_seen_at = h2.last_seen_at = synced
        s.flush()
        add_migration(s, vm1, source_host=h1, dest_host=h2,
                      finished_at=synced + timedelta(seconds=1))  # fmt: skip
        running = add_migration(s, vm2, source_host=h2, dest_host=h1,
                                status=Phase.RUNNING_PRECOPY.value)  # fmt: skip
        assert reserved_mib(s) == {h1.id: 256, h2.id: 512}
        running.status = Phase.COMPLETED.value
        running.finished_at = synced - timedelta(seconds=1)  # the sync saw it
        h1.last_seen_at = h2.last_seen_at = synced + timedelta(seconds=2)
        s.flush()
        assert reserved_mib(s) == {}


def test_a_host_never_surveyed_keeps_every_completed_arrival_and_the_parts_add_up(
    db: Database,
) -> None:
    """A destination no sync has seen yet counts every completed migration to it; one
    with a running arrival and a completed one its sync has not seen counts both."""
    with db.session() as s:
        *_, h1, h2, vm1 = add_world(s)
        vm2 = Server(id="6e2d9f9f-1d6f-4e64-8b8f-3f1e2c8dab22", name="vm2", host=h1,
                     status="ACTIVE", memory_mib=256)  # fmt: skip
        vm3 = Server(id="0c8f7b1e-52a4-4c1b-9d7e-1b2a3c4d5e6f", name="vm3", host=h1,
                     status="ACTIVE", memory_mib=1024)  # fmt: skip
        s.add_all([vm2, vm3])
        h1.last_seen_at, h2.last_seen_at = utcnow(), None
        s.flush()
        long_ago = utcnow() - timedelta(days=400)
        add_migration(s, vm1, source_host=h1, dest_host=h2, finished_at=long_ago)
        assert reserved_mib(s) == {h2.id: 512}
        add_migration(s, vm2, source_host=h2, dest_host=h1,
                      finished_at=h1.last_seen_at + timedelta(seconds=1))  # fmt: skip
        add_migration(s, vm3, source_host=h2, dest_host=h1,
                      status=Phase.RUNNING_POSTCOPY.value)  # fmt: skip
        assert reserved_mib(s) == {h1.id: 256 + 1024, h2.id: 512}


def test_a_survey_of_some_hosts_judges_only_the_servers_on_them(db: Database) -> None:
    """After a migration the conductor surveys its two ends only. A server on another
    host is not made UNKNOWN (its host did not answer because it was not asked) nor gone;
    one on a surveyed host that is no longer there is gone, as in a full survey."""
    with db.session() as s:
        _project, _user, h1, h2, vm1 = add_world(s)
        vm1.status = "ACTIVE"
        vm2 = Server(id="6e2d9f9f-1d6f-4e64-8b8f-3f1e2c8dab22", name="vm2", host=h2,
                     status="ACTIVE", memory_mib=256)  # fmt: skip
        s.add(vm2)
        h1_uri, h1_id, h1_seen, h2_uri = h1.uri, h1.id, h1.last_seen_at, h2.uri
        vm1_id, vm2_id = vm1.id, vm2.id
    with db.session() as s:
        apply_survey(s, _survey_of(utcnow(), {h2_uri: []}))
    with db.session() as s:
        vm1 = s.get_one(Server, vm1_id)
        assert (vm1.host_id, vm1.status) == (h1_id, "ACTIVE")
        assert s.get_one(Host, h1_id).last_seen_at == h1_seen
        assert s.get(Server, vm2_id) is None  # no history: its row is deleted
    with db.session() as s:  # the whole survey does judge it
        apply_survey(s, _survey_of(utcnow(), {h1_uri: [], h2_uri: []}))
    with db.session() as s:
        assert s.get(Server, vm1_id) is None


class _AskedDriver(FakeDriver):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def host_info(self, uri: str) -> HostInfo:
        self.asked.append(uri)
        return super().host_info(uri)


def test_the_kicks_of_migrations_that_end_add_up_to_a_survey_of_their_hosts(
    db: Database,
) -> None:
    """Each ending migration asks for its two hosts; a kick without hosts (or with one
    unknown) asks for all. sync() with hosts asks those only."""
    driver = _AskedDriver()
    with db.session() as s:
        for i in (1, 2, 3, 4):
            driver.add_host(f"fake://h{i}")
            s.add(Host(name=f"h{i}", uri=f"fake://h{i}"))
    conductor = Conductor(db, driver, ServerConfig(driver="fake"))
    conductor._kick_sync(("fake://h1", "fake://h2"))
    conductor._kick_sync(("fake://h3", "fake://h2"))
    assert conductor._sync_uris == {"fake://h1", "fake://h2", "fake://h3"}
    conductor.sync(sorted(conductor._sync_uris))
    assert sorted(driver.asked) == ["fake://h1", "fake://h2", "fake://h3"]
    conductor._kick_sync(("fake://h4", None))
    assert conductor._sync_uris is None
    driver.asked.clear()
    conductor.sync()
    assert sorted(driver.asked) == [f"fake://h{i}" for i in (1, 2, 3, 4)]
