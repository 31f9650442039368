"""An in-memory hypervisor for fast tests of the engine and its callers. Never the only
evidence that a feature works: the lab tests run the same paths on real libvirt.

Hosts are URIs, domains live in dicts. A migration is simulated in ticks of
``tick_s`` real seconds: each tick sends ``bandwidth_bytes`` and the guest dirties
``dirty_bytes``; pre-copy converges when what remains fits in one tick; after
``start_postcopy`` it completes once the remaining pages are pulled over.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orbit.errors import DomainNotFound, HostUnreachable, HypervisorError, MigrationFailed
from orbit.virt.driver import (
    EVENT_ITERATION,
    EVENT_JOB_COMPLETED,
    DirtyRate,
    DomainInfo,
    DomainState,
    EventCallback,
    HostInfo,
    JobStats,
    MigrationParams,
    Owner,
)

MIB = 1024 * 1024
#: the granularity of KVM's dirty log (x86 pages)
PAGE_BYTES = 4096


@dataclass
class FakeWorkload:
    """How a fake domain behaves while it migrates (per tick)."""

    memory_bytes: int = 256 * MIB
    bandwidth_bytes: int = 64 * MIB
    dirty_bytes: int = 0
    #: the memory it rewrites (None: all of it); a pass finds at most this dirty
    wss_bytes: int | None = None

    def measured_rate(self, tick_s: float, period_s: int) -> int:
        """What a dirty-bitmap measurement over ``period_s`` says: distinct pages dirtied
        in the period, per second (a working set rewritten faster counts once)."""
        dirtied = self.dirty_bytes / tick_s * period_s
        if self.wss_bytes is not None:
            dirtied = min(dirtied, self.wss_bytes)
        return round(dirtied / max(period_s, 1))


@dataclass
class _Job:
    stats: JobStats
    postcopy: bool = False
    aborted: bool = False
    #: abort_job(postcopy=True) during post-copy: the stream breaks, both sides stay
    pause_postcopy: bool = False
    #: break_control(): libvirt's call fails ("post-copy failed") while QEMU streams on
    control_lost: bool = False
    #: start_postcopy() was called; QEMU switches after ``switch_wait`` more ticks
    switch_requested: bool = False
    switch_wait: int = 0
    #: fail_job(): the stream breaks with this message
    failure: str | None = None


@dataclass
class FakeHost:
    up: bool = True
    memory_total_mib: int = 16384
    cpus: int = 8
    domains: dict[str, DomainInfo] = field(default_factory=dict)
    workloads: dict[str, FakeWorkload] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    completed: dict[str, JobStats] = field(default_factory=dict)
    #: a broken post-copy's progress (remaining, processed, iteration, requests), to resume
    postcopy_left: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    #: each domain's new-page write faults (pages first dirtied in a pass), as KVM counts
    faults: dict[str, int] = field(default_factory=dict)


class FakeDriver:
    """Implements :class:`~orbit.virt.driver.HypervisorDriver` in memory."""

    def __init__(self, tick_s: float = 0.01) -> None:
        self.tick_s = tick_s
        #: like QEMU 10 / libvirt 11 after a link cut: when post-copy breaks, the
        #: destination keeps running "post-copy" (not failed), and refuses a resume until
        #: its end is paused too (abort_job(postcopy=True) on the destination)
        self.destination_misses_breaks = False
        #: ticks between start_postcopy() and QEMU's switch (QEMU switches at its next
        #: iteration boundary, which a slow or stuck stream may take seconds to reach)
        self.postcopy_switch_delay_ticks = 0
        #: refuse this many resumes of a broken post-copy (as libvirt does while one
        #: daemon still holds the broken job), then accept
        self.resume_refusals = 0
        #: hosts whose daemon crashes when asked to take a post-copy resume, and why
        #: (libvirt 11.2 and later); resume_defect() says so
        self.resume_defects: dict[str, str] = {}
        self.hosts: dict[str, FakeHost] = {}
        self.calls: list[str] = []
        #: seconds before a started dirty-rate measurement has its result
        self.dirty_rate_delay_s = 0.0
        #: new_page_faults() reports the pages first dirtied in each pass (as KVM does when
        #: its dirty log write-protects memory); False: None, as TCG
        self.report_new_page_faults = False
        self._dirty_rates: dict[tuple[str, str], tuple[float, DirtyRate]] = {}
        self._lock = threading.Lock()
        self._watchers: dict[tuple[str, str], list[EventCallback]] = {}

    # -- set-up for tests ----------------------------------------------------------------

    def add_host(self, uri: str) -> FakeHost:
        return self.hosts.setdefault(uri, FakeHost())

    def add_domain(
        self,
        uri: str,
        name: str,
        *,
        state: DomainState = DomainState.RUNNING,
        workload: FakeWorkload | None = None,
    ) -> None:
        host = self.add_host(uri)
        wl = workload or FakeWorkload()
        host.domains[name] = DomainInfo(
            name=name,
            uuid=str(uuid.uuid4()),
            state=state,
            reason="",
            memory_mib=wl.memory_bytes // MIB,
            vcpus=1,
            persistent=True,
        )
        host.workloads[name] = wl

    def set_bandwidth(self, bytes_per_tick: int) -> int:
        """Every domain's migrations send ``bytes_per_tick`` a tick from now on, passes
        under way included; returns the previous figure (of the first domain found)."""
        previous: int | None = None
        with self._lock:
            for host in self.hosts.values():
                for wl in host.workloads.values():  # a migrated domain's is on both hosts
                    previous = wl.bandwidth_bytes if previous is None else previous
                    wl.bandwidth_bytes = bytes_per_tick
        return bytes_per_tick if previous is None else previous

    def break_control(self, uri: str, name: str) -> None:
        """The migration's libvirt connection breaks (a keepalive timeout) in post-copy:
        the call fails and both sides say "post-copy failed", but the stream goes on and
        the job completes by itself (libvirt 11 after a link cut or a daemon restart)."""
        self._job(uri, name).control_lost = True

    def fail_job(self, uri: str, name: str, message: str) -> None:
        """The migration's stream breaks (libvirt's keepalive gave up on the destination):
        in pre-copy the job fails and the VM runs on the source; in post-copy it pauses
        with both sides in "post-copy failed"."""
        self._job(uri, name).failure = message

    def _host(self, uri: str) -> FakeHost:
        host = self.hosts.get(uri)
        if host is None or not host.up:
            raise HostUnreachable(f"host {uri} does not answer")
        return host

    def _dom(self, uri: str, name: str) -> DomainInfo:
        dom = self._host(uri).domains.get(name)
        if dom is None:
            raise DomainNotFound(f"looking up domain {name} on {uri}: no such domain")
        return dom

    # -- the driver interface ------------------------------------------------------------

    def ping(self, uri: str) -> None:
        self._host(uri)

    def host_info(self, uri: str) -> HostInfo:
        host = self._host(uri)
        used = sum(d.memory_mib for d in host.domains.values())
        return HostInfo(host.memory_total_mib, host.memory_total_mib - used, host.cpus)

    def list_domains(self, uri: str) -> list[DomainInfo]:
        return list(self._host(uri).domains.values())

    def domain_info(self, uri: str, name: str) -> DomainInfo:
        return self._dom(uri, name)

    def set_owner(self, uri: str, name: str, owner: Owner | None) -> None:
        self.calls.append(f"set_owner {name} {owner.project_name if owner else None}")
        host = self._host(uri)
        host.domains[name] = replace(self._dom(uri, name), owner=owner)

    def migrate(self, uri: str, name: str, params: MigrationParams) -> None:
        self.calls.append(f"migrate {name} post_copy={params.post_copy}")
        src = self._host(uri)
        dst = self._host(params.dst_uri)
        dom = self._dom(uri, name)
        wl = src.workloads[name]
        job = _Job(JobStats(active=True, memory_total_bytes=wl.memory_bytes, iteration=1))
        remaining, processed, iteration, requests = wl.memory_bytes, 0, 1, 0
        if params.postcopy_resume:
            left = src.postcopy_left.get(name)
            if left is None or dom.reason != "postcopy-failed":
                raise MigrationFailed(f"migrating {name}: domain is not in post-copy failed state")
            if self.resume_refusals > 0:
                self.resume_refusals -= 1
                raise MigrationFailed(
                    f"migrating {name}: Requested operation is not valid: "
                    "the migration job is not yet ready to be resumed"
                )
            theirs = dst.domains.get(name)
            if theirs is not None and theirs.reason == "postcopy":
                raise MigrationFailed(
                    f"migrating {name}: operation failed: QEMU reports migration is still running"
                )
            if params.dst_uri in self.resume_defects:  # the destination's daemon dies
                dst.up = False
                raise MigrationFailed(
                    f"migrating {name}: End of file while reading data: Input/output error"
                )
            remaining, processed, iteration, requests = left
            job.postcopy = True
        with self._lock:
            src.jobs[name] = job
        lost = threading.Event()  # the call failed; the stream goes on in the background
        failure: list[BaseException] = []

        def stream() -> None:
            try:
                progress = (remaining, processed, iteration, requests)
                self._stream(uri, name, params, job, progress, lost)
            except BaseException as err:
                failure.append(err)
            finally:
                lost.set()

        thread = threading.Thread(target=stream, name=f"fake-stream-{name}", daemon=True)
        thread.start()
        lost.wait()
        if failure:
            raise failure[0]
        if job.control_lost:
            raise MigrationFailed(f"migrating {name}: internal error: client socket is closed")

    def _stream(
        self,
        uri: str,
        name: str,
        params: MigrationParams,
        job: _Job,
        progress: tuple[int, int, int, int],
        lost: threading.Event,
    ) -> None:
        """Run the job's stream to its end (raise if it fails); set ``lost`` when the
        control connection breaks (the stream goes on)."""
        src, dst = self._host(uri), self._host(params.dst_uri)
        dom = self._dom(uri, name)
        wl = src.workloads[name]
        remaining, processed, iteration, requests = progress
        dirtied_this_pass, started = 0, time.monotonic()
        try:
            while True:
                time.sleep(self.tick_s)
                if job.control_lost and job.postcopy and not lost.is_set():
                    with self._lock:
                        src.domains[name] = replace(
                            dom, state=DomainState.PAUSED, reason="postcopy-failed"
                        )
                        dst.domains[name] = replace(
                            dom, state=DomainState.RUNNING, reason="postcopy-failed"
                        )
                    lost.set()
                if job.aborted:
                    raise MigrationFailed(f"migrating {name}: operation aborted: job cancelled")
                if job.switch_requested and not job.postcopy:
                    job.postcopy = job.switch_wait <= 0
                    job.switch_wait -= 1
                if job.postcopy and src.domains[name].reason == "":
                    with self._lock:  # like libvirt: the source pauses for post-copy
                        src.domains[name] = replace(
                            src.domains[name], state=DomainState.PAUSED, reason="postcopy"
                        )
                if job.failure is not None and not job.postcopy:
                    raise MigrationFailed(f"migrating {name}: {job.failure}")
                if job.pause_postcopy or job.failure is not None:
                    with self._lock:
                        src.postcopy_left[name] = (remaining, processed, iteration, requests)
                        src.domains[name] = replace(
                            dom, state=DomainState.PAUSED, reason="postcopy-failed"
                        )
                        dst.domains[name] = replace(
                            dom,
                            state=DomainState.RUNNING,
                            reason=(
                                "postcopy" if self.destination_misses_breaks else "postcopy-failed"
                            ),
                        )
                    raise MigrationFailed(f"migrating {name}: job failed in post-copy phase")
                # a destination that does not answer receives nothing: the job stalls
                sent = min(wl.bandwidth_bytes, remaining) if dst.up else 0
                processed += sent
                remaining -= sent
                if job.postcopy:
                    requests += 1
                    if remaining == 0:
                        break
                else:
                    before = dirtied_this_pass
                    cap = wl.memory_bytes if wl.wss_bytes is None else wl.wss_bytes
                    dirtied_this_pass = min(cap, dirtied_this_pass + wl.dirty_bytes)
                    new_pages = max(0, dirtied_this_pass - before) // PAGE_BYTES
                    src.faults[name] = src.faults.get(name, 0) + new_pages
                    if src.domains[name].state is DomainState.PAUSED:
                        dirtied_this_pass = 0
                    if remaining == 0:
                        if dirtied_this_pass <= wl.bandwidth_bytes:
                            break  # the last dirty pages fit in the downtime
                        iteration += 1
                        remaining, dirtied_this_pass = dirtied_this_pass, 0
                        self._notify(uri, name, EVENT_ITERATION)
                job.stats = replace(
                    job.stats,
                    time_elapsed_ms=int((time.monotonic() - started) * 1000),
                    memory_processed_bytes=processed,
                    memory_remaining_bytes=remaining,
                    dirty_rate_bytes_s=int(wl.dirty_bytes / self.tick_s) if iteration > 1 else 0,
                    bandwidth_bytes_s=int(wl.bandwidth_bytes / self.tick_s),
                    iteration=iteration,
                    postcopy_requests=requests,
                )
        finally:
            with self._lock:
                src.jobs.pop(name, None)
        final = replace(
            job.stats,
            active=False,
            downtime_ms=int(self.tick_s * 1000),
            memory_processed_bytes=processed,
            memory_remaining_bytes=0,
            iteration=iteration,
            postcopy_requests=requests,
        )
        self._notify(uri, name, EVENT_JOB_COMPLETED, final)
        with self._lock:
            # the destination takes the source's state: paused if it was paused to converge
            moved = src.domains.pop(name)
            if moved.reason in ("postcopy", "postcopy-failed"):  # post-copy: it runs on
                moved = replace(moved, state=DomainState.RUNNING, reason="migrated")
            dst.domains[name] = moved
            src.postcopy_left.pop(name, None)
            dst.workloads[name] = wl
            if not job.postcopy:  # like libvirt: no completed stats on the destination
                dst.completed[name] = final

    def job_stats(self, uri: str, name: str, *, completed: bool = False) -> JobStats:
        host = self._host(uri)
        self._dom(uri, name)
        if completed:
            return host.completed.get(name, JobStats(active=False))
        job = host.jobs.get(name)
        return job.stats if job else JobStats(active=False)

    def measure_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> DirtyRate:
        """The workload's dirty bytes per tick, per second; refused during a migration."""
        self.calls.append(f"measure_dirty_rate {name}")
        host = self._host(uri)
        dom = self._dom(uri, name)
        if name in host.jobs:
            raise HypervisorError(f"cannot measure the dirty rate of {name}: a job is running")
        if dom.state is not DomainState.RUNNING:
            raise HypervisorError(f"cannot measure the dirty rate of {name}: it is not running")
        workload = host.workloads.get(name, FakeWorkload())
        return DirtyRate(workload.measured_rate(self.tick_s, period_s), "fake", float(period_s))

    def start_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> None:
        """As libvirt: refused during a migration; the result is ready after
        ``dirty_rate_delay_s`` real seconds, and readable while a migration runs."""
        self.calls.append(f"start_dirty_rate {name}")
        host = self._host(uri)
        dom = self._dom(uri, name)
        if name in host.jobs:
            raise HypervisorError(f"cannot measure the dirty rate of {name}: a job is running")
        if dom.state is not DomainState.RUNNING:
            raise HypervisorError(f"cannot measure the dirty rate of {name}: it is not running")
        workload = host.workloads.get(name, FakeWorkload())
        rate = DirtyRate(workload.measured_rate(self.tick_s, period_s), "fake", float(period_s))
        with self._lock:
            self._dirty_rates[(uri, name)] = (time.monotonic() + self.dirty_rate_delay_s, rate)

    def read_dirty_rate(self, uri: str, name: str) -> DirtyRate | None:
        self._dom(uri, name)
        with self._lock:
            entry = self._dirty_rates.get((uri, name))
        if entry is None or time.monotonic() < entry[0]:
            return None
        return entry[1]

    def new_page_faults(self, uri: str, name: str) -> int | None:
        """The pages first dirtied in each pass so far, if ``report_new_page_faults``."""
        self._dom(uri, name)
        if not self.report_new_page_faults:
            return None
        return self._host(uri).faults.get(name, 0)

    def resident_bytes(self, uri: str, name: str) -> int:
        """All of the guest's RAM plus what a QEMU process holds of its own."""
        self._dom(uri, name)
        return self._host(uri).workloads.get(name, FakeWorkload()).memory_bytes + 40 * MIB

    def _job(self, uri: str, name: str) -> _Job:
        job = self._host(uri).jobs.get(name)
        if job is None:
            raise HypervisorError(f"domain {name} on {uri} has no migration job")
        return job

    def start_postcopy(self, uri: str, name: str) -> None:
        self.calls.append(f"start_postcopy {name}")
        job = self._job(uri, name)
        job.switch_requested = True
        job.switch_wait = self.postcopy_switch_delay_ticks
        job.postcopy = job.postcopy or self.postcopy_switch_delay_ticks == 0

    def set_max_downtime(self, uri: str, name: str, downtime_ms: int) -> None:
        self.calls.append(f"set_max_downtime {name} {downtime_ms}")
        self._job(uri, name)

    def abort_job(self, uri: str, name: str, *, postcopy: bool = False) -> None:
        self.calls.append(f"abort_job {name} postcopy={postcopy}")
        host = self._host(uri)
        dom = host.domains.get(name)
        if postcopy and name not in host.jobs and dom is not None and dom.reason == "postcopy":
            # the incoming end of a post-copy (libvirt pauses QEMU's side there too)
            host.domains[name] = replace(dom, reason="postcopy-failed")
            return
        job = self._job(uri, name)
        if postcopy:
            if not job.postcopy:
                raise HypervisorError(f"domain {name} is not in post-copy")
            job.pause_postcopy = True
        else:
            job.aborted = True

    def suspend(self, uri: str, name: str) -> None:
        self.calls.append(f"suspend {name}")
        host = self._host(uri)
        host.domains[name] = replace(self._dom(uri, name), state=DomainState.PAUSED, reason="user")

    def resume_defect(self, uri: str) -> str | None:
        self._host(uri)
        return self.resume_defects.get(uri)

    def resume(self, uri: str, name: str) -> None:
        self.calls.append(f"resume {name}")
        host = self._host(uri)
        host.domains[name] = replace(self._dom(uri, name), state=DomainState.RUNNING, reason="")

    def make_persistent(self, uri: str, name: str) -> None:
        host = self._host(uri)
        host.domains[name] = replace(self._dom(uri, name), persistent=True)

    def undefine_if_stopped(self, uri: str, name: str) -> bool:
        if self._dom(uri, name).state is not DomainState.SHUTOFF:
            return False
        del self._host(uri).domains[name]
        return True

    def watch(self, uri: str, name: str, callback: EventCallback) -> Callable[[], None]:
        self._dom(uri, name)
        self._watchers.setdefault((uri, name), []).append(callback)

        def unsubscribe() -> None:
            self._watchers.get((uri, name), []).remove(callback)

        return unsubscribe

    def _notify(self, uri: str, name: str, event: str, stats: JobStats | None = None) -> None:
        for callback in list(self._watchers.get((uri, name), [])):
            callback(event, stats)
