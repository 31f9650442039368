"""The conductor: accepts migrations, runs them with the engine, records everything.

- :meth:`Conductor.request_migration` validates a request against the database and the
  scheduler and stores a ``queued`` record; a refused request raises a specific error and
  changes nothing.
- A dispatcher thread starts queued migrations while each host has fewer than
  ``max_outgoing_per_host`` migrations leaving it and ``max_incoming_per_host`` arriving;
  the rest wait in the queue, oldest first.
- Each migration runs in a thread of its own through :class:`~orbit.migration.engine.Migration`;
  every phase change, progress sample and decision is written to the database as it
  happens (:class:`_Recorder`), and the final result when it ends.
- Several instances may share one PostgreSQL database. A migration is driven by the
  instance that *claimed* it (a compare-and-set of its ``owner``, ``lease_until`` and
  ``fence``); the owner renews its lease every third of ``lease_s``, and every write of
  its engine checks owner and fence, so an instance that lost a migration (frozen,
  partitioned) can no longer change its record. A migration whose lease ran out
  (``lease_s``, 6 s by default: its instance died) is *adopted* by another instance, or by the same
  one after a restart: it follows the job that still runs in libvirt and, once it is over,
  writes what libvirt's truth says (the VM is on the destination: completed; on the
  source: failed; split: postcopy-paused). On SQLite, one instance only
  (:class:`~orbit.db.database.InstanceLock`), it adopts everything at once when it starts.
- The same loop steps the host drains (:mod:`orbit.conductor.drains`): it starts each
  drain's next VMs as its earlier ones end.
- An inventory thread re-reads hosts and servers every ``sync_interval_s``, and after
  migrations end (one sync for those that end within :data:`SYNC_MIN_GAP_S`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import BindParameter

from orbit.conductor.drains import UNFINISHED, Drains
from orbit.conductor.inventory import ACTIVE_PHASES, apply_survey, survey_hosts
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import (
    ACTIVE_MIGRATION,
    Host,
    HostState,
    Instance,
    Migration,
    MigrationSample,
    Project,
    Server,
    ServerStatus,
    settings_columns,
    settings_of,
)
from orbit.db.types import UTCDateTime, utcnow
from orbit.errors import (
    DatabaseError,
    HypervisorError,
    InvalidMigration,
    InvalidState,
    InvalidTransition,
    JobNeverStarted,
    MigrationInProgress,
    MigrationNotFound,
    MigrationRefused,
    NoValidHost,
    OrbitError,
)
from orbit.identity.service import purge_expired
from orbit.migration.engine import (
    DecisionRecord,
    MigrationListener,
    MigrationRequest,
    MigrationResult,
)
from orbit.migration.engine import Migration as EngineMigration
from orbit.migration.model import MIB, MigrationSettings, Sample
from orbit.migration.phase import Phase
from orbit.migration.predict import Link, Plan, configured_link
from orbit.scheduler.placement import HostView, pick_host, place_in_order
from orbit.virt.driver import HypervisorDriver, Owner

#: operator requests another instance forwards to the one driving a migration
FORCE_COMPLETE, ABORT, RESUME = "force-complete", "abort", "resume"

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How often the dispatcher looks at the queue when nothing wakes it.
DISPATCH_INTERVAL_S = 1.0
#: the shortest time between two dispatch passes (requests kick the dispatcher): a pass
#: waits until no request came for this long, or at most DISPATCH_MAX_WAIT_S
DISPATCH_MIN_GAP_S = 0.1
DISPATCH_MAX_WAIT_S = 0.5
#: the shortest time between the starts of two inventory syncs (ended migrations kick it),
#: or ``sync_interval_s`` if shorter
SYNC_MIN_GAP_S = 2.0
#: Back-off when the final write of a migration's outcome fails (database down or locked).
FINAL_WRITE_RETRY_FIRST_S = 1.0
FINAL_WRITE_RETRY_MAX_S = 30.0
#: How long a finished migration waits for its recorder to write what is pending.
RECORDER_CLOSE_TIMEOUT_S = 30.0
#: samples are written this often (a second's worth in one transaction); phases and
#: decisions at once
SAMPLE_WRITE_EVERY_S = 1.0
#: How long a stopping conductor waits for each migration thread.
STOP_JOIN_TIMEOUT_S = 5.0
#: an instance renews its claims (and looks for expired ones) this often, in parts of
#: ``lease_s``: one that dies loses its migrations to another within 4/3 x lease_s
LEASE_RENEWALS = 3
#: how often an instance deletes the rows of instances long dead
FORGET_EVERY_S = 60.0


#: what a migration's start reads: its settings, its server's name, its hosts (one query)
_SRC, _DST = Host.__table__.alias("src"), Host.__table__.alias("dst")
_REQUEST = (
    select(
        Migration.server_id,
        Migration.post_copy,
        Migration.policy,
        Migration.post_copy_after_iterations,
        Migration.completion_timeout_s,
        Migration.downtime_limit_ms,
        Migration.bandwidth_mib_s,
        Migration.block_migration,
        Migration.postcopy_weight,
        Server.name.label("server_name"),
        _SRC.c.id.label("src_id"),
        _SRC.c.name.label("src_name"),
        _SRC.c.uri.label("src_uri"),
        _DST.c.id.label("dst_id"),
        _DST.c.name.label("dst_name"),
        _DST.c.uri.label("dst_uri"),
        _DST.c.migration_address.label("dst_address"),
        _DST.c.link_mib_s.label("dst_link"),
    )
    .join(Server, Server.id == Migration.server_id)
    .outerjoin(_SRC, _SRC.c.id == Migration.source_host_id)
    .outerjoin(_DST, _DST.c.id == Migration.dest_host_id)
    .where(Migration.id == bindparam("mid"))
)


def _migration_uri(host: HostEnd) -> str | None:
    return host.migration_address or None


#: How many past migrations between two hosts give the link's expected rate.
LINK_HISTORY = 5


class HostEnd(Protocol):
    """What a migration's start reads of each of its hosts (a Host, or a row of
    :data:`_REQUEST`'s as :class:`_End`)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def migration_address(self) -> str | None: ...
    @property
    def link_mib_s(self) -> int | None: ...


@dataclass(frozen=True)
class _End:
    id: str
    name: str
    uri: str
    migration_address: str | None
    link_mib_s: int | None


def _flushed(session: Session) -> Connection:
    """The session's connection, for a prebuilt Core statement (no ORM execution: a
    fraction of its processor time), once the session's pending changes are flushed (as
    the ORM's autoflush would before a query)."""
    session.flush()
    return session.connection()


_PAIR: list[BindParameter[str]] = [bindparam("host_a"), bindparam("host_b")]
#: the rates pre-copy achieved between two hosts, newest first (built once: a
#: migration's start runs it)
_LINK_RATES = (
    select(Migration.transfer_rate_bytes_s)
    .where(
        Migration.source_host_id.in_(_PAIR),
        Migration.dest_host_id.in_(_PAIR),
        Migration.source_host_id != Migration.dest_host_id,
        Migration.transfer_rate_bytes_s.is_not(None),
    )
    .order_by(Migration.id.desc())
    .limit(LINK_HISTORY)
)


def link_between(session: Session, src: HostEnd, dst: HostEnd) -> Link | None:
    """The link's expected transfer rate for auto's plan: the median of what pre-copy
    achieved in the last :data:`LINK_HISTORY` migrations between the two hosts (either
    way), else the destination's configured ``link_mib_s``, else None (the engine assumes)."""
    found = _flushed(session).execute(_LINK_RATES, {"host_a": src.id, "host_b": dst.id})
    rates = [rate for (rate,) in found if rate is not None]
    if rates:
        return Link(
            float(statistics.median(rates)),
            f"median of {len(rates)} past migration(s) {src.name} <-> {dst.name}",
        )
    if dst.link_mib_s:
        return configured_link(dst.link_mib_s * MIB, f"configured for {dst.name}")
    return None


#: pass 1 of a server's latest migration that had one (built once)
_PASS1 = (
    select(Migration.pass1_dirtied_bytes, Migration.pass1_s)
    .where(
        Migration.server_id == bindparam("server_id"),
        Migration.pass1_dirtied_bytes.is_not(None),
        Migration.pass1_s.is_not(None),
    )
    .order_by(Migration.id.desc())
    .limit(1)
)


def previous_pass1(session: Session, server_id: str) -> tuple[float, float] | None:
    """(bytes dirtied, seconds) in pass 1 of the server's latest migration that had one."""
    row = _flushed(session).execute(_PASS1, {"server_id": server_id}).first()
    if row is None or row[0] is None or row[1] is None:
        return None
    return float(row[0]), float(row[1])


def serialize_placement(session: Session) -> None:
    """Make this transaction the only one placing VMs until it ends (commit or rollback),
    across every orbit-server process: a PostgreSQL transaction-level advisory lock; on
    SQLite, the database's write lock (a write that changes nothing takes it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLACEMENT_LOCK_KEY})
    else:
        session.execute(
            update(Host)
            .where(Host.id.is_(None))
            .values(name=Host.name)
            .execution_options(synchronize_session=False)
        )


#: MiB each host will take for migrations to it (see :func:`reserved_mib`); built once (a
#: statement and its cache key cost more to build than to run). Two parts:
#: - migrations not ended, by their destination;
#: - for each host, completed migrations to it that ended after its last survey. A
#:   subquery per host reads only those from the index on (dest_host_id, status,
#:   finished_at): 0.6 ms with 20,000 completed migrations on PostgreSQL, where one join
#:   of the whole history with the hosts took 21 ms.
#: before any migration ended
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTIVE_TO = (
    select(Migration.dest_host_id, func.sum(Server.memory_mib))
    .join(Server, Migration.server_id == Server.id)
    .where(Migration.status.in_(ACTIVE_PHASES), Migration.dest_host_id.is_not(None))
    .group_by(Migration.dest_host_id)
)
_COMPLETED_UNSEEN = (
    select(func.sum(Server.memory_mib))
    .select_from(Migration)
    .join(Server, Migration.server_id == Server.id)
    .where(
        Migration.dest_host_id == Host.id,
        Migration.status == Phase.COMPLETED.value,
        # a host never surveyed: every completed migration to it counts
        Migration.finished_at > func.coalesce(Host.last_seen_at, literal(_EPOCH, UTCDateTime())),
    )
    .correlate(Host)
    .scalar_subquery()
)
_RESERVED = union_all(_ACTIVE_TO, select(Host.id, _COMPLETED_UNSEEN))
#: the id of a server's migration that has not ended, if it has one (the predicate of
#: the unique index that allows one: read from that index)
_ACTIVE_OF_SERVER = (
    select(Migration.id)
    .where(Migration.server_id == bindparam("server_id"), text(ACTIVE_MIGRATION))
    .limit(1)
)
#: a queued migration, if there is any
_ANY_QUEUED = select(Migration.id).where(Migration.status == Phase.QUEUED.value).limit(1)
#: whether a migration waits to start, and whether a drain is under way (the dispatch
#: loop's pass every second: one read when there is nothing to do)
_WORK_WAITING = select(_ANY_QUEUED.exists(), UNFINISHED.exists())


def reserved_mib(session: Session) -> dict[str, int]:
    """MiB each host will take for migrations to it: those not ended, and completed ones
    its last inventory sync has not seen yet (its reported free memory predates them).
    What a completed migration freed on its source is not given back before a sync says
    so: the VM's configured memory may be more than it used, and a survey asked before
    the migration's end may have seen it gone already (erring on the safe side)."""
    reserved: dict[str, int] = {}
    for host_id, mib in session.connection().execute(_RESERVED):  # Core: no ORM objects
        if mib:
            reserved[host_id] = reserved.get(host_id, 0) + int(mib)
    return reserved


def _host_views(session: Session) -> tuple[list[Host], dict[str, HostView]]:
    """The hosts (re-read) and what the scheduler sees of each, by name."""
    hosts = list(
        session.scalars(select(Host).order_by(Host.name).execution_options(populate_existing=True))
    )
    reserved = reserved_mib(session)
    views = {
        h.name: HostView(
            h.name,
            h.state == HostState.UP.value,
            h.memory_free_mib,
            reserved.get(h.id, 0),
            disabled=h.disabled,
        )
        for h in hosts
    }
    return hosts, views


#: what the scheduler needs of each host, as rows (the room check loads no Host object)
_HOST_ROOM = select(Host.id, Host.name, Host.state, Host.memory_free_mib, Host.disabled).order_by(
    Host.name
)


#: the queued migrations the dispatcher will place, oldest first: where each comes from and
#: the memory it needs
_WAITING = (
    select(Migration.source_host_id, Server.memory_mib)
    .join(Server, Migration.server_id == Server.id)
    .where(Migration.status == Phase.QUEUED.value, Migration.dest_host_id.is_(None))
    .order_by(Migration.id)
)


def _room_views(session: Session) -> tuple[dict[str, str], dict[str, HostView]]:
    """The hosts' names by id, and what the scheduler sees of each host, by name: Core
    rows of the five columns it needs (the ORM's loading of every Host cost more than the
    rest of a placement)."""
    rows = _flushed(session).execute(_HOST_ROOM).all()
    reserved = reserved_mib(session)
    views = {
        name: HostView(
            name, state == HostState.UP.value, free, reserved.get(hid, 0), disabled=disabled
        )
        for hid, name, state, free, disabled in rows
    }
    return {hid: name for hid, name, *_ in rows}, views


def _check_room(session: Session, source: str, memory_mib: int) -> None:
    """NoValidHost unless a VM of ``memory_mib`` would find a host after the queued VMs
    still to be placed took theirs (placed the dispatcher's way, oldest first). Without a
    lock: two requests at the same instant may both pass, and the dispatcher, which
    places under the lock, then keeps the later one waiting or fails it with the numbers."""
    names, views = _room_views(session)
    waiting = session.connection().execute(_WAITING)
    placed = place_in_order(
        list(views.values()), [(names.get(src or "", ""), mib) for src, mib in waiting]
    )
    pick_host(list(placed.values()), source=source, memory_mib=memory_mib)


#: a dispatch pass's statements (built once: building one cost more than running it)
#: - the hosts of the migrations that started and have not ended
_STARTED = and_(Migration.status.in_(ACTIVE_PHASES), Migration.status != Phase.QUEUED.value)
_RUNNING_ENDS = select(Migration.source_host_id, Migration.dest_host_id).where(_STARTED)
_RUNNING_OWNERS = select(Migration.owner).where(_STARTED)
_OTHER = aliased(Migration)
_OTHER_STARTED = and_(_OTHER.status.in_(ACTIVE_PHASES), _OTHER.status != Phase.QUEUED.value)
#: - whether a queued migration could start: its source below the outgoing limit and its
#:   named destination below the incoming one (placement decides for the others). None:
#:   the pass has nothing to do (a queue whose sources are all busy: a migration's end
#:   kicks the next pass), and takes no lock and reads no host.
_ANY_STARTABLE = (
    select(Migration.id)
    .where(
        Migration.status == Phase.QUEUED.value,
        select(func.count())
        .where(_OTHER_STARTED, _OTHER.source_host_id == Migration.source_host_id)
        .scalar_subquery()
        < bindparam("max_out"),
        or_(
            Migration.dest_host_id.is_(None),
            select(func.count())
            .where(_OTHER_STARTED, _OTHER.dest_host_id == Migration.dest_host_id)
            .scalar_subquery()
            < bindparam("max_in"),
        ),
    )
    .limit(1)
)
#: - the queued migrations, oldest first, with the memory each needs
_QUEUED_TO_START = (
    select(
        Migration.id,
        Migration.source_host_id,
        Migration.dest_host_id,
        Migration.fence,
        Server.memory_mib,
    )
    .join(Server, Migration.server_id == Server.id)
    .where(Migration.status == Phase.QUEUED.value)
    .order_by(Migration.id)
)
#: - a start: queued -> preparing, if still queued under the same fence (compare-and-set)
_CLAIM_QUEUED = (
    update(Migration)
    .where(
        Migration.id == bindparam("claim_mid"),
        Migration.status == Phase.QUEUED.value,
        Migration.fence == bindparam("claim_fence"),
    )
    .values(
        status=Phase.PREPARING.value,
        dest_host_id=bindparam("new_dest"),
        started_at=bindparam("new_started_at"),
        owner=bindparam("new_owner"),
        lease_until=bindparam("new_lease_until"),
        fence=bindparam("new_fence"),
    )
)
#: - the instances alive (seen since a lease's length ago)
_LIVE_SINCE = select(Instance.id).where(Instance.seen_at >= bindparam("since"))


def merged_decisions(
    stored: list[dict[str, Any]], engine: list[DecisionRecord]
) -> list[dict[str, Any]]:
    """The record's decisions plus any of the engine's whose write was lost, in time order."""
    have = {(d.get("at_s"), d.get("action"), d.get("reason")) for d in stored}
    missing = [decision_entry(d) for d in engine if (d.at_s, d.action.value, d.reason) not in have]
    if not missing:
        return stored
    return sorted([*stored, *missing], key=lambda d: float(d.get("at_s") or 0.0))


def decision_entry(d: DecisionRecord) -> dict[str, Any]:
    """How a decision is stored in ``migrations.decisions``."""
    return {
        "at_s": d.at_s,
        "action": d.action.value,
        "reason": d.reason,
        "source": d.source,
        "rule": d.rule,
    }


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (CursorResult.rowcount; typed loosely by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0))


#: the key of the PostgreSQL advisory lock that serializes placement decisions ("ORBT")
PLACEMENT_LOCK_KEY = 0x4F524254


class Conductor:
    """Runs migrations for one orbit-server process. Thread-safe."""

    def __init__(self, db: Database, driver: HypervisorDriver, config: ServerConfig) -> None:
        self.db = db
        self.driver = driver
        self.config = config
        #: this instance's name in ``migrations.owner``
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        #: SQLite holds one instance: what is unfinished at start is an earlier process's
        self._exclusive = db.url.get_backend_name() == "sqlite"
        #: the migrations this instance drives, with the fence of its claim
        self._fences: dict[int, int] = {}
        #: guards the in-memory maps below only: never held across I/O or a database wait
        #: (the database itself decides between simultaneous queue changes: a unique index
        #: for one unfinished migration per server, compare-and-set updates of a status)
        self._lock = threading.Lock()
        self._engines: dict[int, EngineMigration] = {}
        self._threads: dict[int, threading.Thread] = {}
        #: writes what the migrations' recorders queue
        self._records = _RecordWriter(db)
        #: the migrations' starts and outcomes, one at a time (:meth:`_booked`)
        self._books = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conductor-books")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sync_now = threading.Event()
        #: when the first kick still waiting for a sync came (None: none waits)
        self._sync_kicked_at: datetime | None = None
        #: the hosts the waiting kicks asked to survey (None: every host)
        self._sync_uris: set[str] | None = set()
        self._loops: list[threading.Thread] = []
        self._forgot_at = -math.inf  # when the dead instances were last forgotten
        self.drains = Drains(self)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat()
        self.sync()
        self._adopt_unfinished(everything=self._exclusive)
        loops = ((self._dispatch_loop, "dispatch"), (self._sync_loop, "sync"),
                 (self._lease_loop, "lease"))  # fmt: skip
        for target, name in loops:
            t = threading.Thread(target=target, name=f"conductor-{name}", daemon=True)
            t.start()
            self._loops.append(t)

    def stop(self, *, release: bool = True) -> None:
        """Stop the loops. Running migrations go on in libvirt; their leases are released
        (``release``), so that another instance, or this one restarted, adopts them at once;
        without, they are adopted when the leases run out (as after a crash)."""
        self._stop.set()
        self._wake.set()
        self._sync_now.set()
        with self._lock:
            engines = list(self._engines.values())
        for engine in engines:
            engine.stop()
        for t in self._loops:
            t.join(STOP_JOIN_TIMEOUT_S)
        with self._lock:
            running = list(self._threads.values())
        for t in running:  # recording threads: give them a moment to write their result
            t.join(STOP_JOIN_TIMEOUT_S)
        self._books.shutdown(wait=False)  # a late outcome is written in its own thread
        if release:
            self._release_leases()
            try:
                with self.db.session() as session:
                    session.execute(delete(Instance).where(Instance.id == self.instance_id))
            except OrbitError as err:
                log.warning("cannot sign this instance off error=%s", err)

    def sync(self, uris: Collection[str] | None = None) -> None:
        """Survey the hosts (``uris`` only, if given) and record what they said."""
        if uris is None:
            with self.db.session() as session:
                uris = list(session.scalars(select(Host.uri)))
        surveys = survey_hosts(self.driver, list(uris))  # no session open while hosts answer
        with self.db.session() as session:
            report = apply_survey(session, surveys)
        with self.db.session() as session:  # housekeeping: expired tokens are of no use
            purged = purge_expired(session)
        if purged:
            log.info("expired tokens deleted count=%d", purged)
        log.debug(
            "inventory synced hosts_up=%d hosts_down=%d servers=%d",
            report.hosts_up,
            report.hosts_down,
            report.servers,
        )

    def _kick_sync(self, uris: Collection[str | None] | None = None) -> None:
        """Ask the inventory thread for a sync that starts after this moment: of the hosts
        ``uris`` (a migration's two ends), or of every host (None, or a host unknown)."""
        with self._lock:
            if self._sync_kicked_at is None:
                self._sync_kicked_at = utcnow()
            if uris is None or None in uris:
                self._sync_uris = None
            elif self._sync_uris is not None:
                self._sync_uris.update(uri for uri in uris if uri is not None)
        self._sync_now.set()

    def surveyed_since(self, since: datetime) -> bool:
        """Whether every host that answers was surveyed at ``since`` or later (by any
        instance): a sync now would learn nothing new."""
        stale = or_(Host.last_seen_at.is_(None), Host.last_seen_at < since)
        with self.db.session() as session:
            up, not_since = session.execute(
                select(func.count(), func.coalesce(func.sum(case((stale, 1), else_=0)), 0)).where(
                    Host.state == HostState.UP.value
                )
            ).one()
        return bool(up) and not not_since

    def _sync_loop(self) -> None:
        last = -math.inf
        mine = utcnow()  # when this instance's last survey ended (nothing before counts)
        gap_s = min(SYNC_MIN_GAP_S, self.config.sync_interval_s)
        while not self._stop.is_set():
            kicked = self._sync_now.wait(self.config.sync_interval_s)
            # migrations that end one after another (each kicks) make a sync every
            # SYNC_MIN_GAP_S, not one each: the placement counts their memory meanwhile
            # (reserved_mib: completed, not yet seen by a sync)
            if self._stop.wait(max(0.0, last + gap_s - time.monotonic())):
                return
            with self._lock:
                self._sync_now.clear()
                kicked_at, self._sync_kicked_at = self._sync_kicked_at, None
                uris, self._sync_uris = self._sync_uris, set()
            # a kick for the hosts of the migrations that ended surveys those hosts only:
            # at a wave's end each instance surveyed all 50 hosts, both at once
            targeted = sorted(uris) if kicked and uris else None
            try:
                # several instances share the hosts: another's survey that began after
                # the first kick waiting (or, periodic, within half the interval) serves
                since = (
                    kicked_at
                    if kicked and kicked_at is not None
                    else (utcnow() - timedelta(seconds=self.config.sync_interval_s / 2))
                )
                if self.surveyed_since(max(mine, since)):
                    continue
                last = time.monotonic()
                self.sync(targeted)
                if targeted is None:
                    mine = utcnow()
            except OrbitError as err:
                log.warning("inventory sync failed error=%s", err)
            except Exception:
                log.exception("inventory sync crashed")

    # -- requests (called by the API, in its request's session) --------------------------

    def request_migration(
        self,
        session: Session,
        *,
        server: Server,
        dest_host_name: str | None,
        settings: MigrationSettings,
        block_migration_auto: bool,
        disk_over_commit: bool,
        user_id: str | None,
        project_id: str | None,
        force: bool = False,
    ) -> int:
        """Validate and queue a live migration: the new record's id. Raises a specific
        OrbitError, changing nothing.

        ``force`` (Nova's, microversions 2.30-2.67) lets a named destination be a disabled
        host; it never skips the memory check, which protects the VM.
        """
        source = server.host
        if server.status == ServerStatus.MIGRATING.value or session.connection().scalar(
            _ACTIVE_OF_SERVER, {"server_id": server.id}
        ):
            raise MigrationInProgress(f"server {server.name} is already being migrated")
        if server.status != ServerStatus.ACTIVE.value or source is None:
            raise InvalidState(
                f"cannot live-migrate server {server.name} while it is {server.status}: "
                "only a running (ACTIVE) server can be live-migrated"
            )
        if dest_host_name is None:
            # The scheduler's choice: checked now (no host with room: refused at once) but
            # made by the dispatcher as the migration starts, one placement at a time
            # across instances. A request waits for no lock, however many arrive at once.
            _check_room(session, source.name, server.memory_mib)
            return self._queue(
                session, server, source, None, settings, block_migration_auto,
                disk_over_commit=disk_over_commit, user_id=user_id, project_id=project_id,
            )  # fmt: skip
        serialize_placement(session)  # until commit: one placement at a time, any process
        hosts, views = _host_views(session)
        dest = next((h for h in hosts if h.name == dest_host_name), None)
        if dest is None:
            raise InvalidMigration(f"compute host {dest_host_name!r} could not be found")
        if dest.id == source.id:
            raise InvalidMigration(
                f"the destination {dest.name} is the server's current host: choose another"
            )
        if dest.state != HostState.UP.value:
            raise InvalidMigration(f"compute host {dest.name} is {dest.state}: it cannot take VMs")
        if dest.disabled and not force:
            why = f" ({dest.disabled_reason})" if dest.disabled_reason else ""
            raise InvalidState(
                f"compute host {dest.name} is disabled{why}: it takes no new VMs; enable it, "
                "or choose another host"
            )
        room = views[dest.name]
        if room.available_mib < server.memory_mib:
            raise InvalidState(
                f"compute host {dest.name} cannot take server {server.name} "
                f"({server.memory_mib} MiB): it has {room.room()}"
            )
        return self._queue(
            session, server, source, dest, settings, block_migration_auto,
            disk_over_commit=disk_over_commit, user_id=user_id, project_id=project_id,
        )  # fmt: skip

    def _queue(
        self,
        session: Session,
        server: Server,
        source: Host,
        dest: Host | None,
        settings: MigrationSettings,
        block_migration_auto: bool,
        *,
        disk_over_commit: bool,
        user_id: str | None,
        project_id: str | None,
    ) -> int:
        """Add the queued record (``dest`` None: the dispatcher places it); its id.

        Written with two Core statements, not the ORM's unit of work: in a burst of
        requests the flush of one new record took a fifth of an instance's processor.
        """
        if block_migration_auto:
            settings = replace(settings, block_migration=True)
        try:
            mid = session.connection().scalar(
                _INSERT_QUEUED,
                {
                    "server_id": server.id,
                    "source_host_id": source.id,
                    "dest_host_id": dest.id if dest is not None else None,
                    "status": Phase.QUEUED.value,
                    "disk_over_commit": disk_over_commit,
                    "user_id": user_id,
                    "project_id": project_id,
                    "memory_total_bytes": server.memory_mib * MIB,
                    **settings_columns(settings),
                },
            )
        except IntegrityError as err:  # another request queued one first
            session.rollback()
            if session.connection().scalar(_ACTIVE_OF_SERVER, {"server_id": server.id}):
                raise MigrationInProgress(
                    f"server {server.name} is already being migrated"
                ) from err
            raise
        session.connection().execute(
            _SET_SERVER_STATUS,
            {"id_": server.id, "status": ServerStatus.MIGRATING.value, "updated_at": utcnow()},
        )
        set_committed_value(server, "status", ServerStatus.MIGRATING.value)
        log.info(
            "migration queued id=%d server=%s source=%s dest=%s policy=%s post_copy=%s",
            mid,
            server.name,
            source.name,
            dest.name if dest is not None else "(the scheduler's, at its start)",
            settings.policy.value,
            settings.post_copy,
        )
        return int(mid)

    def kick(self) -> None:
        """Look at the queue now (after a new request was committed)."""
        self._wake.set()

    def assign_project(self, session: Session, server: Server, project: Project | None) -> None:
        """Give ``server`` to ``project`` (None: to none): written in the domain's metadata,
        so that it travels with the VM, then in the database. Refused while the server
        migrates (libvirt would make the change wait for the migration) or has no host.
        Commits ``session`` before the libvirt call: no connection is held across it."""
        if server.status == ServerStatus.MIGRATING.value or session.connection().scalar(
            _ACTIVE_OF_SERVER, {"server_id": server.id}
        ):
            raise MigrationInProgress(
                f"server {server.name} is migrating: assign its project when it has moved"
            )
        if server.host is None:
            raise InvalidState(f"server {server.name} is on no known host")
        uri, name, server_id = server.host.uri, server.name, server.id
        owner = Owner(project.id, project.name) if project is not None else None
        project_id = project.id if project is not None else None
        session.commit()
        try:
            self.driver.set_owner(uri, name, owner)
        except HypervisorError as err:
            raise InvalidState(f"the project of server {name} could not be written: {err}") from err
        session.execute(update(Server).where(Server.id == server_id).values(project_id=project_id))
        session.commit()
        log.info("server project set name=%s project=%s", name, owner and owner.project_name)

    def force_complete(self, session: Session, record: Migration) -> str:
        phase = record.phase
        if phase.is_final:
            raise MigrationRefused(f"migration {record.id} is already {phase.value}")
        engine = self._engines.get(record.id)
        if engine is None and phase.in_postcopy:
            return "already in post-copy: it completes as the remaining pages arrive"
        if engine is None and self._forward(session, record, FORCE_COMPLETE):
            return f"asked {record.owner}, the orbit-server instance driving it, to force-complete"
        if engine is None:
            if phase is Phase.QUEUED:
                raise MigrationRefused(f"migration {record.id} has not started yet: it is queued")
            raise MigrationRefused(
                f"migration {record.id} is followed after a restart of orbit-server; "
                "force-complete is not available for it"
            )
        return engine.force_complete()

    def resume_now(self, session: Session, record: Migration) -> str:
        """Operator: retry a paused post-copy now (the engine also retries on its own)."""
        if record.phase is not Phase.POSTCOPY_PAUSED:
            raise MigrationRefused(
                f"migration {record.id} is {record.status}, not postcopy-paused: "
                "there is nothing to resume"
            )
        engine = self._engines.get(record.id)
        if engine is None and self._forward(session, record, RESUME):
            return f"asked {record.owner}, the orbit-server instance driving it, to resume now"
        if engine is None:
            raise MigrationRefused(
                f"migration {record.id} is being taken over after a restart; try again shortly"
            )
        return engine.resume_now()

    def _forward(self, session: Session, record: Migration, what: str) -> bool:
        """Leave ``what`` for the live instance that drives ``record`` (True), which applies
        it at its next lease renewal; False if this instance drives it, or nobody does
        right now (it is about to be adopted). Commits ``session``."""
        if record.owner in (None, self.instance_id) or record.lease_until is None:
            return False
        if record.lease_until < utcnow():
            return False
        asked = session.execute(
            update(Migration)
            .where(Migration.id == record.id, Migration.owner == record.owner)
            .values(requested=what)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if _rowcount(asked) != 1:
            return False
        log.info("request forwarded id=%d request=%s owner=%s", record.id, what, record.owner)
        return True

    def abort(self, session: Session, record: Migration) -> None:
        phase = record.phase
        if phase is Phase.QUEUED:
            cancelled = session.execute(
                update(Migration)
                .where(Migration.id == record.id, Migration.status == Phase.QUEUED.value)
                .values(
                    status=Phase.CANCELLED.value,
                    error="aborted by the operator before it started",
                    finished_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(cancelled) == 1:
                session.execute(
                    update(Server)
                    .where(
                        Server.id == record.server_id,
                        Server.status == ServerStatus.MIGRATING.value,
                    )
                    .values(status=ServerStatus.ACTIVE.value)
                    .execution_options(synchronize_session=False)
                )
                session.refresh(record)
                return
            session.refresh(record)  # the dispatcher started it a moment ago
            phase = record.phase
        if phase.in_postcopy:
            raise MigrationRefused(
                f"migration {record.id} is in post-copy: the VM's memory is split between "
                "source and destination, so it cannot be aborted; force-complete it or let "
                "it finish"
            )
        if phase.is_final:
            raise MigrationRefused(f"migration {record.id} is already {phase.value}")
        with self._lock:
            engine = self._engines.get(record.id)
        if engine is None and self._forward(session, record, ABORT):
            return
        if engine is None and phase is Phase.PREPARING:
            raise MigrationRefused(
                f"migration {record.id} is starting this moment; try the abort again"
            )
        if engine is None:
            raise MigrationRefused(
                f"migration {record.id} is followed after a restart of orbit-server; "
                "abort is not available for it"
            )
        engine.abort()

    # -- dispatching ---------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(DISPATCH_INTERVAL_S)
            if self._settle():
                return
            try:
                with self.db.session() as session:
                    queued, draining = session.execute(_WORK_WAITING).one()
            except OrbitError as err:
                log.warning("dispatch pass failed error=%s", err)
                continue
            except Exception:
                log.exception("dispatch pass crashed")
                continue
            if draining:
                try:
                    self.drains.step()
                except Exception:
                    log.exception("drain step crashed")
            if queued or draining:  # a drain's step may have queued migrations
                try:
                    self.dispatch()
                except Exception:
                    log.exception("dispatch crashed")

    def _settle(self) -> bool:
        """Wait until requests stop arriving (each kicks): a burst makes a pass every
        DISPATCH_MAX_WAIT_S, not one every DISPATCH_MIN_GAP_S, each reading the whole queue
        while the requests wait for the processor. True: the conductor stops."""
        deadline = time.monotonic() + DISPATCH_MAX_WAIT_S
        while True:
            self._wake.clear()
            if self._stop.wait(DISPATCH_MIN_GAP_S):
                return True
            if not self._wake.is_set() or time.monotonic() >= deadline:
                return False

    def dispatch(self) -> None:
        """Start what the per-host limits allow, oldest first. Each start is a
        compare-and-set (queued -> preparing, with this instance as the owner): an abort
        that came first wins, and of several instances exactly one claims it; one
        dispatcher at a time counts the hosts' migrations (across instances). Nothing
        that could start: one read, no lock (the pass every second of every instance,
        also while a queue waits for busy sources)."""
        limits = {
            "max_out": self.config.max_outgoing_per_host,
            "max_in": self.config.max_incoming_per_host,
        }
        with self.db.session() as session:
            if session.scalar(_ANY_STARTABLE, limits) is None:
                return
        with self.db.session() as session:
            serialize_placement(session)
            connection = session.connection()
            running = list(connection.execute(_RUNNING_ENDS))
            outgoing: dict[str | None, int] = {}
            incoming: dict[str | None, int] = {}
            for src, dst in running:
                outgoing[src] = outgoing.get(src, 0) + 1
                incoming[dst] = incoming.get(dst, 0) + 1
            queued = list(connection.execute(_QUEUED_TO_START))
            quota = self._fair_share(session, len(queued))
            placer = _Placer(session, incoming, self.config.max_incoming_per_host, bool(running))
            to_start: list[tuple[int, int]] = []
            for mid, src, dst, fence, memory_mib in queued:
                if len(to_start) >= quota:
                    break  # the rest is for less busy instances (their next pass: <= 1 s)
                if outgoing.get(src, 0) >= self.config.max_outgoing_per_host:
                    continue
                placing = dst is None
                if placing:  # the scheduler's choice, made now
                    dst = placer.place(mid, src, memory_mib)
                    if dst is None:
                        continue
                elif incoming.get(dst, 0) >= self.config.max_incoming_per_host:
                    continue
                now = utcnow()
                claimed = connection.execute(
                    _CLAIM_QUEUED,
                    {
                        "claim_mid": mid,
                        "claim_fence": fence,
                        "new_dest": dst,
                        "new_started_at": now,
                        "new_owner": self.instance_id,
                        "new_lease_until": now + timedelta(seconds=self.config.lease_s),
                        "new_fence": fence + 1,
                    },
                )
                if claimed.rowcount != 1:
                    continue  # aborted meanwhile, or another instance claimed it
                outgoing[src] = outgoing.get(src, 0) + 1
                incoming[dst] = incoming.get(dst, 0) + 1
                if placing and dst is not None:
                    placer.reserve(dst, memory_mib)
                to_start.append((mid, fence + 1))
        for mid, fence in to_start:
            with self._lock:
                self._fences[mid] = fence
            self._start_thread(mid, self._run)

    def _fair_share(self, session: Session, queued: int) -> int:
        """How many queued migrations this instance may claim now: all of them when it is
        alone; else up to an even share of what runs and waits, among the live instances."""
        if not queued:
            return 0
        now = utcnow()
        connection = session.connection()
        since = now - timedelta(seconds=self.config.lease_s)
        live = set(connection.scalars(_LIVE_SINCE, {"since": since})) | {self.instance_id}
        if len(live) == 1:
            return queued
        load = dict.fromkeys(live, 0)
        for owner in connection.scalars(_RUNNING_OWNERS):
            if owner in load:
                load[owner] += 1
        share = -(-(sum(load.values()) + queued) // len(live))  # ceiling
        return max(0, share - load[self.instance_id])

    def _start_thread(self, mid: int, target: Callable[[int], None]) -> None:
        t = threading.Thread(target=target, args=(mid,), name=f"migration-{mid}", daemon=True)
        with self._lock:
            self._threads[mid] = t
        t.start()

    def _request_for(self, mid: int) -> tuple[MigrationRequest, str]:
        with self.db.session() as session:
            connection = session.connection()
            row = connection.execute(_REQUEST, {"mid": mid}).first()
            if row is None:
                raise MigrationNotFound(f"migration {mid} disappeared")
            if row.src_id is None or row.dst_id is None:
                raise InvalidMigration(f"migration {mid}: a host was removed")
            src = _End(row.src_id, row.src_name, row.src_uri, None, None)
            dst = _End(row.dst_id, row.dst_name, row.dst_uri, row.dst_address, row.dst_link)
            request = MigrationRequest(
                domain=row.server_name,
                src_uri=src.uri,
                dst_uri=dst.uri,
                settings=replace(
                    settings_of(row),
                    stall_timeout_s=self.config.stall_timeout_s,
                    postcopy_stall_s=self.config.postcopy_stall_s,
                ),
                dst_migration_uri=_migration_uri(dst),
                link=link_between(session, src, dst),
                previous_pass1=previous_pass1(session, row.server_id),
            )
            return request, row.server_name

    def _run(self, mid: int) -> None:
        delay_s = FINAL_WRITE_RETRY_FIRST_S
        while True:
            try:
                request, name = self._booked(self._request_for, mid)
                break
            except DatabaseError as err:  # busy or down: nothing has moved, try again
                log.warning("cannot read migration id=%d retry_in_s=%.0f error=%s",
                            mid, delay_s, err)  # fmt: skip
                if self._stop.wait(delay_s):
                    return  # a restart adopts it
                delay_s = min(FINAL_WRITE_RETRY_MAX_S, delay_s * 2)
            except OrbitError as err:
                self._finish_record(mid, Phase.FAILED, str(err), None)
                return
        recorder = _Recorder(self.db, mid, self._claim(mid), self._records)
        engine = EngineMigration(self.driver, request, listener=recorder)
        with self._lock:
            self._engines[mid] = engine
        result: MigrationResult | None = None
        try:
            result = engine.run()
            phase, error = result.phase, result.error
        except InvalidTransition as err:  # a bug: say so rather than "nothing changed"
            log.error("migration phase error id=%d error=%s", mid, err)
            phase, error, result = Phase.ERROR, f"internal error: {err}", engine.result
        except OrbitError as err:  # refused by the engine's preflight: nothing changed
            phase, error, result = Phase.FAILED, str(err), engine.result
        except Exception as err:
            log.exception("migration crashed id=%d server=%s", mid, name)
            phase, error, result = Phase.ERROR, f"internal error: {err!r}", engine.result
        finally:
            with self._lock:
                self._engines.pop(mid, None)
            recorder.close()  # its writes land before the outcome's
        self._finish_record(mid, phase, error, result)

    def _booked(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` on the one bookkeeping thread, waited for: a migration's start
        (reading its request) and its outcome, the bursts of the conductor's work.

        The migrations of a wave end together (one outgoing per host: ~13 of the
        benchmark's 50 within a second), and the next ones start. Done in their own
        threads at once, ~26 threads held the GIL in turn, and the event loop answering the
        API waited behind each of them; one at a time, it waits behind one. At 200 requests
        /s while 50 migrations ran, the p99 was 28-55 ms with them at once and 18-25 ms one
        at a time (alternating runs, 4 each). Not a lock: the caller holds nothing while it
        waits, and the worker takes a pooled connection as any other thread does. After
        :meth:`stop`, ``work`` runs in the caller's thread."""
        try:
            future = self._books.submit(work, *args)
        except RuntimeError:  # stopped: no bookkeeping thread any more
            return work(*args)
        return future.result()

    def _finish_record(
        self, mid: int, phase: Phase, error: str | None, result: MigrationResult | None
    ) -> None:
        """Write the outcome; retried until it is stored (a record must not stay active)."""
        delay_s = FINAL_WRITE_RETRY_FIRST_S
        while True:
            try:
                self._booked(self._write_outcome, mid, phase, error, result)
                break
            except OrbitError as err:  # database down or locked: the outcome must not be lost
                log.error("cannot record outcome id=%d retry_in_s=%.0f error=%s", mid, delay_s, err)
                if self._stop.wait(delay_s):
                    return  # a restart adopts it
                delay_s = min(FINAL_WRITE_RETRY_MAX_S, delay_s * 2)
        with self._lock:
            self._threads.pop(mid, None)
            self._fences.pop(mid, None)
        # one sync for however many migrations just ended, of their hosts
        self._kick_sync(None if result is None else (result.src_uri, result.dst_uri))
        self._wake.set()

    def _write_outcome(
        self, mid: int, phase: Phase, error: str | None, result: MigrationResult | None
    ) -> None:
        """The outcome into the record (locked, under this instance's claim) and the server:
        its new host, and ACTIVE again. Core statements: the record is read once, not
        loaded as objects."""
        claim = self._claim(mid)
        with self.db.session() as session:
            connection = session.connection()
            found = connection.execute(_READ_OUTCOME, {"claim_mid": mid}).first()
            if found is None:
                return
            if (found.owner, found.fence) != (claim.owner, claim.fence):
                log.warning(
                    "outcome not written id=%d: another instance drives it now owner=%s",
                    mid,
                    found.owner,
                )
                return
            values: dict[str, Any] = {"status": phase.value, "error": error}
            if phase.is_final:
                values["requested"] = None  # too late for a forwarded request
                values["finished_at"] = utcnow()
            if result is not None:
                values |= _outcome_columns(result, found)
            if phase is Phase.COMPLETED:
                values |= {"memory_remaining_bytes": 0, "disk_remaining_bytes": 0}
            connection.execute(_WRITE_OUTCOME, {"claim_mid": mid, **values})
            server: dict[str, Any] = {}
            if phase is Phase.COMPLETED and found.dest_host_id is not None:
                server["host_id"] = found.dest_host_id
            if phase.is_final and found.server_status == ServerStatus.MIGRATING.value:
                server["status"] = ServerStatus.ACTIVE.value  # the sync corrects it
            if server:
                connection.execute(
                    _SET_SERVER_STATUS, {"id_": found.server_id, **server, "updated_at": utcnow()}
                )
            log.info(
                "migration finished id=%d server=%s phase=%s total_s=%s error=%s",
                mid,
                found.server_name,
                phase.value,
                values.get("total_s"),
                error or "-",
            )

    # -- adoption after a restart ---------------------------------------------------------

    def _adopt_unfinished(self, *, everything: bool = False) -> None:
        """Claim and follow the unfinished migrations nobody drives: those whose lease ran
        out or that have no owner, or (``everything``: SQLite's only instance, at its start)
        all of them."""
        with self.db.session() as session:
            orphans = self._orphans(session, everything=everything)
        self._adopt(orphans)

    def _orphans(
        self, session: Session, *, everything: bool = False
    ) -> list[tuple[int, int, str | None]]:
        """(id, fence, owner) of each unfinished migration nobody drives (see
        :meth:`_adopt_unfinished`)."""
        query = select(Migration.id, Migration.fence, Migration.owner).where(
            Migration.status.in_(ACTIVE_PHASES), Migration.status != Phase.QUEUED.value
        )
        if not everything:
            query = query.where(or_(Migration.owner.is_(None), Migration.lease_until < utcnow()))
        return [(mid, fence, owner) for mid, fence, owner in session.execute(query)]

    def _adopt(self, orphans: list[tuple[int, int, str | None]]) -> None:
        with self._lock:
            mine = set(self._fences)
        for mid, fence, owner in orphans:
            if mid in mine:
                continue
            with self.db.session() as session:
                claimed = session.execute(
                    update(Migration)
                    .where(Migration.id == mid, Migration.fence == fence)
                    .values(
                        owner=self.instance_id,
                        lease_until=utcnow() + timedelta(seconds=self.config.lease_s),
                        fence=fence + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(claimed) != 1:
                    continue  # another instance was quicker
            log.info("adopting migration id=%d previous_owner=%s", mid, owner or "-")
            with self._lock:
                self._fences[mid] = fence + 1
            self._start_thread(mid, self._follow)

    # -- leases -------------------------------------------------------------------------

    def _claim(self, mid: int) -> Claim:
        with self._lock:
            return Claim(self.instance_id, self._fences.get(mid, -1))

    def _heartbeat(self, session: Session | None = None) -> None:
        """Say this instance is alive (the dispatchers share the work among live ones); in
        ``session`` if given. Instances unseen for a long time have died: forgotten, once
        a minute (:data:`FORGET_EVERY_S`)."""
        if session is None:
            with self.db.session() as own:
                self._heartbeat(own)
            return
        now = utcnow()
        seen = session.execute(
            update(Instance)
            .where(Instance.id == self.instance_id)
            .values(seen_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(seen) != 1:
            session.add(Instance(id=self.instance_id, started_at=now, seen_at=now))
        if time.monotonic() - self._forgot_at >= FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            session.execute(
                delete(Instance).where(
                    Instance.seen_at < now - timedelta(seconds=60 * self.config.lease_s)
                )
            )

    def _lease_loop(self) -> None:
        while not self._stop.wait(self.config.lease_s / LEASE_RENEWALS):
            try:
                self._lease_round()
            except OrbitError as err:
                log.warning("lease renewal failed error=%s", err)
            except Exception:
                log.exception("lease loop crashed")

    def _lease_round(self) -> None:
        """One transaction: the heartbeat, the leases renewed (with the operator requests
        other instances took for them), and the orphans read; then what they call for
        (each in a transaction of its own: rarely anything)."""
        with self.db.session() as session:
            self._heartbeat(session)
            asked = self._renew_leases(session)
            orphans = self._orphans(session)
        self._apply_requests(asked)
        self._adopt(orphans)

    def _renew_leases(self, session: Session | None = None) -> list[tuple[int, str]]:
        """Extend this instance's claims (in ``session`` if given); a claim found taken
        over is given up: its engine stops retrying, and its writes are refused by the
        fence anyway. Returns the operator requests waiting on the claims renewed: (id,
        request)."""
        if session is None:
            with self.db.session() as own:
                return self._renew_leases(own)
        with self._lock:
            held = dict(self._fences)
        if not held:
            return []
        until = utcnow() + timedelta(seconds=self.config.lease_s)
        mids = sorted(held)
        connection = session.connection()
        # rows locked in id order, as the samples' writer does: no lock cycle
        if connection.dialect.name == "postgresql":  # arrays: one statement text, prepared once
            connection.execute(_PG_LOCK_IN_ORDER, {"mids": mids}).all()
            renewed = dict(
                connection.execute(
                    _PG_RENEW_LEASES,
                    {"mid": mids, "fence": [held[mid] for mid in mids],
                     "owner": self.instance_id, "until": until},
                ).all()
            )  # fmt: skip
        else:
            session.execute(
                select(Migration.id).where(Migration.id.in_(mids)).order_by(Migration.id)
            ).all()
            renewed = {
                mid: requested
                for mid, requested in session.execute(
                    update(Migration)
                    .where(
                        Migration.owner == self.instance_id,
                        tuple_(Migration.id, Migration.fence).in_(list(held.items())),
                    )
                    .values(lease_until=until)
                    .returning(Migration.id, Migration.requested)
                    .execution_options(synchronize_session=False)
                )
            }
        for mid in [mid for mid in held if mid not in renewed]:
            log.warning("migration taken over by another instance id=%d", mid)
            with self._lock:
                self._fences.pop(mid, None)
                engine = self._engines.get(mid)
            if engine is not None:
                engine.stop()
        return [(mid, what) for mid, what in renewed.items() if what is not None]

    def _apply_requests(self, asked: list[tuple[int, str]]) -> None:
        """Apply the operator requests other instances took for migrations this one drives
        (each taken once: cleared by compare-and-set; kept while its engine is starting)."""
        for mid, what in asked:
            with self._lock:
                engine = self._engines.get(mid)
            if engine is None:
                continue
            with self.db.session() as session:
                taken = session.execute(
                    update(Migration)
                    .where(Migration.id == mid, Migration.requested == what)
                    .values(requested=None)
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(taken) != 1:
                    continue
            try:
                if what == FORCE_COMPLETE:
                    done = engine.force_complete()
                elif what == RESUME:
                    done = engine.resume_now()
                else:
                    engine.abort("operator requested abort (through another instance)")
                    done = "aborting"
            except MigrationRefused as err:
                log.warning("forwarded request refused id=%d request=%s why=%s", mid, what, err)
                continue
            log.info("forwarded request applied id=%d request=%s result=%s", mid, what, done)

    def _release_leases(self) -> None:
        with self._lock:
            held = dict(self._fences)
            self._fences.clear()
        if not held:
            return
        try:
            with self.db.session() as session:
                for mid, fence in held.items():
                    session.execute(
                        update(Migration)
                        .where(
                            Migration.id == mid,
                            Migration.owner == self.instance_id,
                            Migration.fence == fence,
                        )
                        .values(owner=None, lease_until=None)
                        .execution_options(synchronize_session=False)
                    )
        except OrbitError as err:  # the leases then run out by themselves
            log.warning("cannot release leases error=%s", err)

    def _follow(self, mid: int) -> None:
        """Take over a migration an earlier process started; see Migration.adopt."""
        try:
            request, name = self._request_for(mid)
        except OrbitError as err:
            self._finish_record(mid, Phase.ERROR, str(err), None)
            return
        with self.db.session() as session:
            record = session.get(Migration, mid)
            if record is None:
                return
            phase = record.phase
            started = record.started_at
            last = record.samples[-1].to_sample() if record.samples else None
        elapsed = (utcnow() - started).total_seconds() if started else 0.0
        recorder = _Recorder(self.db, mid, self._claim(mid), self._records)
        engine = EngineMigration(self.driver, request, listener=recorder)
        if last is not None:
            engine.result.samples.append(last)  # the policy sees where it was
        with self._lock:
            self._engines[mid] = engine
        afresh = False
        try:
            result = engine.adopt(phase, elapsed)
            outcome, error = result.phase, result.error
        except JobNeverStarted as err:
            log.info("starting adopted migration afresh id=%d why=%s", mid, err)
            afresh = True
        except Exception as err:
            log.exception("adopted migration crashed id=%d server=%s", mid, name)
            outcome, error, result = Phase.ERROR, f"internal error: {err!r}", engine.result
        finally:
            with self._lock:
                self._engines.pop(mid, None)
            recorder.close()
        if afresh:
            self._run(mid)
            return
        self._finish_record(mid, outcome, error, result)


class _Placer:
    """The scheduler's choices during one dispatch pass (under the placement lock): each
    placed VM's memory is reserved on its host for the next choice of the same pass."""

    def __init__(
        self, session: Session, incoming: dict[str | None, int], max_incoming: int, busy: bool
    ) -> None:
        self.session = session
        self.incoming = incoming
        self.max_incoming = max_incoming
        #: migrations are running: memory frees up and slots open as they end
        self.busy = busy
        self._names: dict[str, str] | None = None  # by host id
        self._views: dict[str, HostView] = {}  # by host name

    def _load(self) -> dict[str, str]:
        if self._names is None:
            self._names, self._views = _room_views(self.session)
        return self._names

    def place(self, mid: int, source_id: str | None, memory_mib: int) -> str | None:
        """The host id for migration ``mid``, or None: it waits for a slot or for memory
        (or, when nothing could ever free some, it is failed with the reason)."""
        names = self._load()
        source = names.get(source_id or "", "")
        open_views = [
            self._views[name] for hid, name in names.items()
            if self.incoming.get(hid, 0) < self.max_incoming
        ]  # fmt: skip
        try:
            name = pick_host(open_views, source=source, memory_mib=memory_mib)
        except NoValidHost as err:
            try:  # a host is only out of slots: wait for one
                pick_host(list(self._views.values()), source=source, memory_mib=memory_mib)
                return None
            except NoValidHost:
                pass
            if self.busy:
                return None  # running migrations will free memory (or take it): look again
            self._fail(mid, str(err))
            return None
        host_id = next(hid for hid, known in names.items() if known == name)
        log.info(
            "migration placed id=%d dest=%s available_mib=%d memory_mib=%d",
            mid, name, self._views[name].available_mib, memory_mib,
        )  # fmt: skip
        return host_id

    def reserve(self, host_id: str, memory_mib: int) -> None:
        """Count a VM just placed on ``host_id`` (the views predate it)."""
        name = self._load().get(host_id)
        if name is not None:
            view = self._views[name]
            self._views[name] = replace(
                view, memory_reserved_mib=view.memory_reserved_mib + memory_mib
            )

    def _fail(self, mid: int, why: str) -> None:
        failed = self.session.execute(
            update(Migration)
            .where(Migration.id == mid, Migration.status == Phase.QUEUED.value)
            .values(status=Phase.FAILED.value, error=why, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if _rowcount(failed) == 1:
            server_id = self.session.scalar(select(Migration.server_id).where(Migration.id == mid))
            self.session.execute(
                update(Server)
                .where(Server.id == server_id, Server.status == ServerStatus.MIGRATING.value)
                .values(status=ServerStatus.ACTIVE.value)
                .execution_options(synchronize_session=False)
            )
            log.warning("migration not placed id=%d why=%s", mid, why)


@dataclass(frozen=True)
class Claim:
    """This instance's claim on a migration: its name and the claim's fence number."""

    owner: str
    fence: int

    def holds(self, record: Migration) -> bool:
        return record.owner == self.owner and record.fence == self.fence


def _outcome_columns(result: MigrationResult, stored: Any) -> dict[str, Any]:
    """The record's columns that the engine's result sets, merged with what the record
    holds (``stored``: its phase times, decisions and memory total)."""
    values: dict[str, Any] = {
        "total_s": result.total_s,
        "downtime_ms": result.downtime_ms,
        "memory_total_bytes": result.memory_total_bytes or stored.memory_total_bytes,
        "memory_processed_bytes": result.memory_bytes,
        "disk_processed_bytes": result.disk_bytes,
        "iterations": result.iterations,
        "postcopy_requests": result.postcopy_requests,
        "switch_at_s": result.switch_at_s,
        "transfer_rate_bytes_s": result.transfer_rate_bytes_s,
        "phase_times": {**result.phase_times, **stored.phase_times},
        "decisions": merged_decisions(stored.decisions, result.decisions),
    }
    if result.pass1 is not None:
        values["pass1_dirtied_bytes"] = round(result.pass1[0])
        values["pass1_s"] = result.pass1[1]
    if result.plan is not None:
        values["prediction"] = result.plan.to_dict()
    return values


#: the progress columns of a migration record, each as a Sample sets it
_PROGRESS_COLUMNS = {
    "memory_total_bytes": "memory_total_bytes",
    "memory_processed_bytes": "memory_processed_bytes",
    "memory_remaining_bytes": "memory_remaining_bytes",
    "disk_total_bytes": "disk_total_bytes",
    "disk_processed_bytes": "disk_processed_bytes",
    "disk_remaining_bytes": "disk_remaining_bytes",
    "iterations": "iteration",
    "postcopy_requests": "postcopy_requests",
}
#: the columns of a stored sample that a Sample fills (they have its fields' names)
_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))
_MIGRATIONS = Migration.metadata.tables[Migration.__tablename__]
_SERVERS = Server.metadata.tables[Server.__tablename__]
#: a queued record, its id returned; a server's status (built once: see _queue)
_INSERT_QUEUED = insert(_MIGRATIONS).returning(_MIGRATIONS.c.id)
_SET_SERVER_STATUS = update(_SERVERS).where(_SERVERS.c.id == bindparam("id_"))
_SAMPLES = MigrationSample.metadata.tables[MigrationSample.__tablename__]
#: the record, if this claim still holds it (the parameters: claim_mid, claim_owner,
#: claim_fence); statements built once, so that each write only binds its values
_CLAIMED_ID = _MIGRATIONS.c.id == bindparam("claim_mid")
_CLAIMED = and_(
    _CLAIMED_ID,
    _MIGRATIONS.c.owner == bindparam("claim_owner"),
    _MIGRATIONS.c.fence == bindparam("claim_fence"),
)
#: a batch of samples: the latest one's progress (executed for many records at once)
_WRITE_PROGRESS = (
    update(_MIGRATIONS)
    .where(_CLAIMED)
    .values({column: bindparam(f"set_{column}") for column in _PROGRESS_COLUMNS})
)
#: the status and claim of the records a batch of samples is for
_READ_CLAIMS = select(
    _MIGRATIONS.c.id, _MIGRATIONS.c.status, _MIGRATIONS.c.owner, _MIGRATIONS.c.fence
).where(_MIGRATIONS.c.id.in_(bindparam("mids", expanding=True)))
_REPAIR_STATUS = update(_MIGRATIONS).where(_CLAIMED).values(status=bindparam("set_status"))
_WRITE_CLAIMED = update(_MIGRATIONS).where(_CLAIMED)
_INSERT_SAMPLES = insert(_SAMPLES)
#: what a phase, decision or plan write reads of the record, locked until the transaction
#: ends where the database can (PostgreSQL), if this claim still holds it: a take-over then
#: waits for this write, and this write sees a take-over that came first
_READ_CLAIMED = (
    select(_MIGRATIONS.c.status, _MIGRATIONS.c.phase_times, _MIGRATIONS.c.decisions)
    .where(_CLAIMED)
    .with_for_update()
)

#: what the outcome's write reads: the claim, what it merges, the server (the record
#: locked where the database can)
_READ_OUTCOME = (
    select(
        _MIGRATIONS.c.owner,
        _MIGRATIONS.c.fence,
        _MIGRATIONS.c.phase_times,
        _MIGRATIONS.c.decisions,
        _MIGRATIONS.c.memory_total_bytes,
        _MIGRATIONS.c.dest_host_id,
        _MIGRATIONS.c.server_id,
        _SERVERS.c.name.label("server_name"),
        _SERVERS.c.status.label("server_status"),
    )
    .join(_SERVERS, _SERVERS.c.id == _MIGRATIONS.c.server_id)
    .where(_CLAIMED_ID)
    .with_for_update(of=_MIGRATIONS)
)
_WRITE_OUTCOME = update(_MIGRATIONS).where(_CLAIMED_ID)

#: the record's columns as a change of it sees and sets them (those it reads: status,
#: phase_times, decisions; it may set error, prediction, switch_at_s too)
_Row = dict[str, Any]
#: a queued change of the record: a progress sample, or a function applied to its columns
_Change = Sample | Callable[[_Row], Any]


class _RecordWriter:
    """Writes what the recorders of one process queue, in one thread.

    Each recorder's changes are written in the order they came, what is waiting in one
    transaction per recorder, as soon as a change must be written now (a phase, a
    decision, a plan, a flush), else once samples have waited :data:`SAMPLE_WRITE_EVERY_S`.
    One thread and one pooled connection for every migration of the process, rather than
    a thread and a connection each (50 migrations: 50 wake-ups and checkouts a second).
    Phases, decisions and plans: a transaction per recorder, each locking its record's
    row only, so that a write that fails costs only its own recorder's changes. Samples:
    one transaction for all (50 migrations: 3 statements a second, not 100); if it fails,
    that second's samples are lost and the next batch's progress catches up. The thread
    runs while recorders are open, and sleeps while nothing is waiting.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cond = threading.Condition()
        #: each open recorder's changes not taken yet, in order (None: it closes)
        self._pending: dict[_Recorder, list[_Change | None]] = {}
        #: something waiting must be written now
        self._now = False
        #: changes waiting, of all recorders
        self._queued = 0
        self._thread: threading.Thread | None = None

    def open(self, recorder: _Recorder) -> None:
        with self._cond:
            self._pending[recorder] = []

    def put(
        self, recorder: _Recorder, change: _Change | None, *, now: bool, phase: Phase | None = None
    ) -> None:
        """Queue ``change`` (None: the recorder closes; ``phase``: it is the engine's change
        to that phase); ``now``: write without waiting."""
        with self._cond:
            pending = self._pending.get(recorder)
            if pending is None:  # closed: there is nothing more to write
                return
            pending.append(change)
            if phase is not None:
                recorder.latest_phase = phase
            recorder.queued += 1
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_loop, name="conductor-record", daemon=True
                )
                self._thread.start()
            if now or self._queued == 1:  # else the writer is gathering: let it sleep
                self._now = self._now or now
                self._cond.notify_all()

    def wait(self, recorder: _Recorder, timeout_s: float | None = None) -> None:
        """Return once every change ``recorder`` queued so far is written (or dropped)."""
        with self._cond:
            target = recorder.queued
            self._now = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: recorder.written >= target, timeout_s)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queued > 0)
                if not self._now:  # samples: gather a second's worth
                    self._cond.wait_for(lambda: self._now, SAMPLE_WRITE_EVERY_S)
                self._now = False
                batch = {r: changes for r, changes in self._pending.items() if changes}
                for recorder in batch:
                    self._pending[recorder] = []
                    recorder.taken_phase = recorder.latest_phase  # what these changes reach
                self._queued = 0
            try:
                self._write(batch)
            except Exception:  # each write catches its own errors: this is a bug
                log.exception("recording crashed migrations=%d", len(batch))
            with self._cond:
                for recorder, changes in batch.items():
                    recorder.written += len(changes)
                    if None in changes and not self._pending[recorder]:
                        del self._pending[recorder]  # closed
                self._cond.notify_all()
                if not self._pending:
                    self._thread = None
                    return

    def _write(self, batch: dict[_Recorder, list[_Change | None]]) -> None:
        """The recorders with other changes than samples each in a transaction of its
        own, through :meth:`_Recorder.write`; those with samples only (nearly all of them)
        together, in one transaction of three statements (:func:`_write_samples`)."""
        samples: list[tuple[_Recorder, list[Sample]]] = []
        for recorder, changes in batch.items():
            only = [c for c in changes if isinstance(c, Sample)]
            if only and len(only) == sum(1 for c in changes if c is not None):
                samples.append((recorder, only))
            else:
                recorder.write([c for c in changes if c is not None])
        if not samples:
            return
        samples.sort(key=lambda batch: batch[0].mid)  # rows locked in id order: no cycle
        try:
            with self.db.engine.connect() as connection:
                _write_samples(connection, samples)
        except Exception as err:  # no connection, or the write failed: the next catches up
            log.warning(
                "cannot record progress migrations=%d samples=%d error=%s",
                len(samples), sum(len(only) for _r, only in samples), _first_line(err),
            )  # fmt: skip


def _write_samples(connection: Connection, batches: list[tuple[_Recorder, list[Sample]]]) -> None:
    """Samples of several migrations in one transaction on ``connection``, each record's
    under its recorder's claim: the latest progress of each (one UPDATE for all, which
    checks each claim and takes the rows' locks, in id order), the samples of the records
    still held inserted (one INSERT), and a status that failed to land repaired. The
    records are not loaded. On PostgreSQL each statement takes arrays, one value for each
    record or sample (:func:`_pg_unnest`): one execution, however many rows."""
    progress = [
        {**recorder.claim_params(),
         **{f"set_{col}": getattr(only[-1], field) for col, field in _PROGRESS_COLUMNS.items()}}
        for recorder, only in batches
    ]  # fmt: skip
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(_PG_LOCK_IN_ORDER, {"mids": [r.mid for r, _only in batches]})
            rows = connection.execute(
                _PG_WRITE_PROGRESS, {**_columns(progress), "updated_at": utcnow()}
            )
            held = {(row.id, row.owner, row.fence): row.status for row in rows}
            _insert_and_repair(connection, batches, held, _pg_insert)
            return
        connection.execute(_WRITE_PROGRESS, progress)  # one execution for each record
        rows = connection.execute(_READ_CLAIMS, {"mids": list({r.mid for r, _only in batches})})
        held = {(row.id, row.owner, row.fence): row.status for row in rows}
        _insert_and_repair(connection, batches, held, _insert)


def _insert_and_repair(
    connection: Connection,
    batches: list[tuple[_Recorder, list[Sample]]],
    held: dict[tuple[int, str | None, int], str],
    insert_rows: Callable[[Connection, list[dict[str, Any]]], None],
) -> None:
    """The samples of the records still ``held`` ((id, owner, fence): status) inserted, and
    a status that failed to land repaired. A recorder whose claim is not the record's has
    its samples dropped, even when the record's current claim is in the same batch."""
    rows_to_insert: list[dict[str, Any]] = []
    repairs: list[dict[str, Any]] = []
    for recorder, only in batches:
        status = held.get((recorder.mid, recorder.claim.owner, recorder.claim.fence))
        if status is None:
            log.warning("progress not recorded id=%d: another instance drives it (or the "
                        "record is gone)", recorder.mid)  # fmt: skip
            continue
        rows_to_insert += [
            {"migration_id": recorder.mid, **{f: getattr(x, f) for f in _SAMPLE_FIELDS}}
            for x in only
        ]
        phase = recorder.taken_phase
        if (
            phase is not None
            and not phase.is_final  # the outcome writes a final status itself
            and not Phase(status).is_final
            and status != phase.value
        ):
            log.info("record repaired id=%d status=%s", recorder.mid, phase.value)
            repairs.append({**recorder.claim_params(), "set_status": phase.value})
    if rows_to_insert:
        insert_rows(connection, rows_to_insert)
    if repairs:
        connection.execute(_REPAIR_STATUS, repairs)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts with the same keys) as one list of values per key."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def _pg_unnest(params: dict[str, str]) -> str:
    """``unnest(...) AS v(...)`` of one array parameter for each of ``params`` (name: SQL
    type): a set of rows from arrays of the same length."""
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in params.items())
    return f"unnest({arrays}) AS v({', '.join(params)})"


def _pg_type(column: Any) -> str:
    """The SQL type of an array of ``column``'s values (the types these tables use)."""
    kind = column.type
    if isinstance(kind, BigInteger):
        return "BIGINT"
    if isinstance(kind, Integer):
        return "INTEGER"
    if isinstance(kind, Float):
        return "DOUBLE PRECISION"
    if isinstance(kind, Boolean):
        return "BOOLEAN"
    return "TEXT"


#: the rows of a batch's records locked in id order (as the lease renewal does: no cycle)
_PG_LOCK_IN_ORDER = text(
    f"SELECT id FROM {_MIGRATIONS.name} WHERE id = ANY(CAST(:mids AS INTEGER[])) "
    "ORDER BY id FOR UPDATE"
)
#: a batch's latest progress of each record still held by its claim; the records held,
#: with their status
_PG_PROGRESS_ARRAYS = {
    "claim_mid": "INTEGER",
    "claim_owner": "TEXT",
    "claim_fence": "INTEGER",
    **{f"set_{col}": _pg_type(_MIGRATIONS.c[col]) for col in _PROGRESS_COLUMNS},
}
_PG_WRITE_PROGRESS = text(
    f"UPDATE {_MIGRATIONS.name} AS m SET "
    + ", ".join(f"{col} = v.set_{col}" for col in _PROGRESS_COLUMNS)
    + ", updated_at = :updated_at"  # as the column's onupdate does in the other statements
    + f" FROM {_pg_unnest(_PG_PROGRESS_ARRAYS)}"
    + " WHERE m.id = v.claim_mid AND m.owner = v.claim_owner AND m.fence = v.claim_fence"
    + " RETURNING m.id, m.owner, m.fence, m.status"
)
#: this instance's claims renewed (a claim of (id, fence) each): their ids and the
#: operator requests waiting on them. With a list bound as IN (...), each count of
#: migrations held was a statement of its own, compiled and prepared anew (the lease
#: round, every 2 s, was a third of an instance's processor while 25 migrations ran).
_PG_RENEW_LEASES = text(
    f"UPDATE {_MIGRATIONS.name} AS m SET lease_until = :until "
    f"FROM {_pg_unnest({'mid': 'INTEGER', 'fence': 'INTEGER'})} "
    "WHERE m.id = v.mid AND m.fence = v.fence AND m.owner = :owner "
    "RETURNING m.id, m.requested"
)
_PG_SAMPLE_COLUMNS = ("migration_id", *_SAMPLE_FIELDS)
_PG_COPY_SAMPLES = f"COPY {_SAMPLES.name} ({', '.join(_PG_SAMPLE_COLUMNS)}) FROM STDIN"


def _pg_insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The samples by COPY, in the connection's transaction: psycopg formats each row in
    C, where arrays for an INSERT from unnest() were formatted value by value in Python
    (a tenth of an instance's processor while it sampled 50 migrations)."""
    driver = connection.connection.driver_connection  # psycopg's, in the same transaction
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(_PG_COPY_SAMPLES) as copy:
        for row in rows:
            copy.write_row([row[column] for column in _PG_SAMPLE_COLUMNS])


def _insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    connection.execute(_INSERT_SAMPLES, rows)


def _first_line(err: BaseException) -> str:
    """The error's first line (SQLAlchemy's own go on with the SQL and a link)."""
    return next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)


class _Recorder(MigrationListener):
    """Writes the engine's progress into the migration's record, off the engine's thread.

    Each event queues a change; a writer (:class:`_RecordWriter`, the conductor's, shared
    by its migrations; else one of its own) applies what is waiting in one transaction,
    in order. A write that fails is logged and dropped: the next one repairs the status
    (the engine's latest phase), and the outcome write restores the decisions. The engine
    never waits for the database. :meth:`close` writes what is pending, then stops.

    Samples are most of the writes (4 a second per migration): the samples of all the
    recorders that have nothing else waiting are written together, in one transaction of
    three statements (:func:`_write_samples`), without loading a record.
    """

    def __init__(
        self, db: Database, migration_id: int, claim: Claim, writer: _RecordWriter | None = None
    ) -> None:
        self.db = db
        self.mid = migration_id
        self.claim = claim
        #: the engine's latest phase, set as its change is queued (under the writer's lock)
        self.latest_phase: Phase | None = None
        #: the latest phase of the changes the writer took last: its writes repair a status
        #: that failed to land to this one (not to a phase queued after them)
        self.taken_phase: Phase | None = None
        #: changes queued and written (or dropped) so far; the writer's lock guards them
        self.queued = self.written = 0
        self._writer = writer or _RecordWriter(db)
        self._writer.open(self)

    def _update(self, change: _Change, *, gather: bool = False, phase: Phase | None = None) -> None:
        """Queue a change (of the engine's phase to ``phase``, if given); ``gather``: it
        may wait for the next ones (samples)."""
        self._writer.put(self, change, now=not gather, phase=phase)

    def flush(self) -> None:
        """Return once every change queued so far has been written (or dropped)."""
        self._writer.wait(self)

    def close(self) -> None:
        """Write what is pending and stop."""
        self._writer.put(self, None, now=True)
        self._writer.wait(self, RECORDER_CLOSE_TIMEOUT_S)

    def write(self, changes: list[_Change]) -> None:
        """Apply ``changes`` to the record in one transaction: its status, phase times and
        decisions read locked under the claim (one row, three columns), the columns that
        changed written with the claim checked again, the samples inserted; then its
        status repaired. Nothing when another instance holds the claim."""
        claim = self.claim_params()
        try:
            with self.db.engine.connect() as connection, connection.begin():
                found = connection.execute(_READ_CLAIMED, claim).first()
                if found is None:  # gone, or claimed by another instance
                    if connection.scalar(select(_MIGRATIONS.c.id).where(_CLAIMED_ID), claim):
                        log.warning(
                            "progress not recorded id=%d: another instance drives it", self.mid
                        )
                    return
                row: _Row = dict(found._mapping)
                before = dict(row)
                samples = [c for c in changes if isinstance(c, Sample)]
                for change in changes:
                    if not isinstance(change, Sample):
                        change(row)
                if samples:
                    connection.execute(
                        _INSERT_SAMPLES,
                        [
                            {"migration_id": self.mid, **{f: getattr(s, f) for f in _SAMPLE_FIELDS}}
                            for s in samples
                        ],
                    )
                    last = samples[-1]
                    row.update({col: getattr(last, f) for col, f in _PROGRESS_COLUMNS.items()})
                self._repair(row)
                values = {k: v for k, v in row.items() if k not in before or v != before[k]}
                if values:  # the columns set are the parameters' (one statement, cached)
                    connection.execute(_WRITE_CLAIMED, {**claim, **values, "updated_at": utcnow()})
        except Exception as err:  # the migration goes on; the next write catches up
            log.warning(
                "cannot record progress id=%d changes=%d error=%s",
                self.mid, len(changes), _first_line(err),
            )  # fmt: skip

    def _repair(self, row: _Row) -> None:
        phase = self.taken_phase
        status = Phase(row["status"])
        if (
            phase is not None
            and not phase.is_final  # the outcome writes a final status itself
            and not status.is_final
            and status is not phase
        ):
            log.info("record repaired id=%d status=%s", self.mid, phase.value)
            row["status"] = phase.value  # an earlier write did not land

    def claim_params(self) -> dict[str, Any]:
        """The claim, as the parameters of the statements that check it."""
        return {"claim_mid": self.mid, "claim_owner": self.claim.owner,
                "claim_fence": self.claim.fence}  # fmt: skip

    def on_phase(self, phase: Phase, at_s: float, reason: str) -> None:

        def apply(row: _Row) -> None:
            # A final status is written by the outcome (_write_outcome), in one transaction
            # with the final figures: a reader never sees "completed" with memory remaining.
            if not phase.is_final and (
                phase is not Phase.PREPARING or row["status"] == Phase.QUEUED.value
            ):
                row["status"] = phase.value
            row["phase_times"] = {**(row["phase_times"] or {}), phase.value: round(at_s, 3)}
            if phase in (Phase.FAILED, Phase.CANCELLED, Phase.POSTCOPY_PAUSED) and reason:
                row["error"] = reason

        self._update(apply, phase=phase)

    def on_sample(self, sample: Sample) -> None:
        self._update(sample, gather=True)

    def on_plan(self, plan: Plan) -> None:
        prediction = plan.to_dict()

        def apply(row: _Row) -> None:
            row["prediction"] = prediction

        self._update(apply)

    def on_decision(self, record_: DecisionRecord) -> None:
        entry = decision_entry(record_)

        def apply(row: _Row) -> None:
            row["decisions"] = [*(row["decisions"] or []), entry]
            if record_.action.value == "switch-to-postcopy":
                row["switch_at_s"] = record_.at_s

        self._update(apply)


def count_active(session: Session) -> int:
    return int(
        session.scalar(select(func.count(Migration.id)).where(Migration.status.in_(ACTIVE_PHASES)))
        or 0
    )
