"""Rows to what the pages show: numbers with units, and which migration controls apply.

Formatting lives here only: the migration page's first render and the JSON it then polls
both come from :func:`migration_state`, so the script never formats a number itself (it
only scales the chart's axes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orbit.api.views import paused_for_s, resume_attempts
from orbit.db.models import Migration, MigrationSample
from orbit.migration.model import Policy
from orbit.migration.phase import Phase

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
NONE = "—"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return NONE
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB or n == 0:
        return f"{n / MIB:.1f} MiB"
    return f"{n / KIB:.0f} KiB"


def fmt_mib(mib: int | None) -> str:
    return fmt_bytes(None if mib is None else mib * MIB)


def fmt_rate(bytes_s: int | None) -> str:
    return NONE if bytes_s is None else f"{fmt_bytes(bytes_s)}/s"


def fmt_seconds(s: float | None) -> str:
    return NONE if s is None else f"{s:.1f} s"


def fmt_ms(ms: int | None) -> str:
    return NONE if ms is None else f"{ms} ms"


def fmt_time(ts: datetime | None) -> str:
    return NONE if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Control:
    """Whether an operator action is offered now, and if not, why (shown beside it)."""

    allowed: bool
    reason: str = ""


def abort_control(phase: Phase) -> Control:
    """Abort is offered only before post-copy.

    The conductor enforces the rule (a migration in post-copy is never aborted: the VM's
    memory is then split between the hosts); the dashboard only explains it.
    """
    if phase.is_final:
        return Control(False, f"The migration is over ({phase.value}).")
    if phase.in_postcopy:
        return Control(
            False,
            "Abort is not possible in post-copy: the VM's memory is split between the "
            "source and destination hosts. Force complete it or let it finish.",
        )
    if phase is Phase.COMPLETING:
        return Control(False, "The migration is completing.")
    return Control(True)


def force_complete_control(phase: Phase) -> Control:
    """Force complete is offered while pre-copy runs (post-copy finishes by itself)."""
    if phase.is_final:
        return Control(False, f"The migration is over ({phase.value}).")
    if phase is Phase.QUEUED:
        return Control(False, "The migration has not started yet.")
    if phase.in_postcopy:
        return Control(False, "Already in post-copy: it completes as the remaining pages arrive.")
    if phase is Phase.COMPLETING:
        return Control(False, "The migration is completing.")
    return Control(True)


def resume_control(m: Migration) -> Control:
    """Resume is offered while post-copy is paused; the reason says why and for how long."""
    if m.phase is not Phase.POSTCOPY_PAUSED:
        return Control(False, "Only a paused post-copy can be resumed.")
    attempts = resume_attempts(m)
    cause = m.error or "the migration stream broke"
    paused_s = paused_for_s(m)
    since = f" for {paused_s:.0f} s" if paused_s is not None else ""
    return Control(
        True,
        f"Post-copy is paused{since} ({cause}); ORBIT retries on its own with back-off "
        f"({attempts} attempt(s) so far). Resume now retries at once.",
    )


#: decision actions shown under another name (the others are shown as recorded)
ACTION_LABELS = {"plan": "auto's plan"}


def action_label(action: str | None) -> str:
    return ACTION_LABELS.get(action or "", action or "")


def prediction_text(m: Migration) -> str:
    """``Predicted 10.2 s (postcopy-after-0) 1.1 s in, took 9.8 s``, or why there is none."""
    plan = m.prediction
    if not plan:
        if m.policy != Policy.AUTO.value:
            return f"No prediction: policy {m.policy} does not plan."
        return "Not measured." if m.phase.is_final else "Measuring the guest…"
    took = fmt_seconds(m.total_s)
    if m.total_s is not None and m.phase is not Phase.COMPLETED:
        took += f" ({m.phase.value})"
    made = plan.get("made_at_s")
    when = f" {fmt_seconds(made)} in" if made else ""
    predicted = f"Predicted {fmt_seconds(plan.get('total_s'))} ({plan.get('strategy')})"
    return f"{predicted}{when}, took {took}"


def plan_reason(m: Migration) -> str:
    """The one-line reason recorded with auto's plan ("" if there is none)."""
    return next((str(d.get("reason")) for d in m.decisions if d.get("action") == "plan"), "")


def _rate_from(plan: dict[str, Any] | None, rate_key: str, how_key: str) -> str:
    """A planned rate with where it came from: ``3.71 GiB/s (dirty-bitmap)``."""
    if not plan or plan.get(rate_key) is None:
        return NONE
    how = plan.get(how_key)
    return fmt_rate(int(plan[rate_key])) + (f" ({how})" if how else "")


def progress_pct(m: Migration) -> int:
    """How much of the current pass over memory is sent (100 once completed)."""
    if m.phase is Phase.COMPLETED:
        return 100
    total = m.memory_total_bytes
    if total <= 0:
        return 0
    return max(0, min(100, round(100 * (total - m.memory_remaining_bytes) / total)))


def migration_state(m: Migration, latest: MigrationSample | None) -> dict[str, Any]:
    """The live part of the migration page, as JSON: raw numbers and their display text."""
    phase = m.phase
    abort, force = abort_control(phase), force_complete_control(phase)
    resume = resume_control(m)
    bandwidth = latest.bandwidth_bytes_s if latest is not None else None
    dirty = latest.dirty_rate_bytes_s if latest is not None else None
    pct = progress_pct(m)
    return {
        "id": m.id,
        "status": phase.value,
        "final": phase.is_final,
        "in_postcopy": phase.in_postcopy,
        "switch_at_s": m.switch_at_s,
        "total_s": m.total_s,
        "memory_total_bytes": m.memory_total_bytes,
        "progress_pct": pct,
        "controls": {
            "abort": {"allowed": abort.allowed, "reason": abort.reason},
            "force_complete": {"allowed": force.allowed, "reason": force.reason},
            "resume": {"allowed": resume.allowed, "reason": resume.reason},
        },
        "decisions": [
            {
                "at": fmt_seconds(d.get("at_s")),
                "action": d.get("action"),
                "label": action_label(d.get("action")),
                "reason": d.get("reason"),
            }
            for d in m.decisions
        ],
        "text": {
            "status": phase.value,
            "iteration": str(m.iterations),
            "memory_remaining": fmt_bytes(m.memory_remaining_bytes),
            "memory_processed": fmt_bytes(m.memory_processed_bytes),
            "memory_total": fmt_bytes(m.memory_total_bytes),
            "progress": f"{pct} %",
            "transfer_rate": fmt_rate(bandwidth),
            "dirty_rate": fmt_rate(dirty),
            "postcopy_requests": str(m.postcopy_requests),
            "switch_at": fmt_seconds(m.switch_at_s) if m.switch_at_s is not None else "not yet",
            "downtime": fmt_ms(m.downtime_ms),
            "total_time": fmt_seconds(m.total_s),
            "finished_at": fmt_time(m.finished_at),
            "error": m.error or "",
            "prediction": prediction_text(m),
            "plan_reason": plan_reason(m),
            "plan_dirty_rate": _rate_from(m.prediction, "dirty_rate_bytes_s", "dirty_rate_mode"),
            "plan_link_rate": _rate_from(m.prediction, "link_bytes_s", "link_source"),
            "achieved_link_rate": fmt_rate(m.transfer_rate_bytes_s),
        },
    }
