"""The lab: several hypervisor hosts on one machine, for tests, benchmarks and the demo.

A lab is a singleton per machine (the bridge and namespace names are global). Its state
lives in a directory (default ``/var/lib/orbit-lab``, or ``$ORBIT_LAB_DIR``): ``state.json``
names every host and the PID of its libvirtd, and ``hosts/hN/`` holds each host's private
libvirt directories. The state file is written *before* anything is created, so
:meth:`Lab.down` can remove everything an earlier run made even if that run crashed half-way.

Usage::

    lab = Lab.from_env()
    lab.up(2)                       # h1 = 198.18.0.1, h2 = 198.18.0.2
    lab.host("h2").uri              # 'qemu+tcp://198.18.0.2/system'
    lab.host("h2").tls_uri(lab.lab_dir)  # 'qemu+tls://198.18.0.2/system?pkipath=...'
    lab.shape("h2", Shaping(rate="400mbit"))
    lab.down()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orbit.errors import ConfigError, HostNotFound, LabError, LabStateError
from orbit.lab import daemon, libvirt_util, network, pki
from orbit.lab.system import pid_alive, pids_in_netns, terminate, wait_for
from orbit.virt.libvirt_driver import resume_defect_of

log = logging.getLogger(__name__)

DEFAULT_LAB_DIR = Path("/var/lib/orbit-lab")
MAX_HOSTS = 16
STATE_VERSION = 1
#: libvirt's cache of QEMU's capabilities, kept across labs: probing QEMU costs ~5 s a host.
CAPS_CACHE = "qemu-capabilities"


@dataclass
class LabHost:
    """One hypervisor host of the lab."""

    name: str
    index: int
    libvirtd_pid: int | None = None

    @property
    def address(self) -> str:
        return network.host_address(self.index)

    @property
    def netns(self) -> str:
        return self.name

    @property
    def uri(self) -> str:
        """libvirt URI the control plane uses to reach this host's libvirtd."""
        return f"qemu+tcp://{self.address}/system"

    def tls_uri(self, lab_dir: Path) -> str:
        """The same libvirtd over TLS, authenticated by the lab's client certificate."""
        return f"qemu+tls://{self.address}/system?pkipath={pki.client_dir(lab_dir)}"

    @property
    def migration_uri(self) -> str:
        """Where QEMU's migration stream to this host must go (every host has one hostname)."""
        return f"tcp://{self.address}"


@dataclass
class HostStatus:
    name: str
    address: str
    uri: str
    libvirtd_pid: int | None
    libvirtd_alive: bool
    answers: bool
    link_up: bool
    shaping: str
    domains: dict[str, str] = field(default_factory=dict)


class Lab:
    """Create, inspect, shape and remove the lab. Every method is safe to call repeatedly."""

    def __init__(self, lab_dir: Path) -> None:
        self.lab_dir = lab_dir
        self.state_file = lab_dir / "state.json"

    def _caps_cache(self) -> Path:
        """Where QEMU capabilities probed by earlier labs are kept, one place per stack."""
        stack = daemon.stack_root()
        if stack is None:
            return self.lab_dir / CAPS_CACHE
        return self.lab_dir / f"{CAPS_CACHE}-{hashlib.sha256(bytes(stack)).hexdigest()[:12]}"

    @classmethod
    def from_env(cls) -> Lab:
        return cls(Path(os.environ.get("ORBIT_LAB_DIR", str(DEFAULT_LAB_DIR))))

    # -- state ---------------------------------------------------------------------------

    def is_up(self) -> bool:
        return self.state_file.exists()

    def hosts(self) -> list[LabHost]:
        """The lab's hosts, in order; raise LabStateError when no lab is up."""
        if not self.is_up():
            raise LabStateError("no lab is up; run 'orbit lab up --hosts 2' first")
        try:
            data = json.loads(self.state_file.read_text())
            return [LabHost(**h) for h in data["hosts"]]
        except (ValueError, KeyError, TypeError) as err:
            raise LabStateError(
                f"lab state file {self.state_file} is unreadable; run 'orbit lab down'"
            ) from err

    def host(self, name: str) -> LabHost:
        for h in self.hosts():
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts())
        raise HostNotFound(f"no lab host named {name!r} (hosts: {known})")

    def host_dir(self, name: str) -> Path:
        return self.lab_dir / "hosts" / name

    def accelerator(self) -> tuple[str, str]:
        """('kvm' | 'tcg', why) for the lab's guests: ``ORBIT_LAB_ACCEL``, else the probe's
        verdict at ``up`` (see ``Guests.probe_accelerator``)."""
        from orbit.lab.guest import accelerator_override

        override = accelerator_override()
        if override is not None:
            return override
        if not self.is_up():
            raise LabStateError("no lab is up; run 'orbit lab up --hosts 2' first")
        accel = self._read_state().get("accelerator")
        if not isinstance(accel, dict) or accel.get("name") not in ("kvm", "tcg"):
            return "tcg", "the lab was made without a probe (older state file)"
        return str(accel["name"]), str(accel.get("why", ""))

    def _read_state(self) -> dict[str, object]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, hosts: list[LabHost], accelerator: tuple[str, str] | None = None) -> None:
        """Write the state file; the accelerator verdict is kept unless a new one is given."""
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        state: dict[str, object] = {
            "version": STATE_VERSION,
            "bridge": network.BRIDGE,
            "hosts": [asdict(h) for h in hosts],
        }
        if accelerator is not None:
            state["accelerator"] = {"name": accelerator[0], "why": accelerator[1]}
        elif "accelerator" in (old := self._read_state()):
            state["accelerator"] = old["accelerator"]
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    # -- lifecycle -----------------------------------------------------------------------

    def up(self, n_hosts: int) -> list[LabHost]:
        """Create ``n_hosts`` hosts h1…hN, each with a listening libvirtd.

        Fails without changing anything if a lab is already up or a name it needs is taken;
        if a later step fails, everything made so far is removed again.
        """
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise ConfigError(f"--hosts must be between 1 and {MAX_HOSTS}, got {n_hosts}")
        from orbit.lab.guest import accelerator_override

        accelerator_override()  # a bad ORBIT_LAB_ACCEL fails here, before anything is made
        if self.is_up():
            names = ", ".join(h.name for h in self.hosts())
            raise LabStateError(f"a lab is already up (hosts {names}); run 'orbit lab down' first")
        hosts = [LabHost(name=f"h{i}", index=i) for i in range(1, n_hosts + 1)]
        self._refuse_foreign_leftovers(hosts)
        self._save(hosts)  # before creating anything: down() must find it after a crash
        try:
            network.create_bridge()
            ca = pki.new_authority(self.lab_dir)
            for h in hosts:
                network.create_host_net(h.name, h.index)
                hdir = self.host_dir(h.name)
                if hdir.exists():
                    shutil.rmtree(hdir)
                daemon.prepare_host_dir(hdir, h.address)
                pki.issue_host(ca, h.name, h.address, hdir)
                daemon.seed_caps_cache(self._caps_cache(), hdir)
                h.libvirtd_pid = daemon.start_libvirtd(h.netns, hdir)
                self._save(hosts)
            for h in hosts:
                assert h.libvirtd_pid is not None
                daemon.wait_until_listening(h.libvirtd_pid, h.address, self.host_dir(h.name))
                libvirt_util.ensure_images_pool(h.uri)
                defect = resume_defect_of(libvirt_util.lib_version(h.uri))
                tcp = network.tune_tcp(h.name, resumable=defect is None)
                log.info("lab tcp host=%s settings=%s", h.name, tcp or "the kernel's defaults")
                if defect is not None:
                    log.warning("lab host cannot resume post-copy host=%s: %s", h.name, defect)
            from orbit.lab.guest import Guests  # guest.py builds on this module

            accel = Guests(self).probe_accelerator(hosts[0].name)
            self._save(hosts, accel)
        except BaseException:
            log.error("lab up failed; removing what was created")
            self.down()
            raise
        log.info(
            "lab up hosts=%d addresses=%s accelerator=%s (%s)",
            n_hosts,
            ",".join(h.address for h in hosts),
            *accel,
        )
        return hosts

    def _refuse_foreign_leftovers(self, hosts: list[LabHost]) -> None:
        taken = [network.BRIDGE] if network.link_exists(network.BRIDGE) else []
        for h in hosts:
            if network.netns_exists(h.netns):
                taken.append(f"netns {h.netns}")
            if network.link_exists(network.veth_name(h.name)):
                taken.append(network.veth_name(h.name))
        if taken:
            raise LabStateError(
                f"cannot create the lab: {', '.join(taken)} already exist(s) but no lab state "
                f"is in {self.lab_dir}; remove them by hand"
            )

    def down(self) -> list[str]:
        """Remove every namespace, veth, bridge, libvirtd and QEMU the lab created.

        Works from the state file alone, so it also cleans up after a crashed run. Returns
        a list of what was removed (for the CLI to print).
        """
        if not self.is_up():
            return []
        try:
            hosts = self.hosts()
        except LabStateError:
            hosts = []
        removed: list[str] = []
        errors: list[str] = []
        for h in hosts:
            pids = pids_in_netns(h.netns)
            if h.libvirtd_pid and _is_lab_libvirtd(h.libvirtd_pid) and h.libvirtd_pid not in pids:
                pids.append(h.libvirtd_pid)  # started but not yet inside the namespace
            if pids:
                terminate(pids)
                removed.append(f"{h.name}: {len(pids)} process(es)")
            try:
                network.delete_host_net(h.name)
                removed.append(f"{h.name}: namespace and veth")
            except LabError as err:
                errors.append(str(err))
        try:
            network.delete_bridge()
        except LabError as err:
            errors.append(str(err))
        if errors:
            raise LabError(f"lab down left something behind: {errors[0]}")
        keep = os.environ.get("ORBIT_LAB_KEEP_LOGS", "")
        for h in hosts:
            daemon.save_caps_cache(self.host_dir(h.name), self._caps_cache())
            if keep:  # a debugging aid: the daemons' and QEMU's logs outlive the lab
                shutil.copytree(
                    self.host_dir(h.name) / "log",
                    Path(keep) / time.strftime("%H%M%S") / h.name,
                    dirs_exist_ok=True,
                )
        shutil.rmtree(self.lab_dir / "hosts", ignore_errors=True)
        shutil.rmtree(self.lab_dir / "pki", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        return removed

    @contextmanager
    def session(self, n_hosts: int) -> Iterator[list[LabHost]]:
        """A fresh lab for the block, always removed afterwards (tests, benchmarks, demo).

        A lab left behind by a crashed earlier run is removed first.
        """
        if self.is_up():
            log.warning("removing a lab left over from an earlier run dir=%s", self.lab_dir)
            self.down()
        hosts = self.up(n_hosts)
        try:
            yield hosts
        finally:
            self.down()

    # -- inspection and faults -----------------------------------------------------------

    def status(self) -> list[HostStatus]:
        from orbit.lab import libvirt_util  # libvirt is imported only where it is needed

        result = []
        for h in self.hosts():
            answers = daemon.answers(h.address)
            domains = libvirt_util.list_domains(h.uri) if answers else {}
            result.append(
                HostStatus(
                    name=h.name,
                    address=h.address,
                    uri=h.uri,
                    libvirtd_pid=h.libvirtd_pid,
                    libvirtd_alive=bool(h.libvirtd_pid and pid_alive(h.libvirtd_pid)),
                    answers=answers,
                    link_up=network.link_is_up(h.name),
                    shaping=network.current_shaping(h.name),
                    domains=domains,
                )
            )
        return result

    def shape(self, name: str, shaping: network.Shaping) -> None:
        """Shape host ``name``'s link (both directions); an empty Shaping clears it."""
        shaping.validate()
        network.apply_shaping(self.host(name).name, shaping)
        log.info(
            "lab link host=%s rate=%s delay=%s loss=%s",
            name,
            shaping.rate,
            shaping.delay,
            shaping.loss,
        )

    def cut(self, name: str) -> None:
        """Take host ``name``'s link down: every connection to it stalls until restore."""
        network.set_link_up(self.host(name).name, False)
        log.info("lab link cut host=%s", name)

    def restore(self, name: str) -> None:
        network.set_link_up(self.host(name).name, True)
        log.info("lab link restored host=%s", name)

    def restart_libvirtd(self, name: str) -> int:
        """Kill host ``name``'s libvirtd (SIGKILL, as a crash) and start it again.

        Its QEMUs keep running; the new daemon finds them through the per-host ``/run`` and
        reconnects. Returns the new daemon's PID.
        """
        hosts = self.hosts()
        host = next((h for h in hosts if h.name == name), None)
        if host is None:
            raise HostNotFound(f"no lab host named {name!r}")
        if host.libvirtd_pid and _is_lab_libvirtd(host.libvirtd_pid):
            os.kill(host.libvirtd_pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(host.libvirtd_pid or 0), timeout_s=10.0,
                     what=f"libvirtd of {name} to exit")  # fmt: skip
        hdir = self.host_dir(name)
        host.libvirtd_pid = daemon.start_libvirtd(host.netns, hdir)
        self._save(hosts)
        daemon.wait_until_listening(host.libvirtd_pid, host.address, hdir)
        log.info("lab libvirtd restarted host=%s pid=%d", name, host.libvirtd_pid)
        return host.libvirtd_pid


def _is_lab_libvirtd(pid: int) -> bool:
    """True if ``pid`` is alive and is (or is about to exec) a libvirtd the lab started.

    The state file outlives a reboot; its PIDs may since belong to anything. Only a process
    whose command line runs libvirtd (the ``ip netns exec … sh -c 'exec libvirtd'`` chain)
    is ever signalled.
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"libvirtd" in cmdline
