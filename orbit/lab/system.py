"""Small helpers around external commands and processes, used by the lab only.

Every command goes through :func:`run`, which maps a non-zero exit to
:class:`~orbit.errors.CommandFailed` carrying the first line of stderr. Processes are only
ever ended by PID, and only those the lab started (found through the network namespaces the
lab created): never by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from orbit.errors import CommandFailed, LabError

log = logging.getLogger(__name__)

#: How long a process gets to exit after SIGTERM before it is sent SIGKILL.
TERM_GRACE_S = 5.0
#: How often a waiting loop checks its condition.
POLL_INTERVAL_S = 0.05


def run(
    argv: list[str], *, check: bool = True, timeout_s: float = 30.0, capture_stderr: bool = False
) -> str:
    """Run ``argv`` and return its stdout (plus stderr if ``capture_stderr``).

    Raise CommandFailed when it exits non-zero and ``check`` is set.
    """
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as err:
        raise CommandFailed(argv, 127, f"{argv[0]}: not installed") from err
    except subprocess.TimeoutExpired as err:
        raise CommandFailed(argv, -1, f"timed out after {timeout_s:.0f} s") from err
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return proc.stdout + (proc.stderr if capture_stderr else "")


#: How long :func:`wait_for` waits for a condition by default.
WAIT_TIMEOUT_S = 10.0


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds; raise LabError naming ``what`` on time-out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def netns_inode(netns: str) -> int | None:
    """The inode that identifies network namespace ``netns``, or None if it is gone."""
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(netns: str) -> list[int]:
    """PIDs of every process whose network namespace is ``netns`` (libvirtd, QEMU, ...)."""
    inode = netns_inode(netns)
    if inode is None:
        return []
    wanted = f"net:[{inode}]"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") == wanted:
                pids.append(int(entry.name))
        except OSError:  # the process ended meanwhile, or is a kernel thread
            continue
    return pids


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


#: How long :func:`terminate` waits for an ended process to be reaped (leave the process
#: table). A daemon whose parent exited is reaped by PID 1, which may take a second.
REAP_WAIT_S = 3.0


def terminate(pids: list[int], *, grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM each PID, wait up to ``grace_s``, then SIGKILL the ones still alive.

    Returns once every process has ended and left the process table (reaped by us or by
    PID 1), so that nothing of them shows in ``ps`` any more; a zombie that PID 1 does not
    reap within ``REAP_WAIT_S`` is only logged.
    """
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        _reap(pids)
        time.sleep(POLL_INTERVAL_S)
    for pid in pids:
        if pid_alive(pid):
            log.warning(
                "process did not end on SIGTERM pid=%d grace_s=%.1f; sending SIGKILL", pid, grace_s
            )
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        _reap(pids)
        time.sleep(POLL_INTERVAL_S)
    deadline = time.monotonic() + REAP_WAIT_S
    while any(Path(f"/proc/{p}").exists() for p in pids):
        _reap(pids)
        if time.monotonic() > deadline:
            log.warning("ended processes are not reaped yet (zombies) wait_s=%.1f", REAP_WAIT_S)
            break
        time.sleep(POLL_INTERVAL_S)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pids: list[int]) -> None:
    """Collect our own children among ``pids`` so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
