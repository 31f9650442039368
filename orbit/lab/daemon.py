"""One private libvirtd per lab host.

Each host's daemon runs inside its network namespace and a private mount namespace, where
bind mounts of per-host directories over ``/run`` (pid files, sockets, running domains'
state), ``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt``
make it a separate machine as far as libvirt can tell: its own config, domains, disk images
(``/var/lib/libvirt/images``) and logs. It listens on the host's lab address only: on TCP
without auth (``qemu+tcp://198.18.0.n/system``) and on TLS with the lab CA's certificates
(:mod:`orbit.lab.pki`; ``qemu+tls://198.18.0.n/system?pkipath=...``, where a client
certificate is the authentication). QEMU's migration streams use TLS when libvirt asks
(``VIR_MIGRATE_TLS``), with the host's certificate.

QEMU's stdout/stderr go to plain files (``stdio_handler = "file"``), so no virtlogd is
needed; cgroups, namespaces and the security driver are off because the lab runs the
daemons outside systemd, as root, on a machine that may itself be a container.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from orbit.errors import LabError
from orbit.lab.system import POLL_INTERVAL_S, pid_alive

LIBVIRTD_TCP_PORT = 16509
#: where libvirtd and QEMU load their modules from (Debian's multiarch paths)
MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/libvirt", "/usr/lib/x86_64-linux-gnu/qemu")
#: How long a fresh libvirtd gets to accept connections.
LIBVIRTD_START_TIMEOUT_S = 30.0
#: Connect timeout when probing whether a daemon answers.
PROBE_TIMEOUT_S = 1.0

#: Bind-mounted over the system's directories in the daemon's private mount namespace.
#: /run is a per-host directory too (not a tmpfs), so that a restarted libvirtd finds the
#: running QEMUs' state and monitor sockets and reconnects to them, as on a real host.
PER_HOST_DIRS = {
    "run": "/run",
    "etc": "/etc/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

#: libvirtd's log: warnings and errors; ``ORBIT_LAB_LOG_FILTERS`` (libvirt's syntax, e.g.
#: "1:qemu.qemu_migration 1:qemu.qemu_process") adds detail while debugging
LOG_LEVEL = 1 if os.environ.get("ORBIT_LAB_LOG_FILTERS") else 3

QEMU_CONF = """\
# Written by the ORBIT lab.
user = "root"
group = "root"
namespaces = [ ]
cgroup_controllers = [ ]
security_driver = "none"
stdio_handler = "file"
keepalive_interval = 1
keepalive_count = 3
"""


def libvirtd_binary() -> str:
    path = shutil.which("libvirtd") or (
        "/usr/sbin/libvirtd" if Path("/usr/sbin/libvirtd").exists() else None
    )
    if path is None:
        raise LabError(
            "libvirtd is not installed (Debian package libvirt-daemon); run 'make bootstrap'"
        )
    return path


def prepare_host_dir(host_dir: Path, address: str) -> None:
    """Create the host's private directories and its libvirtd.conf and qemu.conf."""
    for sub in PER_HOST_DIRS:
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("lib/images", "lib/qemu", "log/qemu", "cache/qemu"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)  # the Debian package makes these
    pki, migrate_tls = host_dir / "pki", host_dir / "migrate-tls"
    (host_dir / "etc" / "libvirtd.conf").write_text(
        "# Written by the ORBIT lab.\n"
        "listen_tcp = 1\n"
        "listen_tls = 1\n"
        'auth_tcp = "none"\n'
        'auth_tls = "none"\n'  # the client certificate, signed by the lab CA, is the proof
        f'ca_file = "{pki / "cacert.pem"}"\n'
        f'cert_file = "{pki / "servercert.pem"}"\n'
        f'key_file = "{pki / "serverkey.pem"}"\n'
        f'listen_addr = "{address}"\n'
        f'host_uuid = "{uuid.uuid4()}"\n'
        f'log_filters = "{os.environ.get("ORBIT_LAB_LOG_FILTERS", "")}"\n'
        f'log_outputs = "{LOG_LEVEL}:file:/var/log/libvirt/libvirtd.log"\n'
        "keepalive_interval = 1\n"
        "keepalive_count = 3\n"
    )
    (host_dir / "etc" / "qemu.conf").write_text(
        QEMU_CONF
        + f'migrate_tls_x509_cert_dir = "{migrate_tls}"\n'
        + "migrate_tls_x509_verify = 1\n"
    )


def seed_caps_cache(cache: Path, host_dir: Path) -> None:
    """Give a new host the QEMU capabilities an earlier lab probed.

    libvirt checks each cached file against the QEMU binary and its own version and probes
    again when they differ, so a stale seed costs time, never correctness.
    """
    if cache.is_dir():
        shutil.copytree(cache, host_dir / "cache" / "qemu" / "capabilities", dirs_exist_ok=True)


def save_caps_cache(host_dir: Path, cache: Path) -> None:
    """Keep the capabilities the host's libvirtd probed, for the next lab."""
    probed = host_dir / "cache" / "qemu" / "capabilities"
    if probed.is_dir() and any(probed.iterdir()):
        shutil.copytree(probed, cache, dirs_exist_ok=True)


def stack_root() -> Path | None:
    """Another QEMU/libvirt for the lab's daemons: ``ORBIT_LAB_STACK``, a directory holding
    those packages unpacked (``scripts/lab-stack.sh`` makes one); None: the system's."""
    raw = os.environ.get("ORBIT_LAB_STACK", "")
    if not raw:
        return None
    root = Path(raw)
    if not (root / "usr" / "sbin" / "libvirtd").exists():
        raise LabError(
            f"ORBIT_LAB_STACK={raw} holds no usr/sbin/libvirtd: run scripts/lab-stack.sh"
        )
    return root


def start_libvirtd(netns: str, host_dir: Path) -> int:
    """Start the host's libvirtd in namespace ``netns``; return its PID.

    ``ip netns exec``, ``unshare`` and ``sh -c 'exec …'`` all exec in place, so the PID of
    the child is libvirtd's own. With :func:`stack_root`, that stack's ``/usr`` is laid
    over the system's (overlayfs) in the daemon's mount namespace only: its libvirtd and
    the QEMUs it starts are that stack's, at the paths they were built for.
    """
    mounts = []
    stack = stack_root()
    if stack is not None:
        mounts.append(
            f"mount -t overlay orbit-stack -o lowerdir={shlex.quote(str(stack / 'usr'))}:/usr /usr"
        )
        # only the stack's modules: the system's would be loaded too, and fail
        for modules in MODULE_DIRS:
            mounts.append(f"mount --bind {shlex.quote(str(stack / modules.lstrip('/')))} {modules}")
    for sub, target in PER_HOST_DIRS.items():
        mounts.append(f"mount --bind {shlex.quote(str(host_dir / sub))} {target}")
    script = " && ".join(mounts) + f" && exec {shlex.quote(libvirtd_binary())} --listen"
    daemon_cmd = ["ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private",
                  "sh", "-c", script]  # fmt: skip
    pid_file = host_dir / "libvirtd.pid-reaper"
    pid_file.unlink(missing_ok=True)
    with open(host_dir / "libvirtd.stdout", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-c", REAPER, str(pid_file), *daemon_cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + LIBVIRTD_START_TIMEOUT_S
    while not pid_file.exists() or not pid_file.read_text().strip():
        if time.monotonic() > deadline:
            raise LabError(
                f"libvirtd for {netns} did not start: {_tail(host_dir / 'libvirtd.stdout')}"
            )
        time.sleep(0.01)
    return int(pid_file.read_text())


#: The parent of each lab libvirtd: a child subreaper that reaps every process orphaned
#: below it at once. libvirt daemonizes each QEMU (it is orphaned at start) and, when it
#: stops one (destroy, the source after a migration), waits until the PID is gone: with
#: the orphan left to this machine's PID 1, which reaps late, that wait was 1-2 s per QEMU
#: (a systemd host reaps at once). Writes libvirtd's PID (``ip netns exec``, ``unshare``
#: and ``sh -c 'exec ...'`` exec in place) to argv[1], runs argv[2:], exits with it.
REAPER = """
import ctypes, os, sys
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(pid))
os.replace(tmp, sys.argv[1])
while True:
    try:
        child, status = os.wait()
    except ChildProcessError:
        sys.exit(0)
    except InterruptedError:
        continue
    if child == pid:
        sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def wait_until_listening(pid: int, address: str, host_dir: Path) -> None:
    """Return once libvirtd accepts TCP connections; raise LabError if it dies or stalls."""
    deadline = time.monotonic() + LIBVIRTD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            tail = _tail(host_dir / "libvirtd.stdout")
            raise LabError(f"libvirtd for {address} exited at start: {tail}")
        if answers(address):
            return
        time.sleep(POLL_INTERVAL_S)
    raise LabError(f"libvirtd for {address} did not listen within {LIBVIRTD_START_TIMEOUT_S:.0f} s")


def answers(address: str) -> bool:
    """True if something accepts a TCP connection on the host's libvirtd port."""
    try:
        with socket.create_connection((address, LIBVIRTD_TCP_PORT), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
