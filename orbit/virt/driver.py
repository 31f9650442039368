"""The narrow interface between ORBIT and a hypervisor host: only the calls we use.

Hosts are named by their libvirt URI (``qemu+tcp://198.18.0.2/system``); domains by name.
The libvirt implementation is :class:`orbit.virt.libvirt_driver.LibvirtDriver`; the
in-memory :class:`orbit.virt.fake.FakeDriver` serves fast tests of callers only.

Every method raises an :class:`~orbit.errors.HypervisorError` subclass on failure
(:class:`~orbit.errors.HostUnreachable`, :class:`~orbit.errors.DomainNotFound`), or a
:class:`~orbit.errors.MigrationFailed` from :meth:`HypervisorDriver.migrate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    OTHER = "other"


@dataclass(frozen=True)
class Owner:
    """The project a domain's metadata names: ORBIT's own element, else Nova's
    ``<nova:owner><nova:project uuid=...>name</nova:project>``. It travels with the domain
    when it migrates."""

    project_id: str | None
    project_name: str | None


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: DomainState
    #: libvirt's reason for the state, e.g. 'postcopy', 'postcopy-failed', 'migration', 'user'
    reason: str
    memory_mib: int
    vcpus: int
    persistent: bool
    #: the project the domain's metadata names; None when it names none
    owner: Owner | None = None

    @property
    def postcopy_failed(self) -> bool:
        return self.reason == "postcopy-failed"


@dataclass(frozen=True)
class HostInfo:
    """A hypervisor's capacity, as the scheduler and the hypervisor list need it."""

    memory_total_mib: int
    memory_free_mib: int
    cpus: int


@dataclass(frozen=True)
class JobStats:
    """libvirt's job statistics, normalised to bytes, bytes/s and milliseconds."""

    active: bool
    time_elapsed_ms: int = 0
    downtime_ms: int | None = None
    memory_total_bytes: int = 0
    memory_processed_bytes: int = 0
    memory_remaining_bytes: int = 0
    dirty_rate_bytes_s: int = 0
    bandwidth_bytes_s: int = 0
    iteration: int = 0
    postcopy_requests: int = 0
    disk_total_bytes: int = 0
    disk_processed_bytes: int = 0
    disk_remaining_bytes: int = 0


@dataclass(frozen=True)
class DirtyRate:
    """A guest's dirty rate as the hypervisor measured it (libvirt's dirty-rate calculation)."""

    bytes_s: int
    #: 'dirty-bitmap' (exact: KVM's dirty log) or 'page-sampling' (an estimate from hashes)
    mode: str
    period_s: float


@dataclass(frozen=True)
class MigrationParams:
    """Everything :meth:`HypervisorDriver.migrate` needs besides the source and domain."""

    dst_uri: str
    #: where QEMU sends the stream (``tcp://198.18.0.2``); None lets libvirt pick
    dst_migration_uri: str | None = None
    post_copy: bool = False
    block_migration: bool = False
    bandwidth_mib_s: int = 0
    downtime_limit_ms: int | None = None
    #: resume a post-copy migration that broke (VIR_MIGRATE_POSTCOPY_RESUME)
    postcopy_resume: bool = False


#: Domain events the engine cares about: they wake its monitoring loop early.
EVENT_ITERATION = "migration-iteration"
EVENT_SUSPENDED_POSTCOPY = "suspended-postcopy"
EVENT_POSTCOPY_FAILED = "postcopy-failed"
EVENT_JOB_COMPLETED = "job-completed"
EVENT_LIFECYCLE = "lifecycle"

#: ``callback(event, stats)``: ``stats`` only with EVENT_JOB_COMPLETED (the job's final
#: statistics, which the source reports even when the destination keeps none: post-copy)
EventCallback = Callable[[str, JobStats | None], None]


class HypervisorDriver(Protocol):
    def ping(self, uri: str) -> None:
        """Return if the host's daemon answers; raise HostUnreachable if not."""

    def host_info(self, uri: str) -> HostInfo:
        """Memory and CPUs of the host; HostUnreachable if it does not answer."""
        ...

    def list_domains(self, uri: str) -> list[DomainInfo]:
        """Every domain defined or active on the host."""

    def domain_info(self, uri: str, name: str) -> DomainInfo:
        """State and size of one domain; raise DomainNotFound if it is not on the host."""

    def set_owner(self, uri: str, name: str, owner: Owner | None) -> None:
        """Write (or, with None, remove) the domain's project in its metadata, live and in
        its persistent definition."""

    def migrate(self, uri: str, name: str, params: MigrationParams) -> None:
        """Live-migrate ``name`` from host ``uri`` peer-to-peer; block until it ends.

        Needs the domain active on the source. On failure raises MigrationFailed; the
        domain then still runs on the source, unless post-copy had started (then both
        sides stay as they are: never destroyed here).
        """

    def job_stats(self, uri: str, name: str, *, completed: bool = False) -> JobStats:
        """The running migration job's progress (``completed``: the last finished job's)."""

    def measure_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> DirtyRate:
        """Measure how fast the running domain dirties memory; blocks about ``period_s``.

        Not while a migration job runs on the domain (libvirt waits for the job to end).
        """
        ...

    def start_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> None:
        """Start measuring the dirty rate over ``period_s`` and return at once.

        Start it just before the migration: libvirt cannot start one while a migration job
        runs, but one already started goes on beside the migration, and
        :meth:`read_dirty_rate` reads its result while the migration runs.
        """
        ...

    def read_dirty_rate(self, uri: str, name: str) -> DirtyRate | None:
        """The result of the measurement :meth:`start_dirty_rate` started; None while it
        is still measuring."""
        ...

    def new_page_faults(self, uri: str, name: str) -> int | None:
        """KVM's count of the domain's page faults it fixed, over all vCPUs (``pf_fixed``);
        None when the hypervisor does not report it (TCG; a stack without KVM statistics).

        While a migration's dirty log write-protects the guest's memory, the guest's first
        write to each page since its protection is one such fault: the count grows by the
        pages the guest dirties that were not dirty yet, readable while a pass runs (QEMU
        says what a pass dirtied only once it has ended). A host whose KVM logs dirty pages
        without protecting them (Intel PML) counts almost none.
        """
        ...

    def resident_bytes(self, uri: str, name: str) -> int:
        """Host memory the domain's RAM occupies (the QEMU process's RSS): the guest's
        never-written pages are not resident, and migration sends them almost for free."""
        ...

    def start_postcopy(self, uri: str, name: str) -> None:
        """Switch the running migration to post-copy (it must have been started with it)."""

    def set_max_downtime(self, uri: str, name: str, downtime_ms: int) -> None:
        """Change the downtime target of the running migration."""

    def abort_job(self, uri: str, name: str, *, postcopy: bool = False) -> None:
        """Abort the running job; ``postcopy`` breaks a post-copy migration (recoverable)."""

    def resume_defect(self, uri: str) -> str | None:
        """Why the host's daemon cannot take a post-copy resume as the destination (a known
        defect of its version), or None when it can. Raise HostUnreachable if it does not
        answer."""
        ...

    def suspend(self, uri: str, name: str) -> None:
        """Pause the domain's vCPUs (to let a pre-copy migration converge)."""

    def resume(self, uri: str, name: str) -> None:
        """Resume a paused domain."""

    def make_persistent(self, uri: str, name: str) -> None:
        """Define a transient domain from its running configuration (no-op if persistent)."""
        ...

    def undefine_if_stopped(self, uri: str, name: str) -> bool:
        """Undefine the domain if it is shut off; never touches a running or paused one.

        Returns True if it was undefined.
        """
        ...

    def watch(self, uri: str, name: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event, stats)`` on the domain's migration events.

        Returns a function that unsubscribes.
        """
