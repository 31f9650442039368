"""The test guest as a libvirt domain: define, start, find, and read its heartbeat.

The guest (``guest/``, a multiboot ELF) is booted with libvirt's ``<kernel>`` and takes its
workload on the kernel command line. It writes a heartbeat line to its serial port every
100 ms; the serial port is a file at ``/var/log/libvirt/qemu/NAME-serial.log`` *inside the
host's mount namespace*, which is the host's private log directory seen from outside. After
a migration the destination's QEMU writes to the destination host's file, so the heartbeat
sequence continues there.

Heartbeat line (see ``guest/README.md``)::

    HB seq=12 ms=1200 pages=3072 passes=0 errors=0 rate_kib_s=10240 max_gap_ms=100 cold_checked=3072
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt

from orbit.errors import ConfigError, GuestError
from orbit.lab.lab import Lab, LabHost
from orbit.lab.libvirt_util import connection, state_name
from orbit.lab.system import run

#: Memory below the working set: the kernel at 1 MiB, its page table, and BIOS areas.
GUEST_RESERVED_MIB = 16
#: Extra headroom above the working set, so the guest's bookkeeping always fits.
GUEST_HEADROOM_MIB = 8
#: The guest's limit for working set plus cold memory (its page records, ``gen[]``).
GUEST_MAX_PAGES_MIB = 3072
#: The longest quiet start the guest accepts (``quiet_s``).
MAX_QUIET_S = 3600
MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 16384
#: How long ``start`` waits for the first heartbeat.
FIRST_HEARTBEAT_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 0.1
VERIFY_PASS_TIMEOUT_S = 30.0
PATTERNS = ("seq", "random")
SERIAL_LOG_IN_HOST = "/var/log/libvirt/qemu/{name}-serial.log"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HB_FIELDS = ("seq", "ms", "pages", "passes", "errors", "rate_kib_s", "max_gap_ms")
#: Fields a heartbeat of an older guest build lacks; they default to 0.
_HB_OPTIONAL_FIELDS = ("cold_checked",)
QBOOT_ROM = Path("/usr/share/qemu/qboot.rom")

#: The accelerator probe (``Guests.probe_accelerator``): a small unpaced guest under KVM
#: must rewrite at least this much memory per second for KVM to be used. A KVM that runs
#: the guest natively gives GiB/s; one that emulates it instruction by instruction gives
#: ~1 MiB/s, far slower than TCG (~150-500 MiB/s).
PROBE_MIN_RATE_MIB_S = 100
PROBE_NAME = "orbit-accel-probe"
PROBE_BEATS = 4
PROBE_TIMEOUT_S = 15.0


def guest_kernel() -> Path:
    """Path of the built guest ELF ($ORBIT_GUEST_KERNEL, else guest/build in the checkout)."""
    env = os.environ.get("ORBIT_GUEST_KERNEL")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "guest/build/orbit-guest.elf"
    if not path.exists():
        raise GuestError(f"test guest not built: {path} is missing; run 'make guest'")
    return path


def accelerator_override() -> tuple[str, str] | None:
    """``ORBIT_LAB_ACCEL=kvm|tcg``, when set: the accelerator to use without probing."""
    forced = os.environ.get("ORBIT_LAB_ACCEL", "").strip().lower()
    if not forced:
        return None
    if forced not in ("kvm", "tcg"):
        raise ConfigError(f"ORBIT_LAB_ACCEL must be 'kvm' or 'tcg', got {forced!r}")
    return forced, "forced by ORBIT_LAB_ACCEL"


def probe_verdict(rates_kib_s: list[int]) -> tuple[str, str]:
    """('kvm' | 'tcg', why) from the write rates a probe guest under KVM reported."""
    if not rates_kib_s:
        return "tcg", "the KVM probe guest reported no write rate"
    rate_mib_s = sorted(rates_kib_s)[len(rates_kib_s) // 2] // 1024  # the median
    if rate_mib_s < PROBE_MIN_RATE_MIB_S:
        return "tcg", (
            f"a probe guest under KVM rewrote only {rate_mib_s} MiB/s "
            f"(< {PROBE_MIN_RATE_MIB_S} MiB/s: this KVM emulates it)"
        )
    return "kvm", f"a probe guest under KVM rewrote {rate_mib_s:,} MiB/s"


def firmware() -> Path | None:
    """qboot, QEMU's minimal BIOS, when installed (Debian's qemu-system-data ships it).

    It starts the multiboot guest in ~0.3 s. SeaBIOS, the default, runs its real-mode code
    for ~4 s on a KVM that emulates such code (PVM), and ~0.3 s elsewhere.
    """
    return QBOOT_ROM if QBOOT_ROM.exists() else None


@dataclass(frozen=True)
class GuestSpec:
    """What to boot: memory size and the workload the guest runs."""

    name: str
    memory_mib: int = 256
    wss_mib: int = 64
    rate_mib_s: int = 0
    pattern: str = "seq"
    corrupt: bool = False
    disk_mib: int = 0  # 0 = no disk; else a qcow2 at /var/lib/libvirt/images/NAME.qcow2
    #: MiB filled once at boot and never rewritten (memory that costs bytes to migrate)
    cold_mib: int = 0
    #: seconds at 1 MiB/s before the guest switches to ``rate_mib_s``
    quiet_s: int = 0
    #: the working set holds data from boot (else a page is a free zero page until written)
    prefill: bool = False

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"guest name {self.name!r} is not valid (letters, digits, ._-)")
        if not MIN_MEMORY_MIB <= self.memory_mib <= MAX_MEMORY_MIB:
            raise ConfigError(
                f"--memory-mib {self.memory_mib} is out of range "
                f"({MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} MiB)"
            )
        if self.wss_mib < 1:
            raise ConfigError(f"--wss-mib must be at least 1 MiB, got {self.wss_mib}")
        if self.cold_mib < 0:
            raise ConfigError(f"--cold-mib must be >= 0, got {self.cold_mib}")
        if self.wss_mib + self.cold_mib > GUEST_MAX_PAGES_MIB:
            raise ConfigError(
                f"--wss-mib {self.wss_mib} plus --cold-mib {self.cold_mib} is more than "
                f"the guest's {GUEST_MAX_PAGES_MIB} MiB"
            )
        need = self.wss_mib + self.cold_mib + GUEST_RESERVED_MIB + GUEST_HEADROOM_MIB
        if self.memory_mib < need:
            cold = f" and --cold-mib {self.cold_mib}" if self.cold_mib else ""
            raise ConfigError(
                f"--memory-mib {self.memory_mib} is too small for --wss-mib {self.wss_mib}"
                f"{cold}: the guest needs at least {need} MiB"
            )
        if not 0 <= self.quiet_s <= MAX_QUIET_S:
            raise ConfigError(f"--quiet-s must be 0..{MAX_QUIET_S} s, got {self.quiet_s}")
        if self.rate_mib_s < 0:
            raise ConfigError(
                f"--rate-mib-s must be >= 0 (0 = as fast as possible), got {self.rate_mib_s}"
            )
        if self.pattern not in PATTERNS:
            raise ConfigError(
                f"--pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}"
            )
        if self.disk_mib < 0:
            raise ConfigError(f"--disk-mib must be >= 0, got {self.disk_mib}")

    def cmdline(self, *, tlbflush: bool = False) -> str:
        """The guest's command line; ``tlbflush`` for TCG (see guest/guest.c, tlb_flush).

        ``cold_mib``, ``quiet_s`` and ``prefill`` appear only when set, so other command
        lines stay as they were.
        """
        line = (
            f"wss_mib={self.wss_mib} rate_mib_s={self.rate_mib_s} "
            f"pattern={self.pattern} corrupt={int(self.corrupt)} tlbflush={int(tlbflush)}"
        )
        if self.cold_mib:
            line += f" cold_mib={self.cold_mib}"
        if self.quiet_s:
            line += f" quiet_s={self.quiet_s}"
        if self.prefill:
            line += " prefill=1"
        return line

    def disk_path(self) -> str:
        return f"/var/lib/libvirt/images/{self.name}.qcow2"


def domain_xml(spec: GuestSpec, kernel: Path, *, kvm: bool) -> str:
    """The libvirt domain XML for the guest: no disk unless asked, serial port to a file.

    Under TCG the guest flushes its TLB around writes (``tlbflush=1``), never under KVM.
    """
    rom = firmware()
    loader = f"\n    <loader type='rom'>{escape(str(rom))}</loader>" if rom else ""
    disk = ""
    if spec.disk_mib:
        disk = (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{escape(spec.disk_path())}'/><target dev='vda' bus='virtio'/></disk>"
        )
    serial = escape(SERIAL_LOG_IN_HOST.format(name=spec.name))
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>{loader}
    <kernel>{escape(str(kernel))}</kernel>
    <cmdline>{escape(spec.cmdline(tlbflush=not kvm))}</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {disk}
    <serial type='file'>
      <source path='{serial}' append='on'/>
      <target port='0'/>
    </serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Heartbeat:
    seq: int
    ms: int
    pages: int
    passes: int
    errors: int
    rate_kib_s: int
    max_gap_ms: int
    #: cold pages verified so far (0 from a guest build without cold memory checks)
    cold_checked: int = 0


def parse_heartbeat(line: str) -> Heartbeat | None:
    """The heartbeat in ``line``, or None if it is not a complete heartbeat line."""
    if not line.startswith("HB "):
        return None
    fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    try:
        values = {k: int(fields[k]) for k in _HB_FIELDS}
        values.update({k: int(fields[k]) for k in _HB_OPTIONAL_FIELDS if k in fields})
        return Heartbeat(**values)
    except (KeyError, ValueError):
        return None  # a line cut short, e.g. by the switch-over of a migration


def complete_lines(text: str) -> list[str]:
    """The lines of a log that is still being written, without the last one unless it has
    ended: a heartbeat caught half-written could parse with its optional fields missing."""
    return text.split("\n")[:-1]


class Guests:
    """Test guests on the lab's hosts."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def serial_log(self, host: str, name: str) -> Path:
        return self.lab.host_dir(host) / "log" / "qemu" / f"{name}-serial.log"

    def disk_file(self, host: str, name: str) -> Path:
        """The guest's disk image on ``host``, as seen from outside the lab."""
        return self.lab.host_dir(host) / "lib" / "images" / f"{name}.qcow2"

    def disk_sha256(self, host: str, name: str) -> str:
        """SHA-256 of the guest disk's content (raw), read while the guest may run."""
        with tempfile.TemporaryDirectory(prefix="orbit-disk-") as tmp:
            raw = Path(tmp) / "disk.raw"
            run(
                [
                    "qemu-img",
                    "convert",
                    "-U",
                    "-O",
                    "raw",
                    str(self.disk_file(host, name)),
                    str(raw),
                ]
            )
            return file_sha256(raw)

    def start(
        self,
        host_name: str,
        spec: GuestSpec,
        *,
        wait: bool = True,
        disk_content: Path | None = None,
    ) -> Heartbeat | None:
        """Define and start the guest on ``host_name``; wait for its first heartbeat.

        With ``spec.disk_mib``, the guest gets a qcow2 disk: empty and of that size, or a
        copy of the raw image ``disk_content``. Nothing is left behind on failure: a domain that
        was defined is undefined again.
        """
        spec.validate()
        host = self.lab.host(host_name)
        existing = self.locate(spec.name, missing_ok=True)
        if existing is not None:
            raise GuestError(f"a domain named {spec.name!r} already exists on {existing.name}")
        xml = domain_xml(spec, guest_kernel(), kvm=self.lab.accelerator()[0] == "kvm")
        disk_file = self.disk_file(host.name, spec.name)
        for other in self.lab.hosts():  # a new guest starts with no heartbeats anywhere
            self.serial_log(other.name, spec.name).unlink(missing_ok=True)
        with connection(host.uri) as conn:
            try:
                if spec.disk_mib and disk_content is not None:
                    convert = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2"]
                    run([*convert, str(disk_content), str(disk_file)])
                elif spec.disk_mib:
                    create = ["qemu-img", "create", "-q", "-f", "qcow2", str(disk_file)]
                    run([*create, f"{spec.disk_mib}M"])
                dom = conn.defineXML(xml)
                try:
                    dom.create()
                except libvirt.libvirtError:
                    dom.undefine()
                    raise
            except libvirt.libvirtError as err:
                disk_file.unlink(missing_ok=True)
                raise GuestError(
                    f"cannot start guest {spec.name} on {host.name}: {err.get_error_message()}"
                ) from err
        if not wait:
            return None
        try:
            return self.wait_heartbeat(host.name, spec.name)
        except GuestError:
            self.destroy(spec.name)
            raise

    def probe_accelerator(self, host_name: str) -> tuple[str, str]:
        """('kvm' | 'tcg', why): KVM if a probe guest runs at full speed under it, else TCG.

        Boots a small unpaced guest under KVM on ``host_name`` for about a second and reads
        its write rate: a functional test, not a guess from module names, so that a KVM
        that works but emulates the guest (PVM with a non-PVM guest) is told apart from one
        that runs it natively. ``ORBIT_LAB_ACCEL`` skips the probe.
        """
        override = accelerator_override()
        if override is not None:
            return override
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg", "/dev/kvm is missing or not usable"
        host = self.lab.host(host_name)
        spec = GuestSpec(name=PROBE_NAME, memory_mib=64, wss_mib=16)
        self.serial_log(host.name, PROBE_NAME).unlink(missing_ok=True)
        with connection(host.uri) as conn:
            try:
                dom = conn.createXML(domain_xml(spec, guest_kernel(), kvm=True), 0)
            except libvirt.libvirtError as err:
                return "tcg", f"a KVM guest does not start: {err.get_error_message()}"
            try:
                self.wait_heartbeat(
                    host.name, PROBE_NAME, after_seq=PROBE_BEATS - 1, timeout_s=PROBE_TIMEOUT_S
                )
            except GuestError as err:
                return "tcg", f"the KVM probe guest failed: {err}"
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
        beats = self.heartbeats(host.name, PROBE_NAME)[1:]  # the first pass maps the pages
        self.serial_log(host.name, PROBE_NAME).unlink(missing_ok=True)
        return probe_verdict([hb.rate_kib_s for hb in beats])

    def wait_heartbeat(
        self,
        host: str,
        name: str,
        *,
        after_seq: int = 0,
        timeout_s: float = FIRST_HEARTBEAT_TIMEOUT_S,
    ) -> Heartbeat:
        """Wait for a heartbeat with seq > ``after_seq`` in the host's serial log."""
        deadline = time.monotonic() + timeout_s
        log_file = self.serial_log(host, name)
        while True:
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            if "ORBIT-GUEST error" in text:
                line = text[text.index("ORBIT-GUEST error") :].splitlines()[0]
                raise GuestError(f"guest {name} on {host} failed: {line}")
            beats = [hb for hb in map(parse_heartbeat, complete_lines(text)) if hb]
            if beats and beats[-1].seq > after_seq:
                return beats[-1]
            if time.monotonic() > deadline:
                raise GuestError(
                    f"guest {name} on {host} gave no heartbeat within {timeout_s:.0f} s"
                )
            time.sleep(HEARTBEAT_INTERVAL_S / 2)

    def wait_verified(
        self, host: str, name: str, *, timeout_s: float = VERIFY_PASS_TIMEOUT_S
    ) -> Heartbeat:
        """Wait until the guest on ``host`` completes one more full verification pass.

        A pass re-checks every page of the working set, so "errors == 0" afterwards covers
        all of its memory as it is now.
        """
        now = self.wait_heartbeat(host, name)
        deadline = time.monotonic() + timeout_s
        hb = now
        while hb.passes <= now.passes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(
                    f"guest {name} on {host} completed no verification pass in {timeout_s:.0f} s"
                )
            hb = self.wait_heartbeat(host, name, after_seq=hb.seq, timeout_s=left)
        return hb

    def heartbeats(self, host: str, name: str) -> list[Heartbeat]:
        """Every complete heartbeat the guest printed while it ran on ``host``."""
        log_file = self.serial_log(host, name)
        if not log_file.exists():
            return []
        lines = complete_lines(log_file.read_text(errors="replace"))
        return [hb for hb in map(parse_heartbeat, lines) if hb]

    def locate(self, name: str, *, missing_ok: bool = False) -> LabHost | None:
        """The host where domain ``name`` is active (running beats paused beats defined)."""
        rank = {"running": 0, "blocked": 0, "paused": 1}
        best: tuple[int, LabHost] | None = None
        for host in self.lab.hosts():
            with connection(host.uri) as conn:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                score = rank.get(state_name(dom), 2)
            if best is None or score < best[0]:
                best = (score, host)
        if best is None:
            if missing_ok:
                return None
            raise GuestError(f"no domain named {name!r} on any lab host")
        return best[1]

    def latest(self, name: str) -> tuple[str, Heartbeat]:
        """The latest heartbeat of guest ``name``, wherever it runs now."""
        host = self.locate(name)
        assert host is not None
        beats = self.heartbeats(host.name, name)
        if not beats:
            raise GuestError(f"guest {name} on {host.name} has printed no heartbeat yet")
        return host.name, beats[-1]

    def destroy(self, name: str) -> None:
        """Stop and undefine the domain on every host where it exists."""
        for host in self.lab.hosts():
            with connection(host.uri) as conn:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError as err:
                    raise GuestError(
                        f"cannot remove guest {name} on {host.name}: {err.get_error_message()}"
                    ) from err


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
