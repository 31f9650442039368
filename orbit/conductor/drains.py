"""Host drains: plan, start, step and cancel. Every VM off a host, nothing lost.

- :meth:`Drains.plan` reads the host, its servers and the targets, measures each running
  VM's dirty rate (in parallel, with no database session open) and calls the pure planner
  :func:`orbit.scheduler.drain.plan_drain`.
- :meth:`Drains.start` stores the drain (one unfinished drain per host: a unique index)
  and disables the host, so that the scheduler sends it nothing while it empties.
- :meth:`Drains.step` runs on the conductor's dispatch loop: it reads each unfinished
  drain, follows the migrations it started, starts the next VMs in the plan's order while
  fewer than ``parallel`` are under way, and writes the items back with a compare-and-set
  on the drain's status (a cancel in between wins). Everything lives in the database, so
  a restarted orbit-server goes on where the last one stopped; a VM whose migration was
  started but not yet written is found again by its unfinished migration.
- A VM that cannot move (no room, not running, the deadline passed, two failed attempts)
  stays where it is and its item says why: a drain never loses a VM.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orbit.conductor.inventory import ACTIVE_PHASES
from orbit.db.models import Drain, DrainState, Host, HostState, Migration, Server, ServerStatus
from orbit.db.types import utcnow
from orbit.errors import (
    ComputeHostNotFound,
    InvalidMigration,
    MigrationInProgress,
    MigrationRefused,
    OrbitError,
)
from orbit.migration.model import (
    DEFAULT_COMPLETION_TIMEOUT_S,
    DEFAULT_DOWNTIME_LIMIT_MS,
    MigrationSettings,
)
from orbit.migration.phase import Phase
from orbit.migration.predict import DEFAULT_LINK_BYTES_S, MEASURE_PERIOD_S
from orbit.scheduler.drain import DrainPlan, DrainVM, Target, plan_drain

if TYPE_CHECKING:
    from orbit.conductor.conductor import Conductor

log = logging.getLogger(__name__)

#: a VM's migration is tried this many times before its item is 'failed'
MAX_ATTEMPTS = 2
#: dirty-rate measurements of the drained host's VMs run this many at a time
MEASURE_WORKERS = 8
#: the most VMs one drain may run at once
MAX_PARALLEL = 16


@dataclass(frozen=True)
class DrainRequest:
    host_name: str
    #: allowed destinations; None = every enabled host that is up
    targets: list[str] | None
    post_copy: bool
    max_parallel: int
    deadline_s: float | None


@dataclass(frozen=True)
class Planned:
    host: Host
    plan: DrainPlan
    #: servers on the host that cannot be live-migrated at all: (server, why)
    unmovable: list[tuple[Server, str]]


def item_of_move(move: Any) -> dict[str, Any]:
    return {**asdict(move), "state": "pending", "migration_id": None, "attempts": 0,
            "outcome": None}  # fmt: skip


#: the drains not ended yet
UNFINISHED = select(Drain.id).where(
    Drain.status.in_([DrainState.RUNNING.value, DrainState.CANCELLING.value])
)


class Drains:
    """The conductor's drains; see the module docstring."""

    def __init__(self, conductor: Conductor) -> None:
        self.conductor = conductor
        self.db = conductor.db
        self.driver = conductor.driver

    # -- plan and start (the API's request thread) ---------------------------------------

    def plan(self, session: Session, request: DrainRequest) -> Planned:
        """Measure and plan; raise a specific OrbitError for a bad request. Ends the
        session's transaction before measuring (no connection held while hosts answer)."""
        from orbit.conductor.conductor import link_between, reserved_mib

        if not 1 <= request.max_parallel <= MAX_PARALLEL:
            raise InvalidMigration(
                f"max_parallel must be 1..{MAX_PARALLEL}, got {request.max_parallel}"
            )
        if request.deadline_s is not None and request.deadline_s <= 0:
            raise InvalidMigration(f"the deadline must be > 0 s, got {request.deadline_s}")
        host = session.scalar(select(Host).where(Host.name == request.host_name))
        if host is None:
            raise ComputeHostNotFound(f"host {request.host_name} is not registered")
        hosts = {h.name: h for h in session.scalars(select(Host))}
        if request.targets is not None:
            unknown = [t for t in request.targets if t not in hosts]
            if unknown:
                raise InvalidMigration(f"unknown target host(s): {', '.join(unknown)}")
            if host.name in request.targets:
                raise InvalidMigration(f"{host.name} is the host being drained, not a target")
            if not request.targets:
                raise InvalidMigration("give at least one target host, or none for any")
            chosen = [hosts[t] for t in request.targets]
        else:
            chosen = [h for h in hosts.values() if h.id != host.id and not h.disabled]
        targets_up = [h for h in chosen if h.state == HostState.UP.value]
        reserved = reserved_mib(session)
        targets = []
        for t in sorted(targets_up, key=lambda h: h.name):
            link = link_between(session, host, t)
            targets.append(
                Target(
                    t.name,
                    t.memory_free_mib - reserved.get(t.id, 0),
                    link.bytes_s if link is not None else DEFAULT_LINK_BYTES_S,
                )
            )
        servers = list(
            session.scalars(select(Server).where(Server.host_id == host.id).order_by(Server.name))
        )
        movable = [s for s in servers if s.status in (ServerStatus.ACTIVE.value,
                                                       ServerStatus.MIGRATING.value)]  # fmt: skip
        unmovable = [
            (s, f"it is {s.status}: only a running server can be live-migrated")
            for s in servers
            if s not in movable
        ]
        uri = host.uri
        names = [(s.id, s.name, s.memory_mib) for s in movable]
        session.commit()  # end the read: no transaction stays open while the VMs are measured
        rates = self._measure(uri, [name for _id, name, _mib in names])
        vms = [DrainVM(sid, name, mib, rates.get(name)) for sid, name, mib in names]
        plan = plan_drain(
            vms,
            targets,
            post_copy=request.post_copy,
            max_parallel=request.max_parallel,
            host_limit=self.conductor.config.max_outgoing_per_host,
            timeout_s=DEFAULT_COMPLETION_TIMEOUT_S,
            downtime_limit_ms=DEFAULT_DOWNTIME_LIMIT_MS,
            deadline_s=request.deadline_s,
        )
        down = [h.name for h in chosen if h.state != HostState.UP.value]
        if down:
            plan.notes.append(f"not used, not up: {', '.join(sorted(down))}")
        return Planned(host, plan, unmovable)

    def _measure(self, uri: str, names: list[str]) -> dict[str, float]:
        """Each VM's dirty rate in bytes/s (those that could not be measured are left out)."""

        def one(name: str) -> tuple[str, float | None]:
            try:
                rate = self.driver.measure_dirty_rate(uri, name, period_s=MEASURE_PERIOD_S)
            except OrbitError as err:
                log.warning("dirty rate not measured domain=%s error=%s", name, err)
                return name, None
            return name, float(rate.bytes_s)

        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(MEASURE_WORKERS, len(names))) as pool:
            results = list(pool.map(one, names))
        return {name: rate for name, rate in results if rate is not None}

    def start(
        self,
        session: Session,
        request: DrainRequest,
        planned: Planned,
        *,
        user_id: str | None,
        project_id: str | None,
    ) -> Drain:
        """Store the drain and disable its host; MigrationRefused if one already runs."""
        host = session.get(Host, planned.host.id)
        if host is None:
            raise ComputeHostNotFound(f"host {request.host_name} is no longer registered")
        items = [item_of_move(m) for m in planned.plan.moves]
        for server, why in planned.unmovable:
            items.append({"server_id": server.id, "name": server.name,
                          "memory_mib": server.memory_mib, "dest": None, "policy": "",
                          "strategy": "", "predicted_s": 0.0, "predicted_postcopy_s": 0.0,
                          "at_risk": False, "reason": why, "state": "stuck",
                          "migration_id": None, "attempts": 0, "outcome": why})  # fmt: skip
        for item in items:
            if item["dest"] is None and item["state"] == "pending":
                item["state"], item["outcome"] = "stuck", item["reason"]
        drain = Drain(
            host_id=host.id,
            host_name=host.name,
            status=DrainState.RUNNING.value,
            post_copy=request.post_copy,
            max_parallel=request.max_parallel,
            parallel=planned.plan.parallel,
            deadline_s=request.deadline_s,
            targets=request.targets,
            items=items,
            notes=list(planned.plan.notes),
            predicted_s=round(planned.plan.predicted_s, 1),
            user_id=user_id,
            project_id=project_id,
        )
        session.add(drain)
        try:
            session.flush()
        except IntegrityError as err:
            session.rollback()
            raise MigrationRefused(f"host {request.host_name} is already being drained") from err
        if not host.disabled:
            host.disabled, host.disabled_reason = True, f"draining (drain {drain.id})"
        session.commit()
        log.info(
            "drain started drain=%d host=%s vms=%d parallel=%d predicted_s=%.1f",
            drain.id,
            host.name,
            len(items),
            drain.parallel,
            drain.predicted_s,
        )
        self.conductor.kick()
        return drain

    def cancel(self, session: Session, drain: Drain) -> None:
        """Start nothing more; migrations under way run to their end (their phase's rules)."""
        result = session.execute(
            update(Drain)
            .where(Drain.id == drain.id, Drain.status == DrainState.RUNNING.value)
            .values(status=DrainState.CANCELLING.value)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if int(getattr(result, "rowcount", 0)) != 1:
            session.refresh(drain)
            if drain.state is not DrainState.CANCELLING:
                raise MigrationRefused(f"drain {drain.id} is already {drain.status}")
        self.conductor.kick()

    # -- the step (the conductor's dispatch loop) ----------------------------------------

    def step(self) -> None:
        """One pass over the unfinished drains."""
        with self.db.session() as session:
            ids = list(session.scalars(UNFINISHED))
        for drain_id in ids:
            try:
                self._step_one(drain_id)
            except OrbitError as err:
                log.warning("drain step failed drain=%d error=%s", drain_id, err)

    def _step_one(self, drain_id: int) -> None:
        with self.db.session() as session:
            drain = session.get_one(Drain, drain_id)
            status = drain.state
            items = [dict(i) for i in drain.items]
            elapsed_s = (utcnow() - drain.created_at).total_seconds()
            deadline_s, parallel = drain.deadline_s, drain.parallel
            settings_post_copy = drain.post_copy
            host_id, targets = drain.host_id, drain.targets
            self._follow(session, items, host_id)
        if status is DrainState.RUNNING:
            if deadline_s is not None and elapsed_s > deadline_s:
                for item in items:
                    if item["state"] == "pending":
                        item["state"] = "stuck"
                        item["outcome"] = (
                            f"the deadline of {deadline_s:.0f} s passed before it started"
                        )
            under_way = sum(1 for i in items if i["state"] == "migrating")
            for item in items:
                if under_way >= parallel:
                    break
                if item["state"] != "pending":
                    continue
                self._start_item(item, post_copy=settings_post_copy, targets=targets)
                if item["state"] == "migrating":
                    under_way += 1
        new_status = status
        if not any(i["state"] == "migrating" for i in items):
            if status is DrainState.CANCELLING:
                for item in items:
                    if item["state"] == "pending":
                        item["state"], item["outcome"] = "cancelled", "the drain was cancelled"
                new_status = DrainState.CANCELLED
            elif not any(i["state"] == "pending" for i in items):
                moved = all(i["state"] == "moved" for i in items)
                new_status = DrainState.COMPLETED if moved else DrainState.INCOMPLETE
        with self.db.session() as session:
            values: dict[str, Any] = {"items": items, "updated_at": utcnow()}
            if new_status is not status:
                values.update(status=new_status.value, finished_at=utcnow())
            written = session.execute(
                update(Drain)
                .where(Drain.id == drain_id, Drain.status == status.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        if int(getattr(written, "rowcount", 0)) == 1 and new_status is not status:
            counts = {s: sum(1 for i in items if i["state"] == s) for s in ("moved", "failed",
                                                                             "stuck")}  # fmt: skip
            log.info("drain ended drain=%d status=%s moved=%d failed=%d stuck=%d elapsed_s=%.1f",
                     drain_id, new_status.value, counts["moved"], counts["failed"],
                     counts["stuck"], elapsed_s)  # fmt: skip

    def _follow(self, session: Session, items: list[dict[str, Any]], host_id: str | None) -> None:
        """Update the items whose migration ended, or whose VM left the host another way."""
        for item in items:
            if item["state"] == "migrating":
                m = session.get(Migration, item["migration_id"])
                if m is None or not m.phase.is_final:
                    continue
                if m.phase is Phase.COMPLETED:
                    item["state"] = "moved"
                    dest = m.dest_host.name if m.dest_host else "?"
                    switch = (f", switched to post-copy at {m.switch_at_s:.1f} s"
                              if m.switch_at_s is not None else "")  # fmt: skip
                    took = f" in {m.total_s:.1f} s" if m.total_s is not None else ""
                    item["outcome"] = f"moved to {dest}{took}{switch}"
                    continue
                item["attempts"] = int(item.get("attempts", 0))
                why = f"attempt {item['attempts']}: migration {m.id} {m.status}: {m.error}"
                if item["attempts"] < MAX_ATTEMPTS:
                    item["state"], item["outcome"] = "pending", why
                else:
                    item["state"], item["outcome"] = "failed", f"{why}; it stays on its host"
            elif item["state"] == "pending":
                server = session.get(Server, item["server_id"])
                if server is None:
                    item["state"], item["outcome"] = "stuck", "the server is no longer known"
                elif server.host_id != host_id and server.status == ServerStatus.ACTIVE.value:
                    where = server.host.name if server.host else "an unknown host"
                    item["state"], item["outcome"] = (
                        "moved",
                        f"left the host by other means ({where})",
                    )

    def _start_item(
        self, item: dict[str, Any], *, post_copy: bool, targets: list[str] | None
    ) -> None:
        """Ask for the VM's migration: the plan's destination, else another target."""
        settings = MigrationSettings.resolve(
            post_copy=post_copy,
            policy=item["policy"] or None,
            post_copy_after_iterations=item.get("post_copy_after"),
        )
        # the plan's destination, then the other targets (None: the scheduler's choice)
        candidates: list[str | None] = [item["dest"]] if item["dest"] else []
        others: list[str | None] = list(targets) if targets else [None]
        candidates += [t for t in others if t not in candidates]
        errors: list[str] = []
        for dest in candidates:
            try:
                with self.db.session() as session:
                    server = session.get(Server, item["server_id"])
                    if server is None:
                        item["state"], item["outcome"] = "stuck", "the server is no longer known"
                        return
                    mid = self.conductor.request_migration(
                        session,
                        server=server,
                        dest_host_name=dest,
                        settings=settings,
                        block_migration_auto=False,
                        disk_over_commit=False,
                        user_id=None,
                        project_id=None,
                        force=False,
                    )
                    session.commit()
                    item["migration_id"] = mid
            except MigrationInProgress:
                active = self._active_migration(item["server_id"])
                if active is None:
                    return  # it ended a moment ago: the next step looks again
                item["migration_id"] = active
            except OrbitError as err:
                errors.append(f"{dest or 'scheduler'}: {err}")
                continue
            item["state"] = "migrating"
            item["attempts"] = int(item.get("attempts", 0)) + 1
            return
        item["state"], item["outcome"] = "stuck", "; ".join(errors) or "no destination"

    def _active_migration(self, server_id: str) -> int | None:
        with self.db.session() as session:
            return session.scalar(
                select(Migration.id).where(
                    Migration.server_id == server_id, Migration.status.in_(ACTIVE_PHASES)
                )
            )
