"""The migration engine: runs one live migration end to end on a hypervisor driver.

One :class:`Migration` is one attempt ("migrations are like pods: one shot"); a retry is a
new Migration. :meth:`Migration.run` blocks until the migration is over and returns a
:class:`MigrationResult`; :meth:`Migration.force_complete` and :meth:`Migration.abort` may
be called from other threads meanwhile.

How it runs:

1. *Preflight* (phase ``preparing``): the domain runs on the source, the destination is
   another host and answers. A failure here raises a specific error and changes nothing.
   Policy ``auto`` then starts measuring the guest's dirty rate, which goes on beside the
   first pass; once measured (about a second in), the plan is made
   (:meth:`Migration._make_plan`, orbit/migration/predict.py).
2. *Start*: ``migrate`` (peer-to-peer, ``LIVE|PERSIST_DEST|UNDEFINE_SOURCE``, plus
   ``POSTCOPY`` when permitted, ``NON_SHARED_DISK`` for block migration) in a thread of its
   own, since the call blocks until the migration ends.
3. *Monitor*: every :data:`SAMPLE_INTERVAL_S` (sooner when a domain event arrives) read the
   job statistics into a :class:`~orbit.migration.model.Sample`, ask the pure
   :func:`~orbit.migration.control.next_step` what to do (operator requests first, then
   the post-copy stall rule or the policy :func:`~orbit.migration.policy.decide`), and do
   it: switch to post-copy, abort pre-copy, pause the VM or a stalled post-copy. The engine
   decides nothing itself: it executes and records (:meth:`Migration._execute`).
4. *Finish*: ``completed`` with the destination's final statistics (downtime, bytes), or
   ``cancelled`` (operator abort) or ``failed`` (error, or pre-copy's completion timeout)
   with the VM still running on the source, or
   ``postcopy-paused`` when a post-copy migration broke.

Rules that protect the VM, enforced here:

- A migration in post-copy is never aborted: the VM's memory is split between the hosts,
  and aborting would lose the pages not yet copied. :meth:`Migration.abort` refuses it.
- The engine never destroys a domain on either side, whatever fails.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from orbit.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    InvalidMigration,
    JobNeverStarted,
    MigrationFailed,
    MigrationRefused,
    OrbitError,
)
from orbit.migration.control import (
    OPERATOR_RULES,
    Progress,
    Requests,
    failed_resumes,
    job_outcome,
    next_step,
    resume_step,
    settled,
)
from orbit.migration.model import MIB, Action, Decision, MigrationSettings, Policy, Sample
from orbit.migration.phase import Phase, transition
from orbit.migration.policy import (
    first_pass,
    outcome_from_hosts,
    resume_backoff_s,
    transfer_rate,
)
from orbit.migration.predict import (
    DEFAULT_FINISH_S,
    DEFAULT_LINK_BYTES_S,
    DEFAULT_START_S,
    MEASURE_PERIOD_S,
    Facts,
    Link,
    Plan,
    guest_bytes,
    make_plan,
    new_pages,
)
from orbit.virt.driver import (
    EVENT_JOB_COMPLETED,
    EVENT_POSTCOPY_FAILED,
    DirtyRate,
    DomainInfo,
    DomainState,
    HypervisorDriver,
    JobStats,
    MigrationParams,
)

log = logging.getLogger(__name__)

#: How often the engine samples job statistics (domain events wake it sooner).
SAMPLE_INTERVAL_S = 0.25
#: Back-off between resume attempts that libvirt refused or that broke again: 1 s, 2 s,
#: 4 s, ... at most 30 s. The first attempt is made as soon as both hosts answer.
RESUME_BACKOFF_FIRST_S = 1.0
RESUME_BACKOFF_MAX_S = 30.0
#: While a host does not answer, it is probed this often (a TCP connect, then one call).
HOST_POLL_S = 0.5
#: probes of the destination before a migration starts: one lost SYN on a lossy link (and
#: its retransmission 1 s later) must not refuse the migration
PREFLIGHT_PROBES = 3
#: A dirty-rate measurement not there this long after its period never will be.
MEASURE_GRACE_S = 2.0
#: How long the engine waits for the job-completed event (final statistics) after the end.
FINAL_STATS_TIMEOUT_S = 2.0
#: auto: write-fault reads in a row that say nothing before the counting ends
FAULT_MISSES = 3


@dataclass(frozen=True)
class MigrationRequest:
    """What to migrate where, and how (settings are already resolved and frozen)."""

    domain: str
    src_uri: str
    dst_uri: str
    settings: MigrationSettings
    #: where the migration stream goes, e.g. 'tcp://198.18.0.2'; None lets libvirt choose
    dst_migration_uri: str | None = None
    #: the link's expected transfer rate (history or configuration), for auto's plan
    link: Link | None = None
    #: (bytes dirtied, seconds) in pass 1 of the guest's previous migration, for auto's plan
    previous_pass1: tuple[float, float] | None = None


@dataclass(frozen=True)
class _Measuring:
    """auto's dirty-rate measurement, started just before the migration."""

    ram: int
    #: what the guest has written (its first pass), from the resident memory
    written: int
    link: Link
    #: on the migration's clock
    started_s: float


@dataclass
class _Sent:
    """What the engine has sent to the migration job (guarded by ``Migration._lock``)."""

    #: post-copy asked for (or being asked for): from here on abort() refuses
    switching: bool = False
    #: why post-copy was asked for; the phase follows once QEMU has switched
    switch_reason: str = ""
    #: why the job is being aborted (the operator's or the policy's reason)
    abort: str | None = None
    #: the policy aborted (completion timeout, stall): failed, not cancelled
    abort_by_policy: bool = False
    #: the abort reached libvirt
    abort_sent: bool = False
    #: the engine paused the VM (force-complete without post-copy)
    paused_source: bool = False


@dataclass
class _Attempt:
    """One migration job: the first, a post-copy resume, or one followed after a restart."""

    #: index in ``result.samples`` of this job's first sample
    first_sample: int
    #: the post-copy stall was acted on (said once per attempt)
    stall_handled: bool = False
    #: the job's final statistics, from the job-completed event
    final_stats: JobStats | None = None
    completed: threading.Event = field(default_factory=threading.Event)
    #: a followed job (not started here): the source has no job any more
    over: bool = False


@dataclass(frozen=True)
class DecisionRecord:
    at_s: float
    action: Action
    reason: str
    #: 'policy' or 'operator'
    source: str = "policy"
    #: the policy's rule (Decision.rule); '' for the operator's and the engine's own
    rule: str = ""


@dataclass
class MigrationResult:
    """Everything a migration record keeps about one finished attempt."""

    domain: str
    src_uri: str
    dst_uri: str
    settings: MigrationSettings
    phase: Phase = Phase.QUEUED
    error: str | None = None
    started_at: float = 0.0  # wall clock (time.time()) when the job started
    total_s: float = 0.0
    downtime_ms: int | None = None
    memory_total_bytes: int = 0
    memory_bytes: int = 0  # memory sent
    disk_bytes: int = 0  # disk sent
    iterations: int = 0
    postcopy_requests: int = 0
    switch_at_s: float | None = None  # when post-copy started, since the job started
    resume_attempts: int = 0  # attempts to resume a broken post-copy
    phase_times: dict[str, float] = field(default_factory=dict)
    decisions: list[DecisionRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: auto's plan (strategy and prediction), None for other policies or if not measured
    plan: Plan | None = None
    #: bytes/s pre-copy achieved on the link (what the next plan between these hosts uses)
    transfer_rate_bytes_s: int | None = None
    #: (bytes the guest dirtied, seconds) in pass 1, once pass 2 started (for the next plan)
    pass1: tuple[float, float] | None = None

    @property
    def switched(self) -> bool:
        return self.switch_at_s is not None


class Waker:
    """Wakes one sampling thread early: :meth:`wait` returns after ``timeout_s`` or as soon
    as :meth:`set` was called (since the last wait), and consumes that call. One lock,
    held while nothing is pending: a tick's wait is one C call, where an Event's wait and
    clear cost a new lock and a Condition's bookkeeping (a sixth of the monitors'
    processor time with 50 migrations sampled at 4 Hz). A set() during a tick is kept for
    the next wait, not lost to a clear()."""

    def __init__(self) -> None:
        self._pending = threading.Lock()
        self._pending.acquire()  # held: nothing pending

    def wait(self, timeout_s: float) -> None:
        self._pending.acquire(timeout=timeout_s)

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already set: one wake-up is enough
            self._pending.release()


class MigrationListener:
    """Hooks for whoever records a migration (the conductor persists; tests collect)."""

    def on_phase(self, phase: Phase, at_s: float, reason: str) -> None:
        """The migration entered ``phase``."""

    def on_sample(self, sample: Sample) -> None:
        """A new progress sample was taken."""

    def on_decision(self, record: DecisionRecord) -> None:
        """The policy or the operator decided something."""

    def on_plan(self, plan: Plan) -> None:
        """auto chose its strategy (before the migration job starts)."""


class Migration:
    """One live-migration attempt of one domain; see the module docstring."""

    def __init__(
        self,
        driver: HypervisorDriver,
        request: MigrationRequest,
        *,
        listener: MigrationListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.driver = driver
        self.sample_interval_s = sample_interval_s
        self.request = request
        self.listener = listener or MigrationListener()
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = Waker()
        self._phase = Phase.QUEUED
        self._t0 = clock()
        #: what operators asked and the engine has not acted on yet (a value object)
        self._requests = Requests()
        #: what the engine has sent to the job
        self._sent = _Sent()
        #: the current job: the first, a resume, or one followed after a restart
        self._attempt = _Attempt(0)
        self._resume_now = threading.Event()
        self._stopping = threading.Event()
        self._paused_at: float | None = None  # elapsed s when post-copy last paused
        #: why the destination cannot take a post-copy resume (None: it can)
        self._resume_defect: str | None = None
        #: auto's dirty-rate measurement until it is read
        self._measuring: _Measuring | None = None
        #: auto: KVM's new-page write faults when the measurement began (None: not
        #: reported), and the counts read during pass 1 (elapsed s, count)
        self._fault_base: int | None = None
        self._fault_counts: list[tuple[float, int]] = []
        #: reads in a row that said nothing (failed, or a count that went down)
        self._fault_misses = 0
        #: the faults stopped being readable after they settled: what they said stands
        self._faults_kept = False
        self.result = MigrationResult(
            domain=request.domain,
            src_uri=request.src_uri,
            dst_uri=request.dst_uri,
            settings=request.settings,
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    def _elapsed(self) -> float:
        return self._clock() - self._t0

    def _set_phase(self, phase: Phase, reason: str = "") -> None:
        """Move to ``phase`` through the one transition table; callers hold no lock."""
        with self._lock:
            self._phase = transition(self._phase, phase)
        at = self._elapsed()
        if phase is Phase.POSTCOPY_PAUSED:
            self._paused_at = at
        self.result.phase = phase
        self.result.phase_times.setdefault(phase.value, round(at, 3))
        log.info(
            "migration phase domain=%s phase=%s elapsed_s=%.2f reason=%s",
            self.request.domain,
            phase.value,
            at,
            reason or "-",
        )
        self._tell(self.listener.on_phase, phase, at, reason)

    def _record(self, action: Action, reason: str, source: str = "policy", rule: str = "") -> None:
        record = DecisionRecord(round(self._elapsed(), 3), action, reason, source, rule)
        self.result.decisions.append(record)
        log.info(
            "migration decision domain=%s action=%s source=%s reason=%s",
            self.request.domain,
            action.value,
            source,
            reason,
        )
        self._tell(self.listener.on_decision, record)

    def _tell(self, call: Callable[..., None], *args: object) -> None:
        """Tell the listener (the record keeper); its failure never stops the migration's
        policy, timeouts and stall handling: it is logged, and the listener catches up."""
        try:
            call(*args)
        except Exception:
            log.exception("listener failed domain=%s", self.request.domain)

    # -- operator controls (any thread) --------------------------------------------------

    def abort(self, reason: str = "operator requested abort") -> None:
        """Abort a migration still in pre-copy; the VM keeps running on the source.

        Raises MigrationRefused in post-copy (the VM's memory is split between the hosts:
        aborting would lose it) and once the migration is over.
        """
        with self._lock:
            if self._phase.in_postcopy or self._sent.switching:
                raise MigrationRefused(
                    f"migration of {self.request.domain} is in post-copy: its memory is split "
                    "between source and destination, so it cannot be aborted; "
                    "force-complete it or let it finish"
                )
            if self._phase.is_final or self._phase is Phase.COMPLETING:
                raise MigrationRefused(
                    f"migration of {self.request.domain} is already {self._phase.value}"
                )
            self._requests = replace(self._requests, abort=reason)
        self._wake.set()

    def force_complete(self) -> str:
        """Finish now: switch to post-copy if permitted, else pause the VM so pre-copy ends.

        Returns what will be done; raises MigrationRefused when the migration is over.
        """
        with self._lock:
            if self._phase.is_final:
                raise MigrationRefused(
                    f"migration of {self.request.domain} is already {self._phase.value}"
                )
            if self._phase.in_postcopy:
                return "already in post-copy: it completes as the remaining pages arrive"
            if self._sent.switching:
                return "post-copy already asked for: QEMU switches at its next iteration"
            self._requests = replace(self._requests, force_complete=True)
        self._wake.set()
        if self.request.settings.post_copy:
            return "switching to post-copy"
        return "pausing the VM so that pre-copy completes (post-copy not permitted)"

    # -- running -------------------------------------------------------------------------

    def preflight(self) -> None:
        """Check the request against the hosts; raise a specific error, change nothing."""
        req = self.request
        if req.src_uri == req.dst_uri:
            raise InvalidMigration(
                f"destination is the source host ({req.src_uri}): choose another host"
            )
        info = self.driver.domain_info(req.src_uri, req.domain)  # DomainNotFound
        if info.state is not DomainState.RUNNING:
            raise InvalidMigration(
                f"domain {req.domain} is {info.state.value}"
                + (f" ({info.reason})" if info.reason else "")
                + " on the source: only a running VM can be live-migrated"
            )
        for probe in range(PREFLIGHT_PROBES):
            try:
                self.driver.ping(req.dst_uri)
                break
            except HostUnreachable:
                if probe == PREFLIGHT_PROBES - 1:
                    raise

    def run(self) -> MigrationResult:
        """Run the migration to its end; see the module docstring for the phases.

        Raises the preflight's error (phase ``failed``, nothing changed) when the request
        cannot start; every later failure is reported in the result, not raised.
        """
        req = self.request
        self._set_phase(Phase.PREPARING)
        try:
            self.preflight()
        except OrbitError as err:
            self.result.error = str(err)
            self._set_phase(Phase.FAILED, str(err))
            raise
        self._learn_resume_defect()
        try:
            unwatch = self.driver.watch(req.src_uri, req.domain, self._on_event)
        except HypervisorError as err:  # events only make the loop faster
            log.warning("no domain events domain=%s error=%s", req.domain, err)
            unwatch = None

        outcome: list[BaseException | None] = []
        thread = threading.Thread(
            target=self._migrate, args=(outcome,), name=f"migrate-{req.domain}", daemon=True
        )
        self._t0 = self._clock()
        self.result.started_at = time.time()
        if req.settings.post_copy and req.settings.policy is Policy.AUTO:
            self._measuring = self._start_measuring()
        thread.start()
        self._set_phase(Phase.RUNNING_PRECOPY, f"policy {req.settings.policy.value}")
        try:
            self._monitor(thread)
            thread.join()
            if self._measuring is not None:
                self._measuring = None
                self._no_plan(
                    f"the migration's job ended {self._elapsed():.1f} s in, before the "
                    "dirty rate was measured"
                )
            self._finish(outcome[0] if outcome else None, watching=unwatch is not None)
            self._recover(watching=unwatch is not None)
        finally:
            thread.join()
            if unwatch is not None:
                unwatch()
        return self.result

    def _start_measuring(self) -> _Measuring | None:
        """auto: start measuring the guest's dirty rate, just before the migration starts.

        libvirt cannot start a measurement while a migration job runs, but one started
        just before goes on beside the first pass: the plan (:meth:`_make_plan`) comes
        about a second in, and the measurement costs the migration nothing. None (auto
        then decides from pre-copy's own evidence) when the hypervisor cannot measure.
        """
        req = self.request
        link = req.link or Link(DEFAULT_LINK_BYTES_S, "assumed: no history, none configured")
        try:
            ram = self.driver.domain_info(req.src_uri, req.domain).memory_mib * MIB
            try:
                written = guest_bytes(self.driver.resident_bytes(req.src_uri, req.domain), ram)
            except HypervisorError as err:  # then assume it has written all its RAM
                log.warning("no resident memory domain=%s error=%s", req.domain, err)
                written = ram
            self._fault_base = self._read_faults()
            self.driver.start_dirty_rate(req.src_uri, req.domain, period_s=MEASURE_PERIOD_S)
        except HypervisorError as err:
            self._no_plan(f"the dirty rate could not be measured ({err})")
            return None
        return _Measuring(ram, written, link, self._elapsed())

    def _read_faults(self) -> int | None:
        """KVM's new-page write faults of the domain; None when not reported or unreadable
        (auto then does without them)."""
        try:
            return self.driver.new_page_faults(self.request.src_uri, self.request.domain)
        except HypervisorError as err:
            log.debug("no write faults domain=%s error=%s", self.request.domain, err)
            return None

    def _count_faults(self, stats: JobStats) -> None:
        """auto, during pass 1 of a planned migration: count KVM's write faults.

        A read that says nothing is skipped: libvirt leaves a vCPU's statistics out when it
        cannot query QEMU at that moment (a busy monitor), and a count that went down (a
        vCPU's reply missing) must not read as a guest that stopped dirtying new pages.
        After :data:`FAULT_MISSES` such reads in a row the counting ends: what the faults
        said once settled stands for the rest of pass 1; before that, the signal is
        dropped and the plan stands as made."""
        if self._fault_base is None or self._faults_kept:
            return
        planned = self._measuring is not None or self.result.plan is not None
        if not planned or stats.iteration > 1 or self._sent.switching or self._phase.in_postcopy:
            self._fault_base = None  # pass 1 is over: nothing more to learn
            return
        count = self._read_faults()
        last = self._fault_counts[-1][1] if self._fault_counts else self._fault_base
        if count is not None and count >= last:
            self._fault_misses = 0
            self._fault_counts.append((self._elapsed(), count))  # when it was read
            return
        self._fault_misses += 1
        if self._fault_misses < FAULT_MISSES:
            return
        seen = new_pages(self._fault_base, self._fault_counts)
        settled = seen is not None and seen.settled
        log.info(
            "write faults unreadable domain=%s reads_in_a_row=%d seen_s=%.2f evidence=%s",
            self.request.domain,
            self._fault_misses,
            seen.seen_s if seen is not None else 0.0,
            "kept (settled)" if settled else "dropped (not settled)",
        )
        if settled:
            self._faults_kept = True
        else:
            self._fault_base = None

    def _no_plan(self, why: str) -> None:
        self._record(
            Action.PLAN, f"no plan: {why}; deciding from pre-copy's own evidence", rule="plan"
        )

    def _poll_measurement(self, now: float) -> None:
        """Read the measurement :meth:`_start_measuring` started; plan once it is there."""
        m = self._measuring
        if m is None:
            return
        req = self.request
        if self._sent.switching or self._phase is not Phase.RUNNING_PRECOPY:
            self._measuring = None
            self._no_plan(f"{self._phase.value} {now:.1f} s in, before the dirty rate was measured")
            return
        try:
            rate = self.driver.read_dirty_rate(req.src_uri, req.domain)
        except DomainNotFound:
            return  # the migration is ending: the domain left the source
        except HypervisorError as err:
            self._measuring = None
            self._no_plan(f"the dirty rate could not be read ({err})")
            return
        if rate is None:
            if now - m.started_s > MEASURE_PERIOD_S + MEASURE_GRACE_S:
                self._measuring = None
                self._no_plan(
                    f"the dirty rate was not measured within "
                    f"{MEASURE_PERIOD_S + MEASURE_GRACE_S:.0f} s"
                )
            return
        self._measuring = None
        self.result.plan = self._make_plan(m, rate, now)

    def _make_plan(self, m: _Measuring, rate: DirtyRate, now: float) -> Plan:
        """The plan from the measured dirty rate, made ``now`` (predict.py): from what the
        first pass has left and how long it has run, if it has started."""
        s = self.request.settings
        pass1 = [x for x in self.result.samples if x.iteration <= 1]
        sent = 0
        if self.result.samples and not pass1:  # pass 1 is over: plan what is left
            left, ran = self.result.samples[-1].memory_remaining_bytes, 0.0
        elif pass1:
            sent = pass1[-1].memory_processed_bytes
            left, ran = max(0, m.written - sent), max(0.0, now - pass1[0].elapsed_s)
        else:  # libvirt is still preparing the destination
            left, ran = m.written, 0.0
        facts = Facts(
            ram_bytes=m.ram,
            dirty_rate_bytes_s=float(rate.bytes_s),
            bandwidth_bytes_s=m.link.bytes_s,
            downtime_limit_ms=s.downtime_limit_ms,
            first_pass_bytes=left,
            first_pass_elapsed_s=ran,
            first_pass_sent_bytes=sent,
            start_s=now if self.result.samples else max(now, DEFAULT_START_S),
            finish_s=DEFAULT_FINISH_S,
        )
        plan = make_plan(
            facts,
            link_source=m.link.source,
            dirty_rate_mode=rate.mode,
            timeout_s=s.completion_timeout_s,
            postcopy_weight=s.postcopy_weight,
            made_at_s=now,
            previous_pass1=self.request.previous_pass1,
        )
        self._record(Action.PLAN, plan.reason(), rule="plan")
        self._tell(self.listener.on_plan, plan)
        return plan

    # -- recovery of a broken post-copy ---------------------------------------------------

    def resume_now(self) -> str:
        """Operator: resume a paused post-copy now instead of at the next back-off step."""
        with self._lock:
            if self._phase is not Phase.POSTCOPY_PAUSED:
                raise MigrationRefused(
                    f"migration of {self.request.domain} is {self._phase.value}, "
                    "not postcopy-paused: there is nothing to resume"
                )
        self._resume_now.set()
        return "resuming post-copy now"

    def stop(self) -> None:
        """Stop retrying (the process is shutting down); the job stays as it is in libvirt."""
        self._stopping.set()
        self._resume_now.set()

    def _recover(self, *, watching: bool) -> None:
        """Resume a paused post-copy until it completes, as soon as both hosts answer.

        Each attempt first waits for both hosts (probed every :data:`HOST_POLL_S`: a resume
        towards a host that is still cut off would hang in libvirt instead of failing), then
        pauses the destination's end if it did not notice the break, then resumes. Attempts
        that libvirt refuses, or that break before moving a byte, back off 1, 2, 4 ... 30 s;
        one that ran until a new fault broke it does not. Every attempt is a decision in
        the record. Runs until success, ``stop()``, or ``auto_resume`` off.
        """
        req = self.request
        attempt = failed = 0
        while self._phase is Phase.POSTCOPY_PAUSED and req.settings.auto_resume:
            if self._resume_defect is not None:
                if failed and self._stopping.wait(HOST_POLL_S):
                    return
                self._follow_stream()
                failed += 1  # settled postcopy-paused again: look again in a while
                continue
            if failed:
                delay_s = resume_backoff_s(failed - 1, RESUME_BACKOFF_FIRST_S, RESUME_BACKOFF_MAX_S)
                operator = self._resume_now.wait(delay_s)
            else:
                operator = self._resume_now.is_set()
            self._resume_now.clear()
            attempt += 1
            self.result.resume_attempts = attempt
            who = "operator" if operator else "engine"
            if not self._wait_for_hosts(attempt, who):
                return  # stopping
            if self._learn_resume_defect() is not None:
                continue  # followed instead (above)
            paused_s = self._elapsed() - (self._paused_at or self._elapsed())
            src, dst, error = self._where()
            where, _why = self._outcome(src, dst, error)
            step = resume_step(where, attempt=attempt, paused_s=paused_s)
            if step.action is not Action.RESUME_POSTCOPY:
                self._record(step.action, step.reason, "engine", step.rule)
                self._settle_after_job()
                continue
            if dst is not None and dst.reason == "postcopy":
                self._pause_destination()
            self._record(step.action, step.reason, who, step.rule)
            self._attempt = _Attempt(len(self.result.samples))
            outcome: list[BaseException | None] = []
            thread = threading.Thread(
                target=self._migrate, args=(outcome, True), name=f"resume-{req.domain}",
                daemon=True,
            )  # fmt: skip
            self._set_phase(Phase.RUNNING_POSTCOPY, f"resume attempt {attempt}")
            thread.start()
            self._monitor(thread)
            thread.join()
            self._finish(outcome[0] if outcome else None, watching=watching)
            failed = failed_resumes(
                failed,
                self._phase is Phase.POSTCOPY_PAUSED,
                self.result.samples[self._attempt.first_sample :],
            )

    def _learn_resume_defect(self) -> str | None:
        """Ask the destination whether it can take a post-copy resume (kept if it does not
        answer); a defect is logged once."""
        try:
            defect = self.driver.resume_defect(self.request.dst_uri)
        except HypervisorError:
            return self._resume_defect
        if defect is not None and self._resume_defect is None:
            log.warning("post-copy cannot be resumed domain=%s why=%s", self.request.domain, defect)
        self._resume_defect = defect
        return defect

    def _follow_stream(self) -> None:
        """The destination cannot take a resume: follow QEMU's own stream to its end.

        A broken libvirt connection leaves QEMU's migration stream running; after a link
        cut, TCP delivers it again once a retransmission gets through (its back-off doubles,
        up to 2 min), and libvirt finishes the job by itself when QEMU completes. Never
        paused (it could not go on) and never resumed (it would crash the destination's
        daemon). Ends when the source has no job any more; the outcome is then settled.
        """
        self._record(
            Action.CONTINUE,
            f"not resuming: {self._resume_defect}; QEMU's own stream goes on once the link "
            "is back and TCP gets through: following it to its end",
            "engine",
            rule="follow-stream",
        )
        self._set_phase(Phase.RUNNING_POSTCOPY, "following QEMU's stream (no resume possible)")
        self._attempt = _Attempt(len(self.result.samples))
        self._monitor(None, follow_failed=True)
        self._settle_after_job()

    def _wait_for_hosts(self, attempt: int, who: str) -> bool:
        """Return once both hosts answer (False if stopping), probing every HOST_POLL_S.

        Records one decision when the attempt has to wait and says how long it waited.
        """
        req = self.request
        waiting_since: float | None = None
        while not self._stopping.is_set():
            try:
                self.driver.ping(req.dst_uri)
                self.driver.ping(req.src_uri)
            except HypervisorError as err:
                if waiting_since is None:
                    waiting_since = self._elapsed()
                    self._record(
                        Action.RESUME_POSTCOPY,
                        f"attempt {attempt} skipped until both hosts answer: {err}; "
                        f"probing every {HOST_POLL_S:g} s",
                        who,
                    )
                self._stopping.wait(HOST_POLL_S)
                continue
            if waiting_since is not None:
                log.info(
                    "hosts answer again domain=%s waited_s=%.1f",
                    req.domain,
                    self._elapsed() - waiting_since,
                )
            return True
        return False

    def _pause_destination(self) -> None:
        """Pause the destination's end of a broken post-copy that it has not noticed.

        After a link cut, the source knows its stream broke, but the destination's QEMU may
        still wait on a TCP stream that will never deliver (QEMU 10 / libvirt 11 do):
        libvirt then refuses the resume ("migration is still running"). Pausing that end
        too (libvirt's post-copy abort on the incoming side) lets the resume start.
        """
        req = self.request
        try:
            self.driver.abort_job(req.dst_uri, req.domain, postcopy=True)
            done = "paused its end too, so that the resume can start"
        except HypervisorError as err:
            done = f"pausing its end failed ({err}); resuming anyway"
        self._record(
            Action.PAUSE_POSTCOPY,
            f"the destination still ran post-copy on a stream the source gave up: {done}",
            "engine",
            rule="pause-destination",
        )

    def adopt(self, phase: Phase, elapsed_s: float) -> MigrationResult:
        """Take over a migration job that an earlier process started (after a restart).

        ``phase`` is what the record says, ``elapsed_s`` how long ago the job started. The
        engine samples, applies the policy and operator requests as :meth:`run` does; when
        the source has no job any more, where the VM runs decides the outcome: on the
        destination only, completed; running on the source, failed (or cancelled after an
        abort); split with post-copy failed, postcopy-paused; anything else, error.
        """
        req = self.request
        self._t0 = self._clock() - elapsed_s
        self.result.started_at = time.time() - elapsed_s
        with self._lock:
            self._phase = phase
        if phase is Phase.QUEUED:
            self._set_phase(Phase.PREPARING)
        if phase in (Phase.QUEUED, Phase.PREPARING):
            self._set_phase(Phase.RUNNING_PRECOPY, "adopted after a restart")
        self._learn_resume_defect()
        if self._phase is Phase.RUNNING_PRECOPY and self._job_never_started():
            raise JobNeverStarted(
                f"the migration of {req.domain} had not reached {req.src_uri} when its "
                "orbit-server instance stopped: nothing moved, it starts afresh"
            )
        if self._phase is Phase.RUNNING_PRECOPY and self._source_in_postcopy():
            # the earlier process asked for post-copy but died before recording it
            self.result.switch_at_s = round(self._elapsed(), 3)
            self._set_phase(Phase.RUNNING_POSTCOPY, "adopted: the source is in post-copy")
        try:
            unwatch = self.driver.watch(req.src_uri, req.domain, self._on_event)
        except HypervisorError:
            unwatch = None
        try:
            if phase is not Phase.POSTCOPY_PAUSED:
                self._follow_job()
            self._settle_after_job()
            self._recover(watching=unwatch is not None)
        finally:
            if unwatch is not None:
                unwatch()
        return self.result

    def _follow_job(self) -> None:
        """Monitor a job this engine did not start until it ends or its post-copy breaks."""
        self._attempt.over = False
        self._monitor(None)

    def _settle_after_job(self) -> None:
        """Record where the VM is once a followed job is over (follow it again if a
        resumed post-copy is running)."""
        while True:
            self.result.total_s = round(self._elapsed(), 3)
            self._counters_from_last_sample()
            outcome, why = self._outcome_after_adoption()
            if outcome is Phase.RUNNING_POSTCOPY:  # e.g. a resume started before a restart
                self._set_phase(Phase.RUNNING_POSTCOPY, why or "")
                self._attempt = _Attempt(len(self.result.samples))
                self._follow_job()
                continue
            outcome, why = settled(self._phase, outcome, why, self.request.domain)
            self.result.error = why
            if outcome is Phase.COMPLETED:
                self._collect_final_stats(wait_for_event=False)
                self._tidy_after_move()
            self._set_phase(outcome, why or "")
            return

    def _source_postcopy_failed(self) -> bool:
        if not self._phase.in_postcopy:
            return False
        try:
            info = self.driver.domain_info(self.request.src_uri, self.request.domain)
        except HypervisorError:
            return False
        return info.postcopy_failed

    def _source_stopped(self) -> bool:
        """The source's copy is shut off (an ended migration leaves it so) or gone."""
        try:
            info = self.driver.domain_info(self.request.src_uri, self.request.domain)
        except DomainNotFound:
            return True
        except HypervisorError:
            return False
        return info.state is DomainState.SHUTOFF

    def _job_never_started(self) -> bool:
        """No migration job on the source, the VM runs there untouched, and the destination
        has no copy: the earlier process died before (or as) it asked libvirt. A lease runs
        out long after such a call would have reached libvirt, so none is on its way."""
        src, dst, error = self._where()
        if error is not None or src is None or dst is not None:
            return False
        if src.state is not DomainState.RUNNING or src.reason in ("postcopy", "postcopy-failed"):
            return False
        try:
            return not self.driver.job_stats(self.request.src_uri, self.request.domain).active
        except (DomainNotFound, HostUnreachable):
            return False
        except HypervisorError:
            return True  # no job to report on a running domain

    def _source_in_postcopy(self) -> bool:
        try:
            info = self.driver.domain_info(self.request.src_uri, self.request.domain)
        except HypervisorError:
            return False
        return info.reason in ("postcopy", "postcopy-failed")

    def _tidy_after_move(self) -> None:
        """What PERSIST_DEST and UNDEFINE_SOURCE would have done, had libvirt finished the job.

        Only ever defines the running destination and undefines a *stopped* source.
        """
        req = self.request
        try:
            self.driver.make_persistent(req.dst_uri, req.domain)
        except HypervisorError as err:
            log.warning("cannot persist on destination domain=%s error=%s", req.domain, err)
        try:
            if self.driver.undefine_if_stopped(req.src_uri, req.domain):
                log.info("undefined the stopped source copy domain=%s", req.domain)
        except DomainNotFound:
            pass
        except HypervisorError as err:
            log.warning("cannot undefine source copy domain=%s error=%s", req.domain, err)

    def _where(self) -> tuple[DomainInfo | None, DomainInfo | None, str | None]:
        """The domain on the source and on the destination (None: not there), or an error
        saying why that cannot be told."""
        req = self.request

        def on(uri: str) -> DomainInfo | None:
            try:
                return self.driver.domain_info(uri, req.domain)
            except DomainNotFound:
                return None

        try:
            return on(req.src_uri), on(req.dst_uri), None
        except HypervisorError as err:
            return None, None, f"cannot tell where {req.domain} runs: {err}"

    def _outcome(
        self, src: DomainInfo | None, dst: DomainInfo | None, error: str | None
    ) -> tuple[Phase, str | None]:
        if error is not None:
            return Phase.ERROR, error
        with self._lock:
            abort_reason = self._sent.abort or self._requests.abort
            policy_aborted = self._sent.abort_by_policy
        return outcome_from_hosts(
            self.request.domain,
            src,
            dst,
            abort_reason=abort_reason,
            policy_aborted=policy_aborted,
        )

    def _outcome_after_adoption(self) -> tuple[Phase, str | None]:
        return self._outcome(*self._where())

    def _migrate(self, outcome: list[BaseException | None], resume: bool = False) -> None:
        s = self.request.settings
        params = MigrationParams(
            postcopy_resume=resume,
            dst_uri=self.request.dst_uri,
            dst_migration_uri=self.request.dst_migration_uri,
            post_copy=s.post_copy,
            block_migration=s.block_migration,
            bandwidth_mib_s=s.bandwidth_mib_s,
            downtime_limit_ms=s.downtime_limit_ms,
        )
        try:
            self.driver.migrate(self.request.src_uri, self.request.domain, params)
            outcome.append(None)
        except BaseException as err:  # reported by run() in the caller's thread
            outcome.append(err)
        finally:
            self._wake.set()

    def _on_event(self, event: str, stats: JobStats | None) -> None:
        log.debug("domain event domain=%s event=%s", self.request.domain, event)
        if event == EVENT_JOB_COMPLETED and stats is not None:
            attempt = self._attempt
            attempt.final_stats = stats
            attempt.completed.set()
        if event == EVENT_POSTCOPY_FAILED:
            log.warning("post-copy failed event domain=%s", self.request.domain)
        self._wake.set()

    def _monitor(self, thread: threading.Thread | None, *, follow_failed: bool = False) -> None:
        """Sample, decide and act until the migration call returns (``thread``) or, when
        adopting (``thread`` None), until the source has no migration job any more, or its
        post-copy failed (``follow_failed``: go on until QEMU's stream ends)."""
        req = self.request
        downtime_set = thread is None  # an adopted job has its limit already

        def alive() -> bool:
            return thread.is_alive() if thread is not None else not self._attempt.over

        while alive():
            self._wake.wait(self.sample_interval_s)
            if not alive():
                break
            now = self._elapsed()
            try:
                stats = self.driver.job_stats(req.src_uri, req.domain)
            except DomainNotFound:
                self._attempt.over = thread is None
                continue  # the source domain is undefined as the migration completes
            except HypervisorError as err:  # transient: the job is starting or ending
                log.debug("no job stats domain=%s error=%s", req.domain, err)
                if thread is None and self._source_stopped():
                    self._attempt.over = True  # e.g. it completed while we looked away
                continue
            if thread is None and (
                not stats.active or (not follow_failed and self._source_postcopy_failed())
            ):
                self._attempt.over = True  # libvirt keeps a broken post-copy's job "active"
                break
            if stats.active and stats.memory_total_bytes == 0 and stats.disk_total_bytes == 0:
                continue  # libvirt is still preparing: QEMU's migration has not started
            if stats.active:
                if not downtime_set:
                    downtime_set = self._try(
                        lambda: self.driver.set_max_downtime(
                            req.src_uri, req.domain, req.settings.downtime_limit_ms
                        )
                    )
                if self._sent.switching:
                    self._confirm_switch()  # before the sample, which says which phase
                sample = self._sample(stats, now)
                self.result.samples.append(sample)
                self._tell(self.listener.on_sample, sample)
                self._count_faults(stats)
            self._poll_measurement(now)
            self._step(now)

    def _sample(self, stats: JobStats, now: float) -> Sample:
        return Sample(
            elapsed_s=round(now, 3),
            memory_total_bytes=stats.memory_total_bytes,
            memory_processed_bytes=stats.memory_processed_bytes,
            memory_remaining_bytes=stats.memory_remaining_bytes,
            dirty_rate_bytes_s=stats.dirty_rate_bytes_s,
            bandwidth_bytes_s=stats.bandwidth_bytes_s,
            iteration=stats.iteration,
            postcopy=self._phase.in_postcopy,
            postcopy_requests=stats.postcopy_requests,
            disk_total_bytes=stats.disk_total_bytes,
            disk_processed_bytes=stats.disk_processed_bytes,
            disk_remaining_bytes=stats.disk_remaining_bytes,
        )

    def _step(self, now: float) -> None:
        """Execute this tick's decision (:func:`~orbit.migration.control.next_step`: an
        operator request, else the stall rule in post-copy, else the policy)."""
        req = self.request
        with self._lock:
            requests, sent = self._requests, self._sent
            progress = Progress(
                self._phase,
                switching=sent.switching,
                abort_sent=sent.abort_sent,
                paused_source=sent.paused_source,
                stall_handled=self._attempt.stall_handled,
            )
            # a force-complete is acted on at most once, now (a failed switch asks again)
            if requests.force_complete:
                self._requests = replace(requests, force_complete=False)
        if sent.switching and self._confirm_switch():
            progress = replace(progress, phase=self._phase)  # QEMU has switched
        decision = next_step(
            requests,
            progress,
            req.settings,
            self.result.samples,
            now,
            plan=self.result.plan,
            attempt_samples=self.result.samples[self._attempt.first_sample :],
            cannot_resume=self._resume_defect,
            faults=(
                None
                if self._fault_base is None
                else new_pages(self._fault_base, self._fault_counts)
            ),
        )
        if decision is not None:
            self._execute(decision)

    def _execute(self, decision: Decision) -> None:
        """Do what ``decision`` says, and record it."""
        req = self.request
        source = "operator" if decision.rule in OPERATOR_RULES else "policy"
        action = decision.action
        if action is Action.SWITCH_TO_POSTCOPY:
            if not self._switch(decision.reason, source, decision.rule) and source == "operator":
                with self._lock:  # e.g. the job is still setting up: try again next tick
                    self._requests = replace(self._requests, force_complete=True)
        elif action is Action.ABORT:
            with self._lock:
                self._sent.abort = decision.reason
                self._sent.abort_by_policy = source == "policy"
                self._requests = replace(self._requests, abort=None)
            self._record(action, decision.reason, source, decision.rule)
            sent = self._try(lambda: self.driver.abort_job(req.src_uri, req.domain))
            with self._lock:
                self._sent.abort_sent = sent
        elif action is Action.PAUSE_AND_COMPLETE:
            self._record(action, decision.reason, source, decision.rule)
            paused = self._try(lambda: self.driver.suspend(req.src_uri, req.domain))
            with self._lock:
                self._sent.paused_source = paused
        elif action is Action.PAUSE_POSTCOPY:
            # a post-copy that moves no bytes (postcopy_stall): pausing it
            # (abort_job(postcopy=True): both sides stay in "post-copy failed") turns the
            # hang of a cut link into the recoverable postcopy-paused. Never an abort.
            self._record(action, decision.reason, rule=decision.rule)
            self._attempt.stall_handled = self._try(
                lambda: self.driver.abort_job(req.src_uri, req.domain, postcopy=True)
            )
        elif decision.rule == "abort-dropped":
            log.warning("abort dropped: in post-copy domain=%s", req.domain)
            with self._lock:
                self._requests = replace(self._requests, abort=None)
            self._record(action, decision.reason, "engine", decision.rule)
        elif decision.rule == "postcopy-stalled-unresumable":
            self._record(action, decision.reason, rule=decision.rule)
            self._attempt.stall_handled = True  # said once per attempt
        elif action is Action.CONTINUE:
            # one record per stretch of the same rule, not one per sample
            last = next((d for d in reversed(self.result.decisions) if d.source == "policy"), None)
            if last is None or last.action is not Action.CONTINUE or last.rule != decision.rule:
                self._record(action, decision.reason, rule=decision.rule)

    def _switch(self, reason: str, source: str, rule: str = "") -> bool:
        """Ask for post-copy; True once it is requested (a failed call is retried later)."""
        req = self.request
        if not req.settings.post_copy:
            return True  # never without permission; decide() does not ask for it either
        with self._lock:
            if self._sent.abort is not None or self._requests.abort is not None:
                return True  # an abort came first: it wins, no switch
            self._sent.switching = True  # from here on abort() refuses
        if not self._try(lambda: self.driver.start_postcopy(req.src_uri, req.domain)):
            with self._lock:
                self._sent.switching = False
            return False
        self._record(Action.SWITCH_TO_POSTCOPY, reason, source, rule)
        self.result.switch_at_s = round(self._elapsed(), 3)
        with self._lock:
            self._sent.switch_reason = reason
        self._confirm_switch()
        return True

    def _switched_after_all(self) -> bool:
        """After a break: did QEMU enter the post-copy that was asked for (since the last
        sample)? When the source cannot tell, yes: a split VM is never called failed."""
        try:
            info = self.driver.domain_info(self.request.src_uri, self.request.domain)
        except HypervisorError:
            return True
        return info.state is not DomainState.RUNNING or info.reason in (
            "postcopy",
            "postcopy-failed",
        )

    def _confirm_switch(self) -> bool:
        """``running-postcopy`` once QEMU has switched (True), not when it was asked to.

        QEMU switches at its next iteration boundary, which a slow stream may take seconds
        to reach and a stuck one never does; libvirt pauses the source then. Until that,
        the VM runs on the source alone and a break fails the migration like a pre-copy.
        """
        if self._phase.in_postcopy:
            return True
        if not self._source_in_postcopy():
            return False
        self._set_phase(Phase.RUNNING_POSTCOPY, self._sent.switch_reason)
        return True

    def _try(self, call: Callable[[], None]) -> bool:
        """Run a control call on the running job; a failure is logged, not fatal."""
        try:
            call()
            return True
        except HypervisorError as err:
            log.warning("control call failed domain=%s error=%s", self.request.domain, err)
            return False

    def _finish(self, error: BaseException | None, *, watching: bool) -> None:
        req = self.request
        self.result.total_s = round(self._elapsed(), 3)
        rate = transfer_rate(self.result.samples)
        self.result.transfer_rate_bytes_s = None if rate is None else round(rate)
        self.result.pass1 = first_pass(self.result.samples)
        with self._lock:
            sent = self._sent
            abort = sent.abort or self._requests.abort
        if error is not None:
            self.result.error = str(error)
            self._counters_from_last_sample()  # what was sent before it ended
            if not isinstance(error, OrbitError):
                log.error("migration crashed domain=%s error=%r", req.domain, error)
            if sent.switching and not self._phase.in_postcopy and self._switched_after_all():
                self._set_phase(Phase.RUNNING_POSTCOPY, sent.switch_reason)
        phase, why = job_outcome(
            None if error is None else str(error),
            split=self._phase.in_postcopy,
            abort=abort,
            abort_by_policy=sent.abort_by_policy,
        )
        if phase is Phase.COMPLETED:
            self.result.error = None
            self._collect_final_stats(wait_for_event=watching)
            if sent.paused_source:
                self._resume_if_paused(req.dst_uri)
            self._set_phase(Phase.COMPLETED)
            log.info(
                "migration completed domain=%s total_s=%.2f downtime_ms=%s memory_mib=%.1f "
                "iterations=%d postcopy_requests=%d",
                req.domain,
                self.result.total_s,
                self.result.downtime_ms,
                self.result.memory_bytes / MIB,
                self.result.iterations,
                self.result.postcopy_requests,
            )
            return
        if phase is not Phase.POSTCOPY_PAUSED and sent.paused_source:
            self._resume_if_paused(req.src_uri)  # the VM stays on the source: running
        if phase is Phase.FAILED:
            self.result.error = why
        self._set_phase(phase, why)  # postcopy-paused: both sides kept exactly as they are

    def _collect_final_stats(self, *, wait_for_event: bool) -> None:
        req = self.request
        if wait_for_event:  # events arrive asynchronously, maybe after migrate() returned
            self._attempt.completed.wait(FINAL_STATS_TIMEOUT_S)
        final = self._attempt.final_stats
        log.debug("final stats domain=%s from_event=%s", req.domain, final is not None)
        if final is None:  # the event may be lost; pre-copy leaves them on the destination
            try:
                final = self.driver.job_stats(req.dst_uri, req.domain, completed=True)
            except HypervisorError as err:
                log.warning("no final stats domain=%s error=%s", req.domain, err)
        r = self.result
        if final is not None and final.memory_processed_bytes:
            r.downtime_ms = final.downtime_ms
            r.memory_total_bytes = final.memory_total_bytes
            r.memory_bytes = final.memory_processed_bytes
            r.disk_bytes = final.disk_processed_bytes
            r.iterations = final.iteration
            r.postcopy_requests = final.postcopy_requests
        self._counters_from_last_sample()

    def _counters_from_last_sample(self) -> None:
        """Fill what the final statistics did not give from the last progress sample."""
        r = self.result
        if not r.samples:
            return
        last = r.samples[-1]
        r.memory_total_bytes = r.memory_total_bytes or last.memory_total_bytes
        r.memory_bytes = r.memory_bytes or last.memory_processed_bytes
        r.disk_bytes = r.disk_bytes or last.disk_processed_bytes
        r.iterations = max(r.iterations, last.iteration)
        r.postcopy_requests = max(r.postcopy_requests, last.postcopy_requests)

    def _resume_if_paused(self, uri: str) -> None:
        """Undo the engine's own pause (force-complete without post-copy)."""
        try:
            info = self.driver.domain_info(uri, self.request.domain)
            if info.state is DomainState.PAUSED and info.reason in ("user", "migration", ""):
                self.driver.resume(uri, self.request.domain)
        except HypervisorError as err:
            log.warning("could not resume domain=%s error=%s", self.request.domain, err)


def run_migration(
    driver: HypervisorDriver,
    request: MigrationRequest,
    *,
    listener: MigrationListener | None = None,
) -> MigrationResult:
    """Run one migration to its end (convenience for callers that need no controls)."""
    return Migration(driver, request, listener=listener).run()


__all__ = [
    "SAMPLE_INTERVAL_S",
    "DecisionRecord",
    "Migration",
    "MigrationFailed",
    "MigrationListener",
    "MigrationRequest",
    "MigrationResult",
    "run_migration",
]
