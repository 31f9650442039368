"""What the migration page offers in each phase, and how numbers are shown."""

from __future__ import annotations

import pytest

from orbit.dashboard.present import (
    abort_control,
    fmt_bytes,
    fmt_rate,
    fmt_seconds,
    force_complete_control,
)
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
    from orbit.db.models import Migration

    m = Migration(status=phase.value, error="link down", decisions=[
        {"at_s": 5.0, "action": "pause-postcopy", "reason": "stalled", "source": "policy"},
        {"at_s": 6.0, "action": "resume-postcopy", "reason": "attempt 1", "source": "engine"},
    ])  # fmt: skip
    control = resume_control(m)
    assert control.allowed == (phase is Phase.POSTCOPY_PAUSED)
    if control.allowed:
        assert "link down" in control.reason and "1 attempt(s)" in control.reason
