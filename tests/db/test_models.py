"""The models on a real database (SQLite and PostgreSQL): schema, relationships, constraints."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from orbit.db.database import Database
from orbit.db.models import (
    Base,
    Host,
    Migration,
    MigrationSample,
    PowerState,
    Project,
    RoleAssignment,
    Server,
    Token,
    User,
)
from orbit.migration.model import MigrationSettings, Sample
from orbit.migration.phase import Phase

GIB = 1024**3
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TABLES = {
    "projects",
    "users",
    "tokens",
    "dashboard_sessions",
    "server_secrets",
    "role_assignments",
    "hosts",
    "servers",
    "migrations",
    "migration_samples",
    "drains",
    "instances",
}


def schema_diff(db: Database, metadata: MetaData) -> list[object]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def add_world(
    session: Session, *, members: bool = True
) -> tuple[Project, User, Host, Host, Server]:
    """A project, a member, two hosts and a server on the first host (``members``: the
    member is added to the session; schemas before 0007 cannot hold it)."""
    project = Project(name="demo")
    user = User(name="alice", password_hash="x", project=project)
    user.assignments.append(RoleAssignment(project=project, role="member"))
    if not members:
        project.users.remove(user)
    h1 = Host(name="h1", uri="qemu+tcp://198.18.0.1/system", state="up")
    h2 = Host(name="h2", uri="qemu+tcp://198.18.0.2/system", migration_address="tcp://198.18.0.2")
    server = Server(
        id="5d1c8f8e-0c5e-4d53-9a8e-2f0d1b7c9a11",
        name="vm1",
        host=h1,
        status="ACTIVE",
        power_state=PowerState.RUNNING,
        memory_mib=512,
        vcpus=1,
        project=project,
    )
    session.add_all([project, h1, h2, server, *([user] if members else [])])
    session.flush()
    return project, user, h1, h2, server


def add_migration(session: Session, server: Server, **fields: object) -> Migration:
    """A migration of ``server``, by default a finished one (a server has at most one that
    has not ended)."""
    fields.setdefault("status", Phase.COMPLETED.value)
    migration = Migration(server=server, **fields)
    session.add(migration)
    session.flush()
    return migration


def test_upgrade_creates_the_schema_of_the_models(db: Database) -> None:
    assert set(inspect(db.engine).get_table_names()) == TABLES | {"alembic_version"}
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert db.current_revision() == head
    assert schema_diff(db, Base.metadata) == []


def test_schema_comparison_sees_a_difference(db: Database) -> None:
    """The check above can fail: a model with one more column than the schema is reported."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["hosts"].append_column(Column("extra_mib", Integer, nullable=False))
    diff = schema_diff(db, metadata)
    assert [(d[0], d[3].name) for d in diff if isinstance(d, tuple)] == [
        ("add_column", "extra_mib")
    ]


def test_records_read_back_with_their_relationships(db: Database) -> None:
    with db.session() as s:
        _, user, h1, h2, server = add_world(s)
        migration = add_migration(
            s, server, source_host=h1, dest_host=h2, user=user, project_id=user.project_id
        )
        for elapsed_s in (0.5, 0.25, 0.75):  # stored out of order
            migration.samples.append(MigrationSample(elapsed_s=elapsed_s, iteration=1))
        migration_id = migration.id

    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert isinstance(m.id, int)
        assert UUID_RE.match(m.uuid)
        assert m.server.name == "vm1"
        assert m.server.host is not None and m.server.host.name == "h1"
        assert m.source_host is not None and m.source_host.name == "h1"
        assert m.dest_host is not None and m.dest_host.migration_address == "tcp://198.18.0.2"
        assert m.user is not None and m.user.project is not None
        assert m.user.project.name == "demo"
        assert [(a.project.name, a.role) for a in m.user.assignments] == [("demo", "member")]
        assert [x.elapsed_s for x in m.samples] == [0.25, 0.5, 0.75]
        assert m.server.migrations == [m]
        assert m.server.project is not None and m.server.project.name == "demo"
        host = s.scalars(select(Host).where(Host.name == "h1")).one()
        assert [x.name for x in host.servers] == ["vm1"]
        assert UUID_RE.match(host.id)
        assert (host.memory_total_mib, host.memory_free_mib, host.vcpus) == (0, 0, 0)
        assert s.scalars(select(Host).where(Host.name == "h2")).one().state == "unknown"


def test_a_new_migration_has_the_documented_defaults(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        m = Migration(server=server)  # the model's own defaults, not add_migration's
        s.add(m)
        s.flush()
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert m.phase is Phase.QUEUED
        assert m.migration_type == "live-migration"
        assert m.settings == MigrationSettings()
        assert (m.decisions, m.phase_times) == ([], {})
        assert (m.memory_total_bytes, m.iterations, m.postcopy_requests) == (0, 0, 0)
        assert (m.downtime_ms, m.switch_at_s, m.total_s, m.error) == (None, None, None, None)
        assert (m.started_at, m.finished_at, m.user_id, m.project_id) == (None,) * 4


def test_settings_are_stored_and_read_back(db: Database) -> None:
    settings = MigrationSettings.resolve(
        post_copy=True,
        post_copy_after_iterations=3,
        completion_timeout_s=42.5,
        downtime_limit_ms=150,
        bandwidth_mib_s=400,
        block_migration=True,
    )
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(s, server)
        m.settings = settings
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert m.policy == "postcopy"
        assert m.settings == settings


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: Host(name="h1", uri="qemu+tcp://10.0.0.9/system"), id="host-name"),
        pytest.param(lambda p: User(name="alice", password_hash="y", project=p), id="user-name"),
        pytest.param(lambda p: Project(name="demo"), id="project-name"),
        pytest.param(
            lambda p: Token(
                token_hash="ab" * 32,
                user=p.users[0],
                project=p,
                expires_at=datetime.now(UTC),
            ),
            id="token-hash",
        ),
    ],
)
def test_unique_constraints(db: Database, make: Callable[[Project], Base]) -> None:
    with db.session() as s:
        project, user, *_ = add_world(s)
        s.add(Token(token_hash="ab" * 32, user=user, project=project, expires_at=datetime.now(UTC)))
    with pytest.raises(IntegrityError), db.session() as s:
        project = s.scalars(select(Project)).one()
        s.add(make(project))
        s.flush()


def test_migration_uuid_is_unique(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        first = add_migration(s, server)
        taken = first.uuid
    with pytest.raises(IntegrityError), db.session() as s:
        add_migration(s, s.get_one(Server, server.id), uuid=taken)


@pytest.mark.parametrize("how", ["orm", "sql"])
def test_deleting_a_migration_deletes_its_samples(db: Database, how: str) -> None:
    """'orm': Session.delete; 'sql': a bulk DELETE, which only the database's CASCADE covers."""
    with db.session() as s:
        *_, server = add_world(s)
        keep = add_migration(s, server)
        keep.samples.append(MigrationSample(elapsed_s=1.0))
        gone = add_migration(s, server)
        gone.samples.extend(MigrationSample(elapsed_s=float(i)) for i in range(5))
        gone_id, keep_id = gone.id, keep.id
    with db.session() as s:
        if how == "orm":
            s.delete(s.get_one(Migration, gone_id))
        else:
            s.execute(delete(Migration).where(Migration.id == gone_id))
    with db.session() as s:
        left = s.scalars(select(MigrationSample.migration_id)).all()
        assert left == [keep_id]


def test_foreign_keys_are_enforced(db: Database) -> None:
    """On SQLite this needs PRAGMA foreign_keys=ON on every connection."""
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Server(id="6f1c8f8e-0c5e-4d53-9a8e-2f0d1b7c9a11", name="vm9", host_id="no-such"))


def test_deleting_a_host_keeps_its_servers_and_migrations(db: Database) -> None:
    with db.session() as s:
        *_, h1, h2, server = add_world(s)
        add_migration(s, server, source_host=h1, dest_host=h2)
    with db.session() as s:
        s.execute(delete(Host).where(Host.name == "h1"))
    with db.session() as s:
        server = s.scalars(select(Server)).one()
        assert server.host_id is None
        m = s.scalars(select(Migration)).one()
        assert m.source_host_id is None
        assert m.dest_host is not None and m.dest_host.name == "h2"


def test_deleting_a_server_with_migrations_is_refused(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        add_migration(s, server)
    with pytest.raises(IntegrityError), db.session() as s:
        s.execute(delete(Server))


def test_deleting_a_user_deletes_their_tokens(db: Database) -> None:
    with db.session() as s:
        project, user, *_ = add_world(s)
        s.add(Token(token_hash="cd" * 32, user=user, project=project, expires_at=datetime.now(UTC)))
    with db.session() as s:
        s.execute(delete(User))
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Token)) == 0


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (Migration, "status", "running"),
        (Migration, "policy", "sometimes"),
        (Server, "status", "active"),
        (Server, "power_state", 2),
        (Host, "state", "UP"),
        (RoleAssignment, "role", "root"),
    ],
)
def test_values_outside_their_set_are_refused(
    db: Database, model: type[Base], field: str, value: object
) -> None:
    with db.session() as s:
        _, user, host, _, server = add_world(s)
        record = {Migration: add_migration(s, server), Server: server, Host: host, User: user,
                  RoleAssignment: user.assignments[0]}[model]  # fmt: skip
        key = inspect(record).identity
    with pytest.raises(IntegrityError), db.session() as s:
        setattr(s.get_one(model, key), field, value)


def test_every_phase_can_be_stored(db: Database) -> None:
    """Fails when a Phase is added without a schema revision that allows it."""
    with db.session() as s:
        add_world(s)
        for i, phase in enumerate(Phase):  # one server per phase: one unfinished each
            other = Server(id=f"00000000-0000-4000-8000-{i:012d}", name=f"vm-{i}")
            s.add(other)
            add_migration(s, other, status=phase)
    with db.session() as s:
        assert {m.phase for m in s.scalars(select(Migration))} == set(Phase)


def test_a_server_has_at_most_one_unfinished_migration(db: Database) -> None:
    """The database refuses a second unfinished migration of a server (two requests at
    once, or two orbit-server processes); finished ones are history, any number."""
    with db.session() as s:
        *_, server = add_world(s)
        for _ in range(3):
            add_migration(s, server, status=Phase.COMPLETED.value)
        add_migration(s, server, status=Phase.RUNNING_POSTCOPY.value)
    for phase in (p for p in Phase if not p.is_final):
        with pytest.raises(IntegrityError), db.session() as s:
            add_migration(s, s.get_one(Server, server.id), status=phase.value)
    with db.session() as s:
        add_migration(s, s.get_one(Server, server.id), status=Phase.FAILED.value)


def test_upgrade_0004_ends_older_duplicates_of_an_unfinished_migration(db_url: str) -> None:
    """A race before 0004 could leave two unfinished migrations of one server: the upgrade
    keeps the newest and ends the others as error, so that its unique index can be built."""
    database = Database(db_url)
    try:
        database.upgrade("0003")
        # 0004 adds only an index; 0005 adds two host columns, 0008 three migration
        # columns and 0009 one more, lent here for the models
        lent = {"hosts": ("disabled", "disabled_reason"),
                "migrations": ("owner", "lease_until", "fence", "requested")}  # fmt: skip
        with database.session() as s:
            s.execute(text("ALTER TABLE hosts ADD COLUMN disabled BOOLEAN DEFAULT false"))
            s.execute(text("ALTER TABLE hosts ADD COLUMN disabled_reason VARCHAR(255)"))
            s.execute(text("ALTER TABLE migrations ADD COLUMN owner VARCHAR(128)"))
            s.execute(text("ALTER TABLE migrations ADD COLUMN lease_until TIMESTAMP"))
            s.execute(text("ALTER TABLE migrations ADD COLUMN fence INTEGER DEFAULT 0"))
            s.execute(text("ALTER TABLE migrations ADD COLUMN requested VARCHAR(32)"))
        with database.session() as s:
            *_, server = add_world(s, members=False)
            for status in ("queued", "running-precopy", "completed"):
                add_migration(s, server, status=status)
        with database.session() as s:
            for table, columns in lent.items():
                for column in columns:
                    s.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        database.upgrade()
        with database.session() as s:
            rows = s.execute(select(Migration.status, Migration.error).order_by(Migration.id))
            statuses = [(status, bool(error)) for status, error in rows]
        assert statuses == [("error", True), ("running-precopy", False), ("completed", False)]
    finally:
        database.dispose()


def test_upgrade_0007_turns_each_users_role_into_an_assignment(db_url: str) -> None:
    """Users of 0006 keep what they could do: their role on their project, and a downgrade
    gives it back."""
    database = Database(db_url)
    try:
        database.upgrade("0006")
        with database.session() as s:
            s.execute(
                text(
                    "INSERT INTO projects (id, name, created_at) VALUES "
                    "('p1', 'admin', CURRENT_TIMESTAMP), ('p2', 'demo', CURRENT_TIMESTAMP)"
                )
            )
            for uid, name, project, role in (
                ("u1", "admin", "p1", "admin"),
                ("u2", "alice", "p2", "member"),
            ):
                s.execute(text("INSERT INTO users (id, name, password_hash, project_id, role, "
                               "enabled, created_at) VALUES (:id, :name, 'x', :p, :role, true, "
                               "CURRENT_TIMESTAMP)"),
                          {"id": uid, "name": name, "p": project, "role": role})  # fmt: skip
            s.execute(text("INSERT INTO tokens (id, token_hash, user_id, project_id, issued_at, "
                           "expires_at) VALUES ('t1', 'h', 'u2', 'p2', CURRENT_TIMESTAMP, "
                           "CURRENT_TIMESTAMP)"))  # fmt: skip
        database.upgrade()
        with database.session() as s:
            a = RoleAssignment
            rows = s.execute(select(a.user_id, a.project_id, a.role).order_by(a.user_id))
            assert s.scalar(select(Token.user_id)) == "u2"  # SQLite's table copy kept it
            assert [tuple(r) for r in rows] == [("u1", "p1", "admin"), ("u2", "p2", "member")]
            s.delete(s.get_one(Project, "p2"))  # a user's default project may go now
            s.flush()
            assert s.get_one(User, "u2").project_id is None
            s.rollback()
        database.downgrade("0006")
        with database.session() as s:
            roles = s.execute(text("SELECT name, role FROM users ORDER BY name")).all()
        assert [tuple(r) for r in roles] == [("admin", "admin"), ("alice", "member")]
    finally:
        database.dispose()


def test_json_columns_round_trip(db: Database) -> None:
    decisions = [
        {"at_s": 1.25, "action": "continue", "reason": "iteration 1 of 3", "source": "policy"},
        {"at_s": 3.5, "action": "switch-to-postcopy", "reason": "dirty rate 812 MiB/s ≥ 400"},
    ]
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(s, server, decisions=decisions, phase_times={"queued": 0.0})
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert m.decisions == decisions
        m.decisions.append({"at_s": 9.0, "action": "abort", "reason": "operator"})
        m.phase_times["running-postcopy"] = 3.5
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert [d["action"] for d in m.decisions] == ["continue", "switch-to-postcopy", "abort"]
        assert m.phase_times == {"queued": 0.0, "running-postcopy": 3.5}


def test_in_place_changes_to_default_json_values_are_saved(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(s, server)
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        m.decisions.append({"action": "continue"})
        m.phase_times["preparing"] = 0.1
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert (m.decisions, m.phase_times) == ([{"action": "continue"}], {"preparing": 0.1})


def test_byte_counts_beyond_32_bits(db: Database) -> None:
    big = 5 * 2**32 + 7  # 20 GiB and change
    huge = 2**62 + 1
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(
            s, server, memory_total_bytes=big, disk_total_bytes=huge, memory_processed_bytes=big
        )
        m.samples.append(
            MigrationSample(elapsed_s=1.0, memory_total_bytes=big, dirty_rate_bytes_s=huge)
        )
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert (m.memory_total_bytes, m.memory_processed_bytes, m.disk_total_bytes) == (
            big,
            big,
            huge,
        )
        assert (m.samples[0].memory_total_bytes, m.samples[0].dirty_rate_bytes_s) == (big, huge)


def test_engine_samples_round_trip(db: Database) -> None:
    sample = Sample(
        elapsed_s=2.5,
        memory_total_bytes=8 * GIB,
        memory_processed_bytes=6 * GIB,
        memory_remaining_bytes=2 * GIB,
        dirty_rate_bytes_s=300 * 2**20,
        bandwidth_bytes_s=50 * 2**20,
        iteration=4,
        postcopy=True,
        postcopy_requests=17,
        disk_total_bytes=20 * GIB,
        disk_processed_bytes=20 * GIB,
        disk_remaining_bytes=0,
    )
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(s, server)
        m.samples.append(MigrationSample.from_sample(sample))
        migration_id = m.id
    with db.session() as s:
        assert s.get_one(Migration, migration_id).samples[0].to_sample() == sample


def test_timestamps_come_back_aware_in_utc(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two)
    before = datetime.now(UTC)
    with db.session() as s:
        *_, server = add_world(s)
        m = add_migration(s, server, started_at=started)
        migration_id = m.id
    with db.session() as s:
        m = s.get_one(Migration, migration_id)
        assert m.started_at == started  # the same instant...
        assert m.started_at is not None and m.started_at.tzinfo == UTC  # ...in UTC
        assert m.started_at.hour == 1
        assert m.server.host is not None
        for stamp in (m.created_at, m.updated_at, m.server.created_at, m.server.host.created_at):
            assert stamp.tzinfo == UTC
            assert before - timedelta(seconds=5) <= stamp <= datetime.now(UTC)
        assert m.finished_at is None


def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db.session() as s:
        *_, server = add_world(s)
        add_migration(s, server, started_at=datetime(2026, 1, 2, 3, 4, 5))


def test_updated_at_moves_when_a_record_changes(db: Database) -> None:
    with db.session() as s:
        _, _, host, _, _ = add_world(s)
        host_id, created, updated = host.id, host.created_at, host.updated_at
    with db.session() as s:
        s.get_one(Host, host_id).state = "down"
    with db.session() as s:
        host = s.get_one(Host, host_id)
        assert host.updated_at > updated
        assert host.created_at == created
