"""Where a benchmark ran: written at the top of every result file and printed above its table.

A figure without its environment cannot be compared: the accelerator (KVM or TCG), the
kernel, QEMU, libvirt and libvirt-python, the Debian release, the link shaping and the
commit of ORBIT that produced it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import libvirt

from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import connection

CHECKOUT = Path(__file__).resolve().parents[1]


def _first_line(argv: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    except FileNotFoundError:
        return "not installed"
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


def _libvirt_version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    commit = _first_line(["git", "rev-parse", "--short=12", "HEAD"], CHECKOUT)
    dirty = _first_line(["git", "status", "--porcelain", "--untracked-files=no"], CHECKOUT)
    return commit + ("+changes" if dirty not in ("", "unknown") else "")


def describe(lab: Lab, link: str) -> dict[str, Any]:
    """The environment of a benchmark run on ``lab`` whose link is shaped as ``link``."""
    accel, why = lab.accelerator()
    # what the lab's daemons run (ORBIT_LAB_STACK may give them another stack than the
    # system's), asked of the first host's libvirtd
    with connection(lab.hosts()[0].uri) as conn:
        qemu = f"QEMU {_libvirt_version(conn.getVersion())}"
        libvirtd = _libvirt_version(conn.getLibVersion())
    debian = Path("/etc/debian_version")
    return {
        "accelerator": accel,
        "accelerator_why": why,
        "kernel": platform.release(),
        "debian": debian.read_text().strip() if debian.exists() else "not Debian",
        "qemu": qemu,
        "libvirt": libvirtd,
        "libvirt_client": _libvirt_version(libvirt.getVersion()),
        "libvirt_python": _package_version("libvirt-python"),
        "link": link,
        "cpus": os.cpu_count() or 0,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def header(env: dict[str, Any]) -> str:
    """One line for the top of a table."""
    return (
        f"guests on {env['accelerator']} ({env['accelerator_why']}); kernel {env['kernel']}, "
        f"Debian {env['debian']}, {env['qemu']}, libvirt {env['libvirt']} "
        f"(python {env['libvirt_python']}), {env['cpus']} CPUs, link {env['link']}, "
        f"ORBIT {env['commit']}, {env['date']}"
    )
