"""What the migration page offers in each phase, and how numbers are shown."""

from __future__ import annotations

import pytest

from orbit.dashboard.present import (
    abort_control,
    fmt_bytes,
    fmt_rate,
    fmt_seconds,
    force_complete_control,
    migration_state,
)
from orbit.db.models import Migration
from orbit.migration.phase import Phase

#: phase -> (abort offered, force complete offered)
OFFERED = {
    Phase.QUEUED: (True, False),
    Phase.PREPARING: (True, True),
    Phase.RUNNING_PRECOPY: (True, True),
    Phase.RUNNING_POSTCOPY: (False, False),
    Phase.POSTCOPY_PAUSED: (False, False),
    Phase.COMPLETING: (False, False),
    Phase.COMPLETED: (False, False),
    Phase.FAILED: (False, False),
    Phase.CANCELLED: (False, False),
    Phase.ERROR: (False, False),
}


@pytest.mark.parametrize("phase", list(Phase))
def test_controls_per_phase_say_why_not(phase: Phase) -> None:
    abort, force = abort_control(phase), force_complete_control(phase)
    assert (abort.allowed, force.allowed) == OFFERED[phase]
    for control in (abort, force):
        assert bool(control.reason) != control.allowed  # a reason exactly when refused


def test_abort_in_post_copy_explains_the_split_memory() -> None:
    assert (
        "split between the source and destination" in abort_control(Phase.RUNNING_POSTCOPY).reason
    )


def test_numbers_carry_units() -> None:
    assert fmt_bytes(0) == "0.0 MiB"
    assert fmt_bytes(512 * 1024) == "512 KiB"
    assert fmt_bytes(256 * 1024 * 1024) == "256.0 MiB"
    assert fmt_bytes(3 * 1024**3) == "3.00 GiB"
    assert fmt_rate(80 * 1024 * 1024) == "80.0 MiB/s"
    assert fmt_seconds(3.21) == "3.2 s"
    assert fmt_bytes(None) == fmt_rate(None) == fmt_seconds(None) == "—"


@pytest.mark.parametrize("phase", list(Phase))
def test_resume_is_offered_only_while_post_copy_is_paused(phase: Phase) -> None:
    from orbit.dashboard.present import resume_control

    m = Migration(status=phase.value, error="link down", decisions=[
        {"at_s": 5.0, "action": "pause-postcopy", "reason": "stalled", "source": "policy"},
        {"at_s": 6.0, "action": "resume-postcopy", "reason": "attempt 1", "source": "engine"},
    ])  # fmt: skip
    control = resume_control(m)
    assert control.allowed == (phase is Phase.POSTCOPY_PAUSED)
    if control.allowed:
        assert "link down" in control.reason and "1 attempt(s)" in control.reason


MIB = 1024 * 1024
#: auto's plan as Plan.to_dict() records it
PLAN = {
    "strategy": "postcopy-after-0",
    "total_s": 10.24,
    "postcopy_s": 10.24,
    "bytes": 512 * MIB,
    "downtime_ms": 10,
    "score": 20.48,
    "postcopy_weight": 1.0,
    "dirty_rate_bytes_s": 3800 * MIB,
    "dirty_rate_mode": "dirty-bitmap",
    "link_bytes_s": round(47.7 * MIB),
    "link_source": "configured for h2",
    "first_pass_bytes": 480 * MIB,
    "made_at_s": 1.5,
    "others": {"precopy": None},
}
PLAN_REASON = "plan postcopy-after-0: 10.2 s (10.2 s in post-copy), 512 MiB, downtime 10 ms"


def _auto_migration(phase: Phase, **fields: object) -> Migration:
    values: dict[str, object] = {
        "status": phase.value,
        "policy": "auto",
        "prediction": PLAN,
        "total_s": None,
        "transfer_rate_bytes_s": None,
        "iterations": 1,
        "memory_total_bytes": 512 * MIB,
        "memory_processed_bytes": 512 * MIB,
        "memory_remaining_bytes": 0,
        "postcopy_requests": 3,
        "decisions": [
            {"at_s": 0.0, "action": "plan", "reason": PLAN_REASON, "source": "policy"},
            {"at_s": 1.5, "action": "switch-to-postcopy", "reason": "as planned", "source": "p"},
        ],
    }
    return Migration(**{**values, **fields})


def test_the_prediction_and_what_it_took() -> None:
    running = migration_state(_auto_migration(Phase.RUNNING_POSTCOPY), None)
    assert running["text"]["prediction"] == "Predicted 10.2 s (postcopy-after-0) 1.5 s in, took —"
    assert running["text"]["plan_reason"] == PLAN_REASON
    assert running["text"]["plan_dirty_rate"] == "3.71 GiB/s (dirty-bitmap)"
    assert running["text"]["plan_link_rate"] == "47.7 MiB/s (configured for h2)"
    assert running["text"]["achieved_link_rate"] == "—"
    assert [d["label"] for d in running["decisions"]] == ["auto's plan", "switch-to-postcopy"]
    assert running["decisions"][0]["action"] == "plan"

    done = _auto_migration(Phase.COMPLETED, total_s=9.81, transfer_rate_bytes_s=45 * MIB)
    text = migration_state(done, None)["text"]
    assert text["prediction"] == "Predicted 10.2 s (postcopy-after-0) 1.5 s in, took 9.8 s"
    assert text["achieved_link_rate"] == "45.0 MiB/s"
    failed = _auto_migration(Phase.FAILED, total_s=4.0)
    assert migration_state(failed, None)["text"]["prediction"].endswith("took 4.0 s (failed)")


def test_no_prediction_says_why() -> None:
    measuring = _auto_migration(Phase.PREPARING, prediction=None, decisions=[])
    text = migration_state(measuring, None)["text"]
    assert text["prediction"] == "Measuring the guest…"
    assert text["plan_reason"] == "" and text["plan_dirty_rate"] == text["plan_link_rate"] == "—"
    precopy = _auto_migration(Phase.COMPLETED, policy="precopy", prediction=None, decisions=[])
    assert migration_state(precopy, None)["text"]["prediction"] == (
        "No prediction: policy precopy does not plan."
    )
