"""``GET /metrics``: ORBIT in Prometheus' text format (version 0.0.4), named after KubeVirt's
``kubevirt_vmi_migration_*`` metrics.

Counters and histograms of finished migrations come from the database, so they survive a
restart of orbit-server and agree with the records. A finished migration never changes, so
:class:`MigrationMetrics` reads each one once (what it needs, a few numbers) and keeps it;
a scrape then reads only the migrations that finished since the previous one, those still
running (with their newest sample), the hosts and the queue. API latency is this process's
own (a histogram per route, since it started).

=====================================================  =========  ==========================
metric                                                 type       labels
=====================================================  =========  ==========================
orbit_migrations_total                                 counter    outcome, policy
orbit_migrations_in_phase                              gauge      phase
orbit_migration_duration_seconds                       histogram  policy (completed ones)
orbit_migration_downtime_seconds                       histogram  (completed ones)
orbit_migration_memory_transferred_bytes               histogram  (completed ones)
orbit_migration_postcopy_seconds                       histogram  (completed after a switch)
orbit_migration_postcopy_pauses_total                  counter
orbit_migration_postcopy_resume_attempts_total         counter
orbit_migration_data_processed_bytes                   gauge      migration, server
orbit_migration_data_remaining_bytes                   gauge      migration, server
orbit_migration_dirty_memory_rate_bytes                gauge      migration, server
orbit_host_queue_depth                                 gauge      host (queued, leaving it)
orbit_hosts                                            gauge      state
orbit_api_request_duration_seconds                     histogram  method, route, code
=====================================================  =========  ==========================
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orbit.db.models import Host, Migration, MigrationSample
from orbit.migration.phase import Phase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DOWNTIME_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
MIB = 1024 * 1024
BYTES_BUCKETS = tuple(float(n * MIB) for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384))
POSTCOPY_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
API_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FINAL = tuple(p.value for p in Phase if p.is_final)
ACTIVE = tuple(p.value for p in Phase if not p.is_final)
#: finished migrations are re-read from a little before the newest one already seen:
#: two records can finish in the same instant, or commit out of order
WATERMARK_SLACK = timedelta(seconds=60)


@dataclass
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{_num(bound)}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_num(self.total)}")
        out.append(f"{name}_count{braces} {self.n}")
        return out


@dataclass(frozen=True)
class Finished:
    """What the metrics need of a finished migration."""

    outcome: str
    policy: str
    total_s: float | None
    downtime_ms: int | None
    memory_bytes: int
    postcopy_s: float | None
    pauses: int
    resume_attempts: int


def finished(m: Migration) -> Finished:
    pauses = sum(1 for d in m.decisions if d.get("action") == "pause-postcopy")
    resumes = sum(
        1
        for d in m.decisions
        if d.get("action") == "resume-postcopy" and "skipped" not in str(d.get("reason", ""))
    )
    postcopy_s = None
    if m.switch_at_s is not None and m.total_s is not None:
        postcopy_s = max(0.0, m.total_s - m.switch_at_s)
    return Finished(
        outcome=m.status,
        policy=m.policy,
        total_s=m.total_s,
        downtime_ms=m.downtime_ms,
        memory_bytes=m.memory_processed_bytes,
        postcopy_s=postcopy_s,
        pauses=pauses,
        resume_attempts=resumes,
    )


class ApiLatency:
    """Request durations by method, route template and status code (this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str, str], Histogram] = {}

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        key = (method, route, str(code))
        with self._lock:  # no I/O under it
            hist = self._by_key.get(key)
            if hist is None:
                hist = self._by_key[key] = Histogram(API_BUCKETS_S)
            hist.observe(seconds)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, Histogram(h.buckets, list(h.counts), h.total, h.n))
                           for k, h in self._by_key.items())  # fmt: skip
        out = _head("orbit_api_request_duration_seconds", "histogram",
                    "API request durations by route template and status code")  # fmt: skip
        for (method, route, code), hist in items:
            labels = f'method="{method}",route="{_esc(route)}",code="{code}"'
            out += hist.lines("orbit_api_request_duration_seconds", labels)
        return out


class MigrationMetrics:
    """The database's side of /metrics; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, Finished] = {}
        self._watermark: datetime | None = None

    def _refresh(self, session: Session) -> list[Finished]:
        with self._lock:
            watermark, seen = self._watermark, set(self._seen)
        query = select(Migration).where(Migration.status.in_(FINAL))
        if watermark is not None:
            query = query.where(Migration.finished_at >= watermark - WATERMARK_SLACK)
        new = {
            m.id: (finished(m), m.finished_at) for m in session.scalars(query) if m.id not in seen
        }
        with self._lock:
            for mid, (record, _at) in new.items():
                self._seen[mid] = record
            stamps = [at for _r, at in new.values() if at is not None]
            if stamps:
                newest = max(stamps)
                if self._watermark is None or newest > self._watermark:
                    self._watermark = newest
            return list(self._seen.values())

    def lines(self, session: Session) -> list[str]:
        done = self._refresh(session)  # the database first: no lock held across it
        out: list[str] = []
        counts = Counter((f.outcome, f.policy) for f in done)
        out += _head("orbit_migrations_total", "counter",
                     "finished live migrations by outcome and policy")  # fmt: skip
        for (outcome, policy), n in sorted(counts.items()):
            out.append(f'orbit_migrations_total{{outcome="{outcome}",policy="{policy}"}} {n}')
        phases = Counter(
            dict(session.execute(
                select(Migration.status, func.count(Migration.id))
                .where(Migration.status.in_(ACTIVE)).group_by(Migration.status)
            ).tuples().all())
        )  # fmt: skip
        out += _head("orbit_migrations_in_phase", "gauge", "unfinished migrations by phase")
        out += [f'orbit_migrations_in_phase{{phase="{p}"}} {phases.get(p, 0)}' for p in ACTIVE]
        completed = [f for f in done if f.outcome == Phase.COMPLETED.value]
        by_policy: dict[str, Histogram] = {}
        for f in completed:
            if f.total_s is not None:
                by_policy.setdefault(f.policy, Histogram(DURATION_BUCKETS_S)).observe(f.total_s)
        out += _head("orbit_migration_duration_seconds", "histogram",
                     "completed migrations' total time, request to the VM moved")  # fmt: skip
        for policy, hist in sorted(by_policy.items()):
            out += hist.lines("orbit_migration_duration_seconds", f'policy="{policy}"')
        out += _histogram("orbit_migration_downtime_seconds", DOWNTIME_BUCKETS_S,
                          (f.downtime_ms / 1000 for f in completed if f.downtime_ms is not None),
                          "completed migrations' downtime (QEMU's figure)")  # fmt: skip
        out += _histogram("orbit_migration_memory_transferred_bytes", BYTES_BUCKETS,
                          (float(f.memory_bytes) for f in completed),
                          "memory sent by completed migrations")  # fmt: skip
        out += _histogram("orbit_migration_postcopy_seconds", POSTCOPY_BUCKETS_S,
                          (f.postcopy_s for f in completed if f.postcopy_s is not None),
                          "seconds in post-copy (the VM needs both hosts)")  # fmt: skip
        out += _head("orbit_migration_postcopy_pauses_total", "counter",
                     "post-copy pauses of finished migrations (a link or host failed)")  # fmt: skip
        out.append(f"orbit_migration_postcopy_pauses_total {sum(f.pauses for f in done)}")
        out += _head("orbit_migration_postcopy_resume_attempts_total", "counter",
                     "resumes of paused post-copy migrations that were made")  # fmt: skip
        out.append("orbit_migration_postcopy_resume_attempts_total "
                   f"{sum(f.resume_attempts for f in done)}")  # fmt: skip
        out += self._running(session)
        out += _hosts(session)
        return out

    @staticmethod
    def _running(session: Session) -> list[str]:
        rows = session.execute(
            select(Migration.id, Migration.server_id).where(
                Migration.status.in_(ACTIVE), Migration.status != Phase.QUEUED.value
            )
        ).all()
        newest = {}
        if rows:
            last = (
                select(MigrationSample.migration_id, func.max(MigrationSample.elapsed_s))
                .where(MigrationSample.migration_id.in_([r[0] for r in rows]))
                .group_by(MigrationSample.migration_id)
                .subquery()
            )
            for s in session.scalars(
                select(MigrationSample).join(
                    last,
                    (MigrationSample.migration_id == last.c.migration_id)
                    & (MigrationSample.elapsed_s == last.c[1]),
                )
            ):
                newest[s.migration_id] = s
        out: list[str] = []
        for name, attr, text in (
            ("orbit_migration_data_processed_bytes", "memory_processed_bytes",
             "memory sent so far by a running migration"),
            ("orbit_migration_data_remaining_bytes", "memory_remaining_bytes",
             "memory a running migration has still to send"),
            ("orbit_migration_dirty_memory_rate_bytes", "dirty_rate_bytes_s",
             "how fast the migrating guest dirties memory (bytes/s)"),
        ):  # fmt: skip
            out += _head(name, "gauge", text)
            for mid, server_id in rows:
                sample = newest.get(mid)
                value = getattr(sample, attr) if sample is not None else 0
                out.append(f'{name}{{migration="{mid}",server="{server_id}"}} {value}')
        return out


def _hosts(session: Session) -> list[str]:
    hosts = list(session.execute(select(Host.id, Host.name, Host.state)).all())
    queued = dict(
        session.execute(
            select(Migration.source_host_id, func.count(Migration.id))
            .where(Migration.status == Phase.QUEUED.value)
            .group_by(Migration.source_host_id)
        )
        .tuples()
        .all()
    )
    out = _head("orbit_host_queue_depth", "gauge", "queued migrations leaving each host")
    out += [f'orbit_host_queue_depth{{host="{_esc(name)}"}} {queued.get(hid, 0)}'
            for hid, name, _state in sorted(hosts, key=lambda h: h[1])]  # fmt: skip
    states = Counter(state for _hid, _name, state in hosts)
    out += _head("orbit_hosts", "gauge", "registered hosts by state")
    out += [f'orbit_hosts{{state="{s}"}} {states.get(s, 0)}' for s in ("up", "down", "unknown")]
    return out


def _histogram(
    name: str, buckets: Sequence[float], values: Iterable[float], text: str
) -> list[str]:
    hist = Histogram(buckets)
    for value in values:
        hist.observe(value)
    return _head(name, "histogram", text) + hist.lines(name)


def _head(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
