"""A migration's phase: one enum, one table of allowed transitions, one function to move.

::

    queued -> preparing -> running-precopy -> running-postcopy -> completing -> completed
                 |              |    \\                |     ^
                 v              v     \\               v     |
               failed    failed|cancelled \\-> completing  postcopy-paused -> error

- ``cancelled``: the operator or the policy aborted pre-copy; the VM runs on the source.
- ``failed``: the migration ended without moving the VM; it runs on the source.
- ``postcopy-paused``: post-copy broke (link, daemon); the VM's state is split between the
  hosts, both paused or the destination running without its missing pages. It is never
  aborted from here, only resumed (or left for an operator).
- ``error``: the engine lost track in a state that needs an operator.

A retry is a new migration record, never a transition back from a final phase.
"""

from __future__ import annotations

from enum import StrEnum

from orbit.errors import InvalidTransition


class Phase(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING_PRECOPY = "running-precopy"
    RUNNING_POSTCOPY = "running-postcopy"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    POSTCOPY_PAUSED = "postcopy-paused"
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def in_postcopy(self) -> bool:
        """True once the VM's memory is split between the hosts: abort is then refused."""
        return self in (Phase.RUNNING_POSTCOPY, Phase.POSTCOPY_PAUSED)


_FINAL = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED, Phase.ERROR})

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.PREPARING, Phase.CANCELLED, Phase.FAILED}),
    Phase.PREPARING: frozenset({Phase.RUNNING_PRECOPY, Phase.FAILED, Phase.CANCELLED}),
    Phase.RUNNING_PRECOPY: frozenset(
        {
            Phase.RUNNING_POSTCOPY,
            Phase.COMPLETING,
            Phase.COMPLETED,
            Phase.FAILED,
            Phase.CANCELLED,
            Phase.ERROR,
        }
    ),
    Phase.RUNNING_POSTCOPY: frozenset(
        {Phase.COMPLETING, Phase.COMPLETED, Phase.POSTCOPY_PAUSED, Phase.ERROR}
    ),
    Phase.POSTCOPY_PAUSED: frozenset({Phase.RUNNING_POSTCOPY, Phase.COMPLETED, Phase.ERROR}),
    Phase.COMPLETING: frozenset(
        {Phase.COMPLETED, Phase.FAILED, Phase.POSTCOPY_PAUSED, Phase.ERROR}
    ),
    Phase.COMPLETED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.CANCELLED: frozenset(),
    Phase.ERROR: frozenset(),
}


def transition(current: Phase, new: Phase) -> Phase:
    """Return ``new`` if the table allows ``current -> new``; raise InvalidTransition if not.

    Staying in the same phase is allowed (a no-op), so repeated events are harmless.
    """
    if new == current or new in ALLOWED[current]:
        return new
    raise InvalidTransition(f"migration cannot go from {current.value} to {new.value}")
