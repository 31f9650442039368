"""Hosts and servers as libvirt sees them, mirrored into the database.

:func:`survey_hosts` asks every registered host for its capacity and domains (in parallel,
with no database session open) and :func:`apply_survey` updates the ``hosts`` and
``servers`` tables from the answers. Rules:

- A host that does not answer is marked ``down``; its servers keep their rows and their
  host (they are not lost, only unknown: status ``UNKNOWN``).
- A domain can exist on two hosts during a migration (running on the source, paused for the
  incoming migration on the destination). The server's host is the best-ranked copy:
  running, then paused for another reason, then paused for the migration, then shut off.
- Servers with a migration in progress belong to the conductor: sync leaves their status
  (``MIGRATING``) and host alone; so does a survey older than a server's last migration's
  end (it saw the VM where it was before, or nowhere while it moved): the next one tells.
- A server belongs to the project its domain's metadata names (by id, else by name;
  :class:`~orbit.virt.driver.Owner`), to none when it names none or one ORBIT does not
  know: only admins see a server without a project.
- A server no longer found on any answering host, whose host answers, has gone: its row is
  deleted if it has no migration history, else kept with status ``SHUTOFF`` and no host.
- A survey of some hosts only (the two ends of migrations that just ended) judges the
  servers on those hosts and those it finds there, no other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from orbit.db.models import (
    Host,
    HostState,
    Migration,
    PowerState,
    Project,
    Server,
    ServerStatus,
)
from orbit.db.types import utcnow
from orbit.errors import HypervisorError
from orbit.migration.phase import Phase
from orbit.virt.driver import DomainInfo, DomainState, HostInfo, HypervisorDriver, Owner

log = logging.getLogger(__name__)

ACTIVE_PHASES = tuple(p.value for p in Phase if not p.is_final)
_MIGRATION_REASONS = ("migration", "postcopy", "postcopy-failed", "incoming-migration")


def status_of(info: DomainInfo) -> tuple[ServerStatus, PowerState]:
    """Nova's status and power state for a libvirt domain state."""
    if info.state is DomainState.RUNNING:
        return ServerStatus.ACTIVE, PowerState.RUNNING
    if info.state is DomainState.PAUSED:
        return ServerStatus.PAUSED, PowerState.PAUSED
    if info.state is DomainState.SHUTOFF:
        return ServerStatus.SHUTOFF, PowerState.SHUTDOWN
    if info.state is DomainState.CRASHED:
        return ServerStatus.ERROR, PowerState.CRASHED
    return ServerStatus.UNKNOWN, PowerState.NOSTATE


def _rank(info: DomainInfo) -> int:
    if info.state is DomainState.RUNNING:
        return 0
    if info.state is DomainState.PAUSED:
        return 2 if info.reason in _MIGRATION_REASONS else 1
    return 3


@dataclass(frozen=True)
class SyncReport:
    hosts_up: int
    hosts_down: int
    servers: int


@dataclass(frozen=True)
class Survey:
    """What one host said when asked (``error`` set: it did not answer)."""

    asked_at: datetime
    capacity: HostInfo | None = None
    domains: tuple[DomainInfo, ...] = ()
    error: str | None = None


#: hosts asked at once: a host that does not answer holds up only its own answer
SURVEY_THREADS = 8


def survey_hosts(driver: HypervisorDriver, uris: Sequence[str]) -> dict[str, Survey]:
    """Ask every host for its capacity and domains, in parallel; no database involved."""

    def ask(uri: str) -> Survey:
        asked_at = utcnow()  # what it reports is at least this fresh (see reserved_mib)
        try:
            return Survey(asked_at, driver.host_info(uri), tuple(driver.list_domains(uri)))
        except HypervisorError as err:
            return Survey(asked_at, error=str(err))

    if not uris:
        return {}
    with ThreadPoolExecutor(min(SURVEY_THREADS, len(uris)), "survey") as pool:
        return dict(zip(uris, pool.map(ask, uris), strict=True))


class ProjectIndex:
    """Project ids by id and by name, read once per sync."""

    def __init__(self, session: Session) -> None:
        rows = session.execute(select(Project.id, Project.name)).all()
        self.ids = {pid for pid, _name in rows}
        self.by_name = {name: pid for pid, name in rows}

    def resolve(self, owner: Owner | None) -> str | None:
        """The id of the project ``owner`` names: by id first, then by name."""
        if owner is None:
            return None
        if owner.project_id in self.ids:
            return owner.project_id
        return self.by_name.get(owner.project_name or "")


def sync_inventory(session: Session, driver: HypervisorDriver) -> SyncReport:
    """Survey every host, then record it (tests; the conductor does the two apart so that
    no database session waits on a host)."""
    uris = list(session.scalars(select(Host.uri)))
    return apply_survey(session, survey_hosts(driver, uris))


#: the columns a sync compares (Core rows: loading 250 ORM objects every sync cost more
#: than the rest of it; only what changed is written)
_HOSTS = select(Host.id, Host.name, Host.uri, Host.state).order_by(Host.name)
_SERVERS = select(
    Server.id,
    Server.name,
    Server.host_id,
    Server.status,
    Server.power_state,
    Server.memory_mib,
    Server.vcpus,
    Server.project_id,
    Server.updated_at,
)
#: a server gone from its answering host, with a migration history: kept, shut off
_GONE = {
    "status": ServerStatus.SHUTOFF.value,
    "power_state": PowerState.SHUTDOWN.value,
    "host_id": None,
}
_HOST_TABLE = Host.__table__
_SERVER_TABLE = Server.__table__


def apply_survey(session: Session, surveys: dict[str, Survey]) -> SyncReport:
    """Record what the hosts said; see the module docstring for the rules. A host added
    after the survey is left for the next one. Writes only what changed (and each
    answering host's capacity and time seen)."""
    now = utcnow()
    every_host = list(session.execute(_HOSTS))
    hosts = [h for h in every_host if h.uri in surveys]
    # some hosts only (a migration's ends): a server elsewhere, or on no host, is not
    # judged gone or unknown by a survey that did not look there
    surveyed = {h.id for h in hosts} if len(hosts) < len(every_host) else None
    found: dict[str, tuple[int, str, DomainInfo]] = {}
    answering: set[str] = set()
    host_rows: list[dict[str, Any]] = []
    for host in hosts:
        said = surveys[host.uri]
        if said.capacity is None:
            if host.state != HostState.DOWN.value:
                log.warning("host down host=%s error=%s", host.name, said.error)
                host_rows.append({"id": host.id, "state": HostState.DOWN.value})
            continue
        capacity = said.capacity
        answering.add(host.id)
        host_rows.append(
            {
                "id": host.id,
                "state": HostState.UP.value,
                "last_seen_at": said.asked_at,
                "memory_total_mib": capacity.memory_total_mib,
                "memory_free_mib": capacity.memory_free_mib,
                "vcpus": capacity.cpus,
            }
        )
        for info in said.domains:
            if info.state is DomainState.SHUTOFF and not info.persistent:
                continue
            candidate = (_rank(info), host.id, info)
            best = found.get(info.uuid)
            if best is None or candidate[0] < best[0]:
                found[info.uuid] = candidate
    _update_rows(session, _HOST_TABLE, host_rows, now)

    migrating = set(
        session.scalars(select(Migration.server_id).where(Migration.status.in_(ACTIVE_PHASES)))
    )
    oldest = min((said.asked_at for said in surveys.values()), default=now)
    if surveys:  # moved since the oldest answer was given: that answer may predate the move
        migrating |= set(
            session.scalars(select(Migration.server_id).where(Migration.finished_at >= oldest))
        )
    projects = ProjectIndex(session) if found else None
    known = {row.id: row for row in session.execute(_SERVERS)}  # one query, not one each
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    for uuid, (_rank_value, host_id, info) in found.items():
        want: dict[str, Any] = {
            "name": info.name,
            "memory_mib": info.memory_mib,
            "vcpus": info.vcpus,
        }
        row = known.get(uuid)
        # a row written since the oldest answer was given (a project assigned: the domain's
        # metadata, then the row) may be newer than what that answer says of its owner
        if projects is not None and (row is None or row.updated_at < oldest):
            want["project_id"] = projects.resolve(info.owner)
        if uuid not in migrating:
            status, power = status_of(info)
            want |= {"host_id": host_id, "status": status.value, "power_state": power.value}
        if row is None:
            log.info("server discovered name=%s host=%s", info.name, _name_of(hosts, host_id))
            new_rows.append({"id": uuid, **want})
        elif any(getattr(row, key) != value for key, value in want.items()):
            changed_rows.append({"id": uuid, **want})

    gone = []
    for row in known.values():
        if row.id in found or row.id in migrating:
            continue
        if surveyed is not None and row.host_id not in surveyed:
            continue
        if row.host_id is not None and row.host_id not in answering:
            if row.status != ServerStatus.UNKNOWN.value:  # its host is down: keep it
                changed_rows.append({"id": row.id, "status": ServerStatus.UNKNOWN.value})
            continue
        gone.append(row)
    if gone:
        with_history = set(
            session.scalars(
                select(Migration.server_id).where(Migration.server_id.in_([r.id for r in gone]))
            )
        )
        for row in gone:
            if row.id not in with_history:
                log.info("server gone name=%s", row.name)
                session.execute(delete(Server).where(Server.id == row.id))
            elif any(getattr(row, key) != value for key, value in _GONE.items()):
                changed_rows.append({"id": row.id, **_GONE})
    if new_rows:
        session.execute(insert(Server), new_rows)
    _update_rows(session, _SERVER_TABLE, changed_rows, now)
    session.expire_all()  # objects this session loaded before see the new rows
    return SyncReport(
        hosts_up=len(answering), hosts_down=len(hosts) - len(answering), servers=len(found)
    )


def _name_of(hosts: list[Any], host_id: str) -> str:
    return next((h.name for h in hosts if h.id == host_id), "?")


def _update_rows(session: Session, table: Any, rows: list[dict[str, Any]], now: datetime) -> None:
    """UPDATE ``table`` by id: one statement for each set of columns, executed for each
    row that has it, in id order (as the ORM's flush did: two syncs at once lock rows in
    the same order), ``updated_at`` set to ``now``."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: str(r["id"])):  # rows locked in id order: no cycle
        columns = tuple(sorted(k for k in row if k != "id"))
        groups.setdefault(columns, []).append(
            {"row_id": row["id"], **{f"new_{k}": row[k] for k in columns}, "new_updated_at": now}
        )
    for columns, params in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({k: bindparam(f"new_{k}") for k in (*columns, "updated_at")})
        )
        session.execute(statement, params)
