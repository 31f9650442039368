"""What the dashboard pages read from the database: data functions, no HTTP.

They take a session and keyword arguments and return ORM rows (or plain tuples of them);
:mod:`orbit.dashboard.present` turns those into what templates and the JSON show.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orbit.conductor.inventory import ACTIVE_PHASES
from orbit.db.models import Drain, Host, HostState, Migration, MigrationSample, Server
from orbit.errors import ComputeHostNotFound, DrainNotFound, MigrationNotFound, ServerNotFound
from orbit.identity.policy import sees_server, visible_migrations, visible_servers
from orbit.identity.service import AuthContext


@dataclass(frozen=True)
class ServerRow:
    server: Server
    #: the migration in progress, if any (newest first)
    migration: Migration | None


@dataclass(frozen=True)
class HostRow:
    host: Host
    servers: int


def servers(session: Session, *, auth: AuthContext) -> list[ServerRow]:
    """Every server the caller may see, by name, with its migration in progress (one query
    for those)."""
    active: dict[str, Migration] = {}
    for m in session.scalars(
        visible_migrations(
            select(Migration).where(Migration.status.in_(ACTIVE_PHASES)).order_by(Migration.id),
            auth,
        )
    ):
        active[m.server_id] = m  # the newest wins
    rows = session.scalars(visible_servers(select(Server).order_by(Server.name, Server.id), auth))
    return [ServerRow(s, active.get(s.id)) for s in rows]


def server(session: Session, *, server_id: str, auth: AuthContext) -> Server:
    found = session.get(Server, server_id)
    if found is None or not sees_server(auth, found):
        raise ServerNotFound(f"server {server_id[:60]} could not be found")
    return found


def host(session: Session, *, name: str) -> Host:
    found = session.scalar(select(Host).where(Host.name == name))
    if found is None:
        raise ComputeHostNotFound(f"host {name} is not registered")
    return found


def drain(session: Session, *, drain_id: int) -> Drain:
    found = session.get(Drain, drain_id) if 0 < drain_id < 2**63 else None
    if found is None:
        raise DrainNotFound(f"drain {drain_id} could not be found")
    return found


def hosts(session: Session) -> list[HostRow]:
    """Every registered host, by name, with how many servers it holds."""
    rows = session.execute(select(Server.host_id, func.count(Server.id)).group_by(Server.host_id))
    counts: dict[str | None, int] = {host_id: int(n) for host_id, n in rows}
    return [
        HostRow(h, int(counts.get(h.id, 0)))
        for h in session.scalars(select(Host).order_by(Host.name))
    ]


def destinations(session: Session, *, source_host_id: str | None) -> list[Host]:
    """Hosts a server on ``source_host_id`` could move to now: up, enabled, not the source."""
    query = (
        select(Host)
        .where(Host.state == HostState.UP.value, Host.disabled.is_(False))
        .order_by(Host.name)
    )
    if source_host_id is not None:
        query = query.where(Host.id != source_host_id)
    return list(session.scalars(query))


def migrations(session: Session) -> list[Migration]:
    """Every migration, newest first."""
    return list(session.scalars(select(Migration).order_by(Migration.id.desc())))


def migration(session: Session, *, migration_id: int, auth: AuthContext) -> Migration:
    """One migration, if the caller may see its server."""
    # ids are 64-bit: a larger number in a URL is simply not found (not an overflow error)
    found = session.get(Migration, migration_id) if 0 < migration_id < 2**63 else None
    if found is None or not sees_server(auth, found.server):
        raise MigrationNotFound(f"migration {migration_id} could not be found")
    return found


def samples(session: Session, *, migration_id: int, after_s: float) -> list[MigrationSample]:
    """The migration's progress samples taken after ``after_s`` (seconds), oldest first."""
    return list(
        session.scalars(
            select(MigrationSample)
            .where(
                MigrationSample.migration_id == migration_id, MigrationSample.elapsed_s > after_s
            )
            .order_by(MigrationSample.elapsed_s)
        )
    )


def latest_sample(session: Session, *, migration_id: int) -> MigrationSample | None:
    return session.scalar(
        select(MigrationSample)
        .where(MigrationSample.migration_id == migration_id)
        .order_by(MigrationSample.elapsed_s.desc())
        .limit(1)
    )
