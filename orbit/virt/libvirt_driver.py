"""The libvirt implementation of :class:`~orbit.virt.driver.HypervisorDriver`.

Facts it is built on (verified on Debian 12, libvirt 9.0 / QEMU 7.2):

- ``migrateToURI3`` blocks its connection for the whole migration, so :meth:`migrate`
  opens a connection of its own; everything else uses one cached control connection per
  host, which is also where job statistics are read while a migration runs.
- Without a running libvirt event loop, keepalive replies go unanswered and idle
  connections drop after ~30 s: the driver runs ``virEventRunDefaultImpl`` in a daemon
  thread, registered before the first connection opens.
- Connecting to a host whose link is cut would hang in TCP connect for minutes, so TCP
  URIs are probed with a short socket connect first.

libvirt errors are mapped to ORBIT's tree in one place, :func:`_mapped`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import libvirt

from orbit.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    MigrationFailed,
    OrbitError,
)
from orbit.virt.driver import (
    EVENT_ITERATION,
    EVENT_JOB_COMPLETED,
    EVENT_LIFECYCLE,
    EVENT_POSTCOPY_FAILED,
    EVENT_SUSPENDED_POSTCOPY,
    DirtyRate,
    DomainInfo,
    DomainState,
    EventCallback,
    HostInfo,
    JobStats,
    MigrationParams,
    Owner,
)

log = logging.getLogger(__name__)

#: Socket connect timeout when probing a TCP host before libvirt.open: room for one lost
#: SYN (sent again after 1 s; at 1 s sharp a lossy link failed 2 migrations in 5), short
#: enough that a host whose link returns answers within ~1 s of probing.
CONNECT_PROBE_TIMEOUT_S = 1.5
#: libvirt 11.2.0 changed the incoming-migration set-up to take a pointer to the migration
#: fd, and its post-copy resume on the destination (qemuMigrationDstPrepareResume) passes
#: none: the daemon dereferences NULL and dies (seen on 11.3.0, Debian 13's version, in
#: every patch level up to 11.3.0-3+deb13u3). No fixed release is known to us.
RESUME_CRASH_SINCE = 11_002_000
LIBVIRT_TCP_PORT = 16509
LIBVIRT_TLS_PORT = 16514
#: Keepalive: ping every 5 s, give up after 6 unanswered (30 s).
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 6
#: A dirty-rate calculation is read this often, until this long after its period.
DIRTY_RATE_POLL_S = 0.1
DIRTY_RATE_GRACE_S = 5.0
MIB = 1024 * 1024

#: ORBIT's domain metadata (the project a VM belongs to) and Nova's, which ORBIT reads
ORBIT_XMLNS = "https://orbit.example/xmlns/libvirt/1"
ORBIT_XMLNS_PREFIX = "orbit"
NOVA_XMLNS = "http://openstack.org/xmlns/libvirt/nova/1.1"

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_RUNNING_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED: "migration-canceled",
    libvirt.VIR_DOMAIN_RUNNING_POSTCOPY: "postcopy",
    libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED: "postcopy-failed",
}
_PAUSED_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "user",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migration",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "postcopy",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "postcopy-failed",
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "ioerror",
}

_CONNECTION_ERRORS = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
}


def _ignore_errors(_ctx: object, _err: object) -> None:
    return None


def is_tls(uri: str) -> bool:
    """Whether ``uri`` reaches its libvirtd over TLS."""
    return uri.split("://", 1)[0].endswith("+tls")


def owner_xml(owner: Owner) -> str:
    """ORBIT's metadata element for ``owner`` (libvirt puts it in ORBIT's namespace)."""
    project = ET.Element("project")
    if owner.project_id:
        project.set("id", owner.project_id)
    project.text = owner.project_name or ""
    return ET.tostring(project, encoding="unicode")


def parse_owner(xml: str, namespace: str) -> Owner | None:
    """The project in a metadata element: ORBIT's ``<project id=...>name</project>`` or
    Nova's ``<instance><owner><project uuid=...>name</project></owner></instance>``; None
    when it names none or does not parse."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    if namespace == NOVA_XMLNS:
        found = root.find(f"{{{NOVA_XMLNS}}}owner/{{{NOVA_XMLNS}}}project")
        project_id = found.get("uuid") if found is not None else None
    else:
        found = root if root.tag in (f"{{{ORBIT_XMLNS}}}project", "project") else None
        project_id = found.get("id") if found is not None else None
    if found is None:
        return None
    name = (found.text or "").strip() or None
    if project_id is None and name is None:
        return None
    return Owner(project_id=project_id or None, project_name=name)


def _mapped(err: libvirt.libvirtError, uri: str, what: str) -> OrbitError:
    """The ORBIT exception for a libvirt error: the one place where they are mapped."""
    code = err.get_error_code()
    message = f"{what} on {host_of(uri)}: {err.get_error_message()}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if code in _CONNECTION_ERRORS and err.get_error_domain() in (
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
    ):
        return HostUnreachable(message)
    return HypervisorError(message)


def host_of(uri: str) -> str:
    """The host part of a libvirt URI, for messages ('qemu+tcp://h/system' -> 'h')."""
    try:
        return urlsplit(uri).hostname or uri
    except ValueError:
        return uri


class LibvirtDriver:
    """Talks to each host's libvirtd over libvirt's remote protocol. Thread-safe."""

    _event_loop_lock = threading.Lock()
    _event_loop_started = False

    def __init__(self) -> None:
        self._start_event_loop()
        self._lock = threading.Lock()
        self._conns: dict[str, libvirt.virConnect] = {}
        #: the mode of each domain's last dirty-rate calculation (libvirt 9.0 reports none)
        self._dirty_rate_modes: dict[tuple[str, str], str] = {}

    # -- connections ---------------------------------------------------------------------

    @classmethod
    def _start_event_loop(cls) -> None:
        with cls._event_loop_lock:
            if cls._event_loop_started:
                return
            libvirt.registerErrorHandler(_ignore_errors, None)
            libvirt.virEventRegisterDefaultImpl()

            def run() -> None:
                while True:
                    libvirt.virEventRunDefaultImpl()

            threading.Thread(target=run, name="libvirt-events", daemon=True).start()
            cls._event_loop_started = True

    def _open(self, uri: str) -> libvirt.virConnect:
        self._probe(uri)
        try:
            conn = libvirt.open(uri)
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        except libvirt.libvirtError as err:
            raise HostUnreachable(
                f"cannot connect to {host_of(uri)}: {err.get_error_message()}"
            ) from err
        return conn

    def _probe(self, uri: str) -> None:
        """Fail fast with HostUnreachable when a TCP host's libvirt port does not answer.

        libvirt itself would notice only after its keepalive timeout (30 s). A host that
        does not answer loses its cached connection: once the link returns, that
        connection's TCP stream would deliver only at its next retransmission (seconds to
        minutes later), so the next call opens a fresh one.
        """
        try:
            parts = urlsplit(uri)
            tls = parts.scheme.endswith("+tls")
            port = parts.port or (LIBVIRT_TLS_PORT if tls else LIBVIRT_TCP_PORT)
        except ValueError as err:
            raise HostUnreachable(f"libvirt URI {uri!r} is not valid: {err}") from err
        if parts.scheme.endswith(("+tcp", "+tls")) and parts.hostname:
            try:
                with socket.create_connection(
                    (parts.hostname, port), timeout=CONNECT_PROBE_TIMEOUT_S
                ):
                    pass
            except OSError as err:
                self._forget(uri)
                raise HostUnreachable(
                    f"host {parts.hostname} does not answer on its libvirt port "
                    f"{port} within {CONNECT_PROBE_TIMEOUT_S:g} s: {err}"
                ) from err

    def _forget(self, uri: str) -> None:
        """Drop the cached connection to ``uri`` and close it in the background."""
        with self._lock:
            conn = self._conns.pop(uri, None)
        if conn is not None:
            self._close_later(conn)

    @staticmethod
    def _close_later(conn: libvirt.virConnect) -> None:
        """Close ``conn`` in a thread of its own: closing waits for the host's reply,
        which a cut link never brings."""

        def close() -> None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

        threading.Thread(target=close, name="libvirt-close", daemon=True).start()

    def _conn(self, uri: str) -> libvirt.virConnect:
        """The cached control connection to ``uri``, reopened if it died.

        The lock guards the cache only, never a probe or ``libvirt.open``: a host that
        does not answer must not hold up calls to the others.
        """
        with self._lock:
            conn = self._conns.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():  # local state, no round trip
                    return conn
            except libvirt.libvirtError:
                pass
            with self._lock:
                if self._conns.get(uri) is conn:
                    del self._conns[uri]
        fresh = self._open(uri)
        with self._lock:
            conn = self._conns.setdefault(uri, fresh)
        if conn is not fresh:  # another thread opened one meanwhile: keep theirs
            self._close_later(fresh)
        return conn

    def _domain(self, uri: str, name: str) -> libvirt.virDomain:
        try:
            return self._conn(uri).lookupByName(name)
        except libvirt.libvirtError as err:
            if not _connection_broke(err):
                raise _mapped(err, uri, f"looking up domain {name}") from err
            # a cached connection that died in an outage: once more on a fresh one
            self._forget(uri)
        try:
            return self._conn(uri).lookupByName(name)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"looking up domain {name}") from err

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            self._conns.clear()

    # -- the driver interface ------------------------------------------------------------

    def ping(self, uri: str) -> None:
        self._probe(uri)  # a cached connection would take the keepalive timeout to notice
        try:
            self._conn(uri).getLibVersion()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, "ping") from err

    def resume_defect(self, uri: str) -> str | None:
        try:
            version = self._conn(uri).getLibVersion()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, "reading the libvirt version") from err
        return resume_defect_of(version)

    def host_info(self, uri: str) -> HostInfo:
        conn = self._conn(uri)
        try:
            _model, memory_mib, cpus, *_rest = conn.getInfo()
            free_bytes = conn.getFreeMemory()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, "reading host memory") from err
        return HostInfo(int(memory_mib), int(free_bytes) // (1024 * 1024), int(cpus))

    def list_domains(self, uri: str) -> list[DomainInfo]:
        try:
            doms = self._conn(uri).listAllDomains()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, "listing domains") from err
        infos = []
        for dom in doms:
            try:
                infos.append(self._info(dom))
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise _mapped(err, uri, "listing domains") from err
                # undefined between the listing and the look (e.g. a migration ended)
        return infos

    def domain_info(self, uri: str, name: str) -> DomainInfo:
        dom = self._domain(uri, name)
        try:
            return self._info(dom)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"reading domain {name}") from err

    @staticmethod
    def _owner(dom: libvirt.virDomain) -> Owner | None:
        """The project in the domain's metadata: ORBIT's element, else Nova's. Reading
        metadata takes no domain job (unlike XMLDesc), so it does not wait for a migration."""
        for namespace in (ORBIT_XMLNS, NOVA_XMLNS):
            try:
                xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, 0)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    continue
                raise
            return parse_owner(xml, namespace)
        return None

    def set_owner(self, uri: str, name: str, owner: Owner | None) -> None:
        dom = self._domain(uri, name)
        try:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
            if dom.isPersistent():
                flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
            xml = owner_xml(owner) if owner is not None else None
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, ORBIT_XMLNS_PREFIX, ORBIT_XMLNS, flags
            )
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"setting the project of domain {name}") from err

    @staticmethod
    def _info(dom: libvirt.virDomain) -> DomainInfo:
        state, reason = dom.state()
        dstate = _STATES.get(state, DomainState.OTHER)
        if dstate is DomainState.RUNNING:
            why = _RUNNING_REASONS.get(reason, "")
        elif dstate is DomainState.PAUSED:
            why = _PAUSED_REASONS.get(reason, "")
        else:
            why = ""
        _state, max_kib, _mem_kib, vcpus, _cpu_ns = dom.info()
        return DomainInfo(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=dstate,
            reason=why,
            memory_mib=max_kib // 1024,
            vcpus=vcpus,
            persistent=bool(dom.isPersistent()),
            owner=LibvirtDriver._owner(dom),
        )  # no XMLDesc: it queues a job behind a migration's (30 s; libvirt 11.3 then crashed)

    def migrate(self, uri: str, name: str, params: MigrationParams) -> None:
        """See the interface. Between two hosts reached over TLS (``qemu+tls://``), the
        migration stream is encrypted too (``VIR_MIGRATE_TLS``, with each host's QEMU
        certificates): the control connection's protection would mean little if the guest's
        memory crossed the network in the clear."""
        flags = MIGRATE_FLAGS
        if is_tls(uri) and is_tls(params.dst_uri):
            flags |= libvirt.VIR_MIGRATE_TLS
        if params.post_copy or params.postcopy_resume:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if params.postcopy_resume:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY_RESUME
            defect = self.resume_defect(params.dst_uri)  # never crash a host's daemon
            if defect is not None:
                raise MigrationFailed(f"not resuming the post-copy of {name}: {defect}")
        if params.block_migration:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        mparams: dict[str, Any] = {}
        if params.dst_migration_uri:
            mparams[libvirt.VIR_MIGRATE_PARAM_URI] = params.dst_migration_uri
            if params.block_migration:
                # NBD for the disks: every lab host has the same hostname, so say where.
                mparams[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = params.dst_migration_uri
        if params.bandwidth_mib_s:
            mparams[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = params.bandwidth_mib_s
        conn = self._open(uri)  # migrateToURI3 blocks its connection: one of its own
        try:
            dom = conn.lookupByName(name)
            dom.migrateToURI3(params.dst_uri, mparams, flags)
        except libvirt.libvirtError as err:
            mapped = _mapped(err, uri, f"migrating {name} to {host_of(params.dst_uri)}")
            if isinstance(mapped, DomainNotFound):
                raise mapped from err
            raise MigrationFailed(str(mapped)) from err
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def job_stats(self, uri: str, name: str, *, completed: bool = False) -> JobStats:
        dom = self._domain(uri, name)
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
        try:
            raw: dict[str, Any] = dom.jobStats(flags)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"reading job stats of {name}") from err
        return stats_from_libvirt(raw)

    def measure_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> DirtyRate:
        """libvirt's dirty-rate calculation, started and waited for (see
        :meth:`start_dirty_rate`)."""
        self.start_dirty_rate(uri, name, period_s=period_s)
        deadline = time.monotonic() + period_s + DIRTY_RATE_GRACE_S
        while (rate := self.read_dirty_rate(uri, name)) is None:
            if time.monotonic() > deadline:
                raise HypervisorError(
                    f"the dirty rate of {name} on {host_of(uri)} was not measured within "
                    f"{period_s + DIRTY_RATE_GRACE_S:.0f} s"
                )
            time.sleep(DIRTY_RATE_POLL_S)
        return rate

    def start_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> None:
        """Start libvirt's dirty-rate calculation (``virDomainStartDirtyRateCalc``, libvirt
        >= 8.1); QEMU measures in a thread of its own, beside a migration started after it.

        Mode ``dirty-bitmap`` (QEMU counts the pages KVM's dirty log marks: exact, distinct
        pages, so at most the working set per second) for a KVM domain; ``page-sampling``
        (hashes of ~512 sampled pages per GiB: an estimate) otherwise: dirty-bitmap on a
        TCG domain kills QEMU 7.2 (seen on the lab: "Unable to read from monitor").
        """
        dom = self._domain(uri, name)
        try:
            kvm = ET.fromstring(dom.XMLDesc(0)).get("type") == "kvm"
        except (libvirt.libvirtError, ET.ParseError) as err:
            raise HypervisorError(
                f"cannot read the definition of {name} on {host_of(uri)}"
            ) from err
        mode, flag = (
            ("dirty-bitmap", libvirt.VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_BITMAP)
            if kvm
            else ("page-sampling", libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
        )
        try:
            dom.startDirtyRateCalc(period_s, flag)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"measuring the dirty rate of {name}") from err
        self._dirty_rate_modes[(uri, name)] = mode

    def read_dirty_rate(self, uri: str, name: str) -> DirtyRate | None:
        dom = self._domain(uri, name)
        try:
            found = self._conn(uri).domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"reading the dirty rate of {name}") from err
        if not found:
            raise DomainNotFound(f"{name} is not on {host_of(uri)} any more")
        stats = found[0][1]
        if stats.get("dirtyrate.calc_status") != libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
            return None
        mode = str(stats.get("dirtyrate.calc_mode") or self._dirty_rate_modes.get((uri, name), ""))
        mib_s = int(stats.get("dirtyrate.megabytes_per_second", 0))  # QEMU: MiB/s
        return DirtyRate(mib_s * MIB, mode, float(stats.get("dirtyrate.calc_period", 0)))

    def new_page_faults(self, uri: str, name: str) -> int | None:
        """``vcpu.<n>.pf_fixed.sum`` of ``VIR_DOMAIN_STATS_VCPU`` summed over the vCPUs:
        KVM's binary statistics, which libvirt reads with QEMU's ``query-stats`` (a query:
        allowed while a migration job runs). None when libvirt reports none (TCG)."""
        dom = self._domain(uri, name)
        try:
            found = self._conn(uri).domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_VCPU)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"reading the vCPU statistics of {name}") from err
        if not found:
            raise DomainNotFound(f"{name} is not on {host_of(uri)} any more")
        counts = [
            int(value)
            for key, value in found[0][1].items()
            if key.startswith("vcpu.") and key.endswith(".pf_fixed.sum")
        ]
        return sum(counts) if counts else None

    def resident_bytes(self, uri: str, name: str) -> int:
        dom = self._domain(uri, name)
        try:
            stats = dom.memoryStats()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"reading the memory statistics of {name}") from err
        if "rss" not in stats:
            raise HypervisorError(f"libvirt reports no resident memory for {name}")
        return int(stats["rss"]) * 1024  # KiB

    def start_postcopy(self, uri: str, name: str) -> None:
        self._call(uri, name, "switching to post-copy", lambda d: d.migrateStartPostCopy(0))

    def set_max_downtime(self, uri: str, name: str, downtime_ms: int) -> None:
        self._call(
            uri, name, "setting max downtime", lambda d: d.migrateSetMaxDowntime(downtime_ms, 0)
        )

    def abort_job(self, uri: str, name: str, *, postcopy: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY if postcopy else 0
        self._call(uri, name, "aborting the job", lambda d: d.abortJobFlags(flags))

    def suspend(self, uri: str, name: str) -> None:
        self._call(uri, name, "pausing", lambda d: d.suspend())

    def resume(self, uri: str, name: str) -> None:
        self._call(uri, name, "resuming", lambda d: d.resume())

    def _call(
        self, uri: str, name: str, what: str, fn: Callable[[libvirt.virDomain], object]
    ) -> None:
        dom = self._domain(uri, name)
        try:
            fn(dom)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"{what} {name}") from err

    def make_persistent(self, uri: str, name: str) -> None:
        dom = self._domain(uri, name)
        try:
            if not dom.isPersistent():
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
                self._conn(uri).defineXML(xml)
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"defining {name} persistently") from err

    def undefine_if_stopped(self, uri: str, name: str) -> bool:
        dom = self._domain(uri, name)
        try:
            state, _reason = dom.state()
            if state not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
                return False
            dom.undefine()
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"undefining the stopped {name}") from err
        return True

    def watch(self, uri: str, name: str, callback: EventCallback) -> Callable[[], None]:
        conn = self._conn(uri)
        dom = self._domain(uri, name)

        def on_iteration(_c: object, _d: object, _iteration: int, _o: object) -> None:
            callback(EVENT_ITERATION, None)

        def on_job_completed(_c: object, _d: object, stats: dict[str, Any], _o: object) -> None:
            callback(EVENT_JOB_COMPLETED, stats_from_libvirt(stats))

        def on_lifecycle(_c: object, _d: object, event: int, detail: int, _o: object) -> None:
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY:
                    callback(EVENT_SUSPENDED_POSTCOPY, None)
                    return
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED:
                    callback(EVENT_POSTCOPY_FAILED, None)
                    return
            callback(EVENT_LIFECYCLE, None)

        ids = []
        try:
            for event_id, cb in (
                (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, on_iteration),
                (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job_completed),
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle),
            ):
                ids.append(conn.domainEventRegisterAny(dom, event_id, cb, None))
        except libvirt.libvirtError as err:
            raise _mapped(err, uri, f"watching events of {name}") from err

        def unsubscribe() -> None:
            for callback_id in ids:
                # if the connection is gone, so are its callbacks
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(callback_id)

        return unsubscribe


def _connection_broke(err: libvirt.libvirtError) -> bool:
    """The error says the connection itself is gone (reset, closed, end of file), not
    that the call failed: a fresh connection may well succeed."""
    return bool(err.get_error_domain() == libvirt.VIR_FROM_RPC)


def resume_defect_of(version: int) -> str | None:
    """Why a destination running libvirt ``version`` (major * 1e6 + minor * 1e3 + micro)
    cannot take a post-copy resume, or None."""
    if version < RESUME_CRASH_SINCE:
        return None
    text = f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"
    return (
        f"libvirt {text} on the destination crashes when asked to resume a post-copy "
        "(since 11.2.0 its resume passes no migration fd)"
    )


def stats_from_libvirt(raw: dict[str, Any]) -> JobStats:
    """Normalise libvirt's typed-parameter job stats (dirty rate comes in pages/s)."""

    def num(key: str) -> int:
        return int(raw.get(key, 0) or 0)

    page = num("memory_page_size") or 4096
    return JobStats(
        active=raw.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
        in (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED),
        time_elapsed_ms=num("time_elapsed"),
        downtime_ms=int(raw["downtime"]) if "downtime" in raw else None,
        memory_total_bytes=num("memory_total"),
        memory_processed_bytes=num("memory_processed"),
        memory_remaining_bytes=num("memory_remaining"),
        dirty_rate_bytes_s=num("memory_dirty_rate") * page,
        bandwidth_bytes_s=num("memory_bps"),
        iteration=num("memory_iteration"),
        postcopy_requests=num("memory_postcopy_requests"),
        disk_total_bytes=num("disk_total"),
        disk_processed_bytes=num("disk_processed"),
        disk_remaining_bytes=num("disk_remaining"),
    )
