"""ORBIT's tables as SQLAlchemy 2 typed ORM models.

::

    projects <-- users <-- tokens <-- dashboard_sessions (CASCADE)
       ^  ^  ^     ^
       |  |  +-- role_assignments (user, project, role; CASCADE both ways)
       |  |
       |  +----- servers --> hosts
       |           ^           ^
       |           |           | source_host_id, dest_host_id (SET NULL)
       +------ migrations -----+
                   ^           ^
                   |           +-- drains (host_id SET NULL; items name servers and
                   |                       migrations by id, in JSON)
                   +-- migration_samples (ON DELETE CASCADE)

    instances, server_secrets: no references

Conventions:

- String ids are uuid4 strings (:func:`~orbit.db.types.new_id`); a server's id is its libvirt
  domain UUID. Migrations have integer ids, as Nova's do, and a ``uuid`` as well.
- Every timestamp is a :class:`~orbit.db.types.UTCDateTime`: aware UTC in, aware UTC out.
- Value sets (roles, host states, server statuses, power states, migration phases) are
  plain strings or ints checked by the database (``CHECK`` constraints), so a record can
  never hold a value the code does not know. A new :class:`~orbit.migration.phase.Phase`
  therefore needs a schema migration; the tests catch a forgotten one.
- The schema itself is created by Alembic (:meth:`orbit.db.database.Database.upgrade`),
  never by ``metadata.create_all``; a test checks that the two agree.
- JSON columns (``decisions``, ``phase_times``) track ``append``/``[key] = value`` on the
  list or dict itself; changes inside a nested value need the attribute assigned anew.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orbit.db.types import UUID_LEN, UTCDateTime, new_id, utcnow
from orbit.migration.model import (
    DEFAULT_COMPLETION_TIMEOUT_S,
    DEFAULT_DOWNTIME_LIMIT_MS,
    DEFAULT_POST_COPY_AFTER_ITERATIONS,
    DEFAULT_POSTCOPY_WEIGHT,
    MigrationSettings,
    Policy,
    Sample,
)
from orbit.migration.phase import Phase

#: Constraint names Alembic can rely on (batch mode on SQLite needs named constraints).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LEN = 255
URI_LEN = 1024
#: Nova's limit for a service's disabled_reason
REASON_LEN = 255
STATUS_LEN = 32
#: an orbit-server instance's id: host name, PID and a random part
OWNER_LEN = 128
SHA256_HEX_LEN = 64


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class HostState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class DrainState(StrEnum):
    """A host drain's state: running until every VM has moved, failed or stayed."""

    RUNNING = "running"
    #: cancelled; migrations already started run to their end, nothing new starts
    CANCELLING = "cancelling"
    #: every VM moved
    COMPLETED = "completed"
    #: it ended with VMs still on the host (each item says why)
    INCOMPLETE = "incomplete"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (DrainState.COMPLETED, DrainState.INCOMPLETE, DrainState.CANCELLED)


class ServerStatus(StrEnum):
    """Nova's server statuses, the subset ORBIT reports."""

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    SHUTOFF = "SHUTOFF"
    MIGRATING = "MIGRATING"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class PowerState(IntEnum):
    """Nova's power-state codes (``OS-EXT-STS:power_state``)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


DEFAULT_MIGRATION_TYPE = "live-migration"


def _one_of(column: str, values: Iterable[str | int]) -> str:
    """SQL text for a CHECK that ``column`` holds one of ``values`` (enum members or plain)."""
    literals = (f"'{v}'" if isinstance(v, str) else str(int(v)) for v in values)
    return f"{column} IN ({', '.join(literals)})"


#: SQL text: a migration that has not ended (its server is being migrated)
ACTIVE_MIGRATION = _one_of("status", (p for p in Phase if not p.is_final))
#: SQL text: a drain that has not ended
ACTIVE_DRAIN = _one_of("status", (d for d in DrainState if not d.is_final))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="project")

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r})"


class User(Base):
    """A user; what it may do comes from its role assignments. ``project_id`` is its
    default project (Keystone's ``default_project_id``): where a log-in without a scope
    lands."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    password_hash: Mapped[str] = mapped_column(String(NAME_LEN))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    project: Mapped[Project | None] = relationship(back_populates="users")
    tokens: Mapped[list[Token]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    assignments: Mapped[list[RoleAssignment]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, name={self.name!r})"


class RoleAssignment(Base):
    """A user holds a role on a project (Keystone's project role assignment). The admin
    role on any project makes the user an admin (Nova's ``role:admin``)."""

    __tablename__ = "role_assignments"
    __table_args__ = (CheckConstraint(_one_of("role", Role), name="role"),)

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(STATUS_LEN), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="assignments")
    project: Mapped[Project] = relationship()

    def __repr__(self) -> str:
        return f"RoleAssignment({self.user_id!r}, {self.project_id!r}, {self.role!r})"


class Token(Base):
    """An API token. Only its SHA-256 (hex) is stored: a database dump leaks no token."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")
    project: Mapped[Project] = relationship()

    def __repr__(self) -> str:
        return f"Token(id={self.id!r}, user_id={self.user_id!r}, expires_at={self.expires_at!r})"


class Host(Base):
    """A hypervisor host: a libvirt URI, and where migration streams to it should go."""

    __tablename__ = "hosts"
    __table_args__ = (CheckConstraint(_one_of("state", HostState), name="state"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    uri: Mapped[str] = mapped_column(String(URI_LEN))
    #: e.g. 'tcp://198.18.0.2'; None lets libvirt choose
    migration_address: Mapped[str | None] = mapped_column(String(URI_LEN))
    state: Mapped[str] = mapped_column(String(STATUS_LEN), default=HostState.UNKNOWN.value)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    memory_total_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_free_mib: Mapped[int] = mapped_column(Integer, default=0)
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    #: the rate migrations to this host can expect before any has run (auto's plan)
    link_mib_s: Mapped[int | None] = mapped_column(Integer)
    #: an operator's switch (Nova's service status): a disabled host takes no new VMs
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled_reason: Mapped[str | None] = mapped_column(String(REASON_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    servers: Mapped[list[Server]] = relationship(back_populates="host", passive_deletes=True)

    def __repr__(self) -> str:
        return f"Host(id={self.id!r}, name={self.name!r}, state={self.state!r})"


class Server(Base):
    """A VM (a libvirt domain); ``host_id`` is where it runs now, None if unknown."""

    __tablename__ = "servers"
    __table_args__ = (
        CheckConstraint(_one_of("status", ServerStatus), name="status"),
        CheckConstraint(_one_of("power_state", PowerState), name="power_state"),
    )

    #: the libvirt domain UUID
    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(STATUS_LEN), default=ServerStatus.UNKNOWN.value)
    power_state: Mapped[int] = mapped_column(Integer, default=PowerState.NOSTATE.value)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    host: Mapped[Host | None] = relationship(back_populates="servers")
    project: Mapped[Project | None] = relationship()
    migrations: Mapped[list[Migration]] = relationship(
        back_populates="server", order_by="Migration.id"
    )

    # its host's name, state and switch (None without a host), as the server views read
    # them (a list reads them with the servers, from the hosts table)
    @property
    def host_name(self) -> str | None:
        return self.host.name if self.host is not None else None

    @property
    def host_state(self) -> str | None:
        return self.host.state if self.host is not None else None

    @property
    def host_disabled(self) -> bool | None:
        return self.host.disabled if self.host is not None else None

    def __repr__(self) -> str:
        return f"Server(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class Migration(Base):
    """One migration attempt, its frozen settings (STYLE 4), progress and outcome.

    ``status`` is a :class:`~orbit.migration.phase.Phase` value. A retry is a new record.
    Deleting a server that has migrations is refused by the database (the history stays);
    deleting a host leaves its migrations with ``source_host_id``/``dest_host_id`` NULL.
    """

    __tablename__ = "migrations"
    __table_args__ = (
        CheckConstraint(_one_of("status", Phase), name="status"),
        CheckConstraint(_one_of("policy", Policy), name="policy"),
        # at most one migration per server that has not ended: the database decides
        # between simultaneous requests, on any number of orbit-server processes
        Index(
            "uq_migrations_one_active_per_server",
            "server_id",
            unique=True,
            sqlite_where=text(ACTIVE_MIGRATION),
            postgresql_where=text(ACTIVE_MIGRATION),
        ),
        # os-migrations' order, newest first: a page reads 50 rows of the index, not the
        # whole history (20,000 records: 3 ms instead of 62 ms on PostgreSQL)
        Index("ix_migrations_created_at_id", "created_at", "id"),
        # the scheduler's reserve: per host, the completed migrations to it that ended
        # after its last survey (20,000 records: 0.6 ms instead of 21 ms on PostgreSQL)
        Index("ix_migrations_dest_status_finished", "dest_host_id", "status", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), unique=True, default=new_id)
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id"), index=True)
    source_host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    dest_host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(STATUS_LEN), default=Phase.QUEUED.value, index=True)
    migration_type: Mapped[str] = mapped_column(String(STATUS_LEN), default=DEFAULT_MIGRATION_TYPE)

    # The settings it ran under, frozen when the record is created (set them with
    # ``migration.settings = MigrationSettings.resolve(...)``); defaults are MigrationSettings'.
    post_copy: Mapped[bool] = mapped_column(Boolean, default=False)
    policy: Mapped[str] = mapped_column(String(STATUS_LEN), default=Policy.PRECOPY.value)
    post_copy_after_iterations: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_POST_COPY_AFTER_ITERATIONS
    )
    block_migration: Mapped[bool] = mapped_column(Boolean, default=False)
    disk_over_commit: Mapped[bool] = mapped_column(Boolean, default=False)
    completion_timeout_s: Mapped[float] = mapped_column(Float, default=DEFAULT_COMPLETION_TIMEOUT_S)
    downtime_limit_ms: Mapped[int] = mapped_column(Integer, default=DEFAULT_DOWNTIME_LIMIT_MS)
    #: 0 = unlimited
    bandwidth_mib_s: Mapped[int] = mapped_column(Integer, default=0)
    postcopy_weight: Mapped[float] = mapped_column(Float, default=DEFAULT_POSTCOPY_WEIGHT)

    # Progress (the latest sample) and outcome.
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_remaining_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_remaining_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    iterations: Mapped[int] = mapped_column(Integer, default=0)
    postcopy_requests: Mapped[int] = mapped_column(Integer, default=0)
    downtime_ms: Mapped[int | None] = mapped_column(Integer)
    #: when post-copy started, seconds since the job started; None if it never switched
    switch_at_s: Mapped[float | None] = mapped_column(Float)
    total_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    #: DecisionRecords as dicts: {"at_s", "action", "reason", "source"}
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(
        MutableList.as_mutable(JSON()), default=list
    )
    #: phase value -> seconds since the job started when the migration entered it
    phase_times: Mapped[dict[str, float]] = mapped_column(
        MutableDict.as_mutable(JSON()), default=dict
    )
    #: auto's plan (orbit.migration.predict.Plan.to_dict()); None for other policies
    prediction: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    #: bytes/s pre-copy achieved on the link; the next plan between these hosts uses it
    transfer_rate_bytes_s: Mapped[int | None] = mapped_column(BigInteger)
    #: what the guest dirtied during pass 1, and the pass's seconds: the next plan for this
    #: server learns its working set from them
    pass1_dirtied_bytes: Mapped[int | None] = mapped_column(BigInteger)
    pass1_s: Mapped[float | None] = mapped_column(Float)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    project_id: Mapped[str | None] = mapped_column(String(UUID_LEN), index=True)
    # Who drives it (several orbit-server instances on one PostgreSQL): the instance that
    # claimed it, until when (renewed every few seconds), and the claim's number, which
    # every write of the driver checks: a write of an earlier claim is refused.
    owner: Mapped[str | None] = mapped_column(String(OWNER_LEN))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: an operator's request that another instance took for the owner: "force-complete",
    #: "abort" or "resume"; the owner applies and clears it (within a lease renewal)
    requested: Mapped[str | None] = mapped_column(String(STATUS_LEN))

    server: Mapped[Server] = relationship(back_populates="migrations")
    source_host: Mapped[Host | None] = relationship(foreign_keys=[source_host_id])
    dest_host: Mapped[Host | None] = relationship(foreign_keys=[dest_host_id])
    user: Mapped[User | None] = relationship()
    samples: Mapped[list[MigrationSample]] = relationship(
        back_populates="migration",
        order_by="MigrationSample.elapsed_s",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def phase(self) -> Phase:
        return Phase(self.status)

    @property
    def settings(self) -> MigrationSettings:
        """The settings this migration ran under, as the engine takes them."""
        return settings_of(self)

    @settings.setter
    def settings(self, settings: MigrationSettings) -> None:
        for column, value in settings_columns(settings).items():
            setattr(self, column, value)

    def __repr__(self) -> str:
        return f"Migration(id={self.id!r}, server_id={self.server_id!r}, status={self.status!r})"


def settings_of(record: Any) -> MigrationSettings:
    """The settings held in a migration's columns: those of a :class:`Migration`, or of a
    Core row that selected them under their names (no ORM object loaded)."""
    return MigrationSettings(
        post_copy=record.post_copy,
        policy=Policy(record.policy),
        post_copy_after_iterations=record.post_copy_after_iterations,
        completion_timeout_s=record.completion_timeout_s,
        downtime_limit_ms=record.downtime_limit_ms,
        bandwidth_mib_s=record.bandwidth_mib_s,
        block_migration=record.block_migration,
        postcopy_weight=record.postcopy_weight,
    )


def settings_columns(settings: MigrationSettings) -> dict[str, Any]:
    """The migrations table's columns that hold ``settings`` (for an insert without the ORM)."""
    return {
        "post_copy": settings.post_copy,
        "policy": settings.policy.value,
        "post_copy_after_iterations": settings.post_copy_after_iterations,
        "completion_timeout_s": settings.completion_timeout_s,
        "downtime_limit_ms": settings.downtime_limit_ms,
        "bandwidth_mib_s": settings.bandwidth_mib_s,
        "block_migration": settings.block_migration,
        "postcopy_weight": settings.postcopy_weight,
    }


class MigrationSample(Base):
    """One progress reading of a migration (a stored :class:`~orbit.migration.model.Sample`)."""

    __tablename__ = "migration_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    migration_id: Mapped[int] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), index=True
    )
    elapsed_s: Mapped[float] = mapped_column(Float)
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_remaining_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    dirty_rate_bytes_s: Mapped[int] = mapped_column(BigInteger, default=0)
    bandwidth_bytes_s: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_remaining_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    postcopy: Mapped[bool] = mapped_column(Boolean, default=False)
    postcopy_requests: Mapped[int] = mapped_column(Integer, default=0)

    migration: Mapped[Migration] = relationship(back_populates="samples")

    @classmethod
    def from_sample(cls, sample: Sample) -> MigrationSample:
        """A row for the engine's ``sample`` (append it to ``Migration.samples``)."""
        return cls(
            elapsed_s=sample.elapsed_s,
            memory_total_bytes=sample.memory_total_bytes,
            memory_processed_bytes=sample.memory_processed_bytes,
            memory_remaining_bytes=sample.memory_remaining_bytes,
            dirty_rate_bytes_s=sample.dirty_rate_bytes_s,
            bandwidth_bytes_s=sample.bandwidth_bytes_s,
            disk_total_bytes=sample.disk_total_bytes,
            disk_processed_bytes=sample.disk_processed_bytes,
            disk_remaining_bytes=sample.disk_remaining_bytes,
            iteration=sample.iteration,
            postcopy=sample.postcopy,
            postcopy_requests=sample.postcopy_requests,
        )

    def to_sample(self) -> Sample:
        """The engine's :class:`~orbit.migration.model.Sample` this row stores."""
        return Sample(
            elapsed_s=self.elapsed_s,
            memory_total_bytes=self.memory_total_bytes,
            memory_processed_bytes=self.memory_processed_bytes,
            memory_remaining_bytes=self.memory_remaining_bytes,
            dirty_rate_bytes_s=self.dirty_rate_bytes_s,
            bandwidth_bytes_s=self.bandwidth_bytes_s,
            iteration=self.iteration,
            postcopy=self.postcopy,
            postcopy_requests=self.postcopy_requests,
            disk_total_bytes=self.disk_total_bytes,
            disk_processed_bytes=self.disk_processed_bytes,
            disk_remaining_bytes=self.disk_remaining_bytes,
        )

    def __repr__(self) -> str:
        return f"MigrationSample(migration_id={self.migration_id!r}, elapsed_s={self.elapsed_s!r})"


class Instance(Base):
    """An orbit-server instance that is alive: it writes ``seen_at`` every few seconds
    (several instances share the work of one PostgreSQL database)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(OWNER_LEN), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"Instance(id={self.id!r}, seen_at={self.seen_at!r})"


class Drain(Base):
    """The drain of a host: its plan, one item per VM, and each VM's outcome.

    ``items`` is a list of dicts, in the order the VMs start: ``server_id``, ``name``,
    ``memory_mib``, the plan's ``dest``, ``policy``, ``strategy``, ``predicted_s``,
    ``predicted_postcopy_s``, ``at_risk`` and ``reason``, then what happened: ``state``
    (pending, migrating, moved, failed, stuck, cancelled), ``migration_id``, ``attempts``
    and ``outcome`` (one line). Only the conductor's drain step writes them.
    """

    __tablename__ = "drains"
    __table_args__ = (
        CheckConstraint(_one_of("status", DrainState), name="status"),
        # one unfinished drain per host
        Index(
            "uq_drains_one_active_per_host",
            "host_id",
            unique=True,
            sqlite_where=text(ACTIVE_DRAIN),
            postgresql_where=text(ACTIVE_DRAIN),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), unique=True, default=new_id)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    #: kept when the host is unregistered later
    host_name: Mapped[str] = mapped_column(String(NAME_LEN))
    status: Mapped[str] = mapped_column(String(STATUS_LEN), default=DrainState.RUNNING.value)
    post_copy: Mapped[bool] = mapped_column(Boolean, default=False)
    max_parallel: Mapped[int] = mapped_column(Integer, default=1)
    #: how many at once the plan chose (max_parallel, capped by the host's limit)
    parallel: Mapped[int] = mapped_column(Integer, default=1)
    deadline_s: Mapped[float | None] = mapped_column(Float)
    #: the hosts the operator allowed; None = any enabled host
    targets: Mapped[list[str] | None] = mapped_column(JSON())
    items: Mapped[list[dict[str, Any]]] = mapped_column(
        MutableList.as_mutable(JSON()), default=list
    )
    notes: Mapped[list[str]] = mapped_column(JSON(), default=list)
    predicted_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    project_id: Mapped[str | None] = mapped_column(String(UUID_LEN))

    host: Mapped[Host | None] = relationship()

    @property
    def state(self) -> DrainState:
        return DrainState(self.status)

    def __repr__(self) -> str:
        return f"Drain(id={self.id!r}, host={self.host_name!r}, status={self.status!r})"


class DashboardSession(Base):
    """A browser logged in to the dashboard. Only the SHA-256 (hex) of the id its cookie
    holds is stored; the session ends with its ORBIT token (``ON DELETE CASCADE``). In the
    database, so that any orbit-server instance serves any browser and a restart logs no
    one out."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), primary_key=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"))
    #: one-time messages for the next page: [level, text] pairs
    flashes: Mapped[list[list[str]]] = mapped_column(JSON(), default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    def __repr__(self) -> str:
        return f"DashboardSession(token_id={self.token_id!r}, last_used_at={self.last_used_at!r})"


class ServerSecret(Base):
    """A secret all orbit-server instances share (made by the first that needs it), e.g.
    the key that signs the dashboard's log-in form."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"ServerSecret(name={self.name!r})"  # never the value
