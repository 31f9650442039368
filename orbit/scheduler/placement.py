"""Pick a destination host: a pure function over a snapshot of the hosts.

Rule: among the hosts that are up, are not the VM's source and have at least the VM's
memory free, take the one with the most free memory (ties: by name, so the choice is
stable). No candidate → :class:`~orbit.errors.NoValidHost`, whose message says why each
host was rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orbit.errors import NoValidHost


@dataclass(frozen=True)
class HostView:
    name: str
    up: bool
    memory_free_mib: int


def pick_host(hosts: Sequence[HostView], *, source: str, memory_mib: int) -> str:
    rejected: list[str] = []
    candidates: list[HostView] = []
    for h in hosts:
        if h.name == source:
            continue
        if not h.up:
            rejected.append(f"{h.name} is down")
        elif h.memory_free_mib < memory_mib:
            rejected.append(f"{h.name} has {h.memory_free_mib} MiB free")
        else:
            candidates.append(h)
    if not candidates:
        why = "; ".join(rejected) if rejected else "no other host is registered"
        raise NoValidHost(f"no host can take a VM of {memory_mib} MiB: {why}")
    best = min(candidates, key=lambda h: (-h.memory_free_mib, h.name))
    return best.name
