"""The migration phase state machine: the table, the final phases, post-copy phases."""

from __future__ import annotations

import itertools

import pytest

from orbit.errors import InvalidTransition
from orbit.migration.phase import ALLOWED, Phase, transition

ALLOWED_PAIRS = [(a, b) for a, targets in ALLOWED.items() for b in sorted(targets)]
FORBIDDEN_PAIRS = [
    (a, b) for a, b in itertools.product(Phase, Phase) if a != b and b not in ALLOWED[a]
]


def _id(pair: tuple[Phase, Phase]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_table_covers_every_phase() -> None:
    assert set(ALLOWED) == set(Phase)
    assert all(a not in targets for a, targets in ALLOWED.items())


@pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=[_id(p) for p in ALLOWED_PAIRS])
def test_allowed_transition(pair: tuple[Phase, Phase]) -> None:
    current, new = pair
    assert transition(current, new) is new


@pytest.mark.parametrize(
    ("current", "new"),
    [
        pytest.param(Phase.COMPLETED, Phase.RUNNING_PRECOPY, id="completed is final"),
        pytest.param(Phase.RUNNING_POSTCOPY, Phase.CANCELLED, id="no abort in post-copy"),
        pytest.param(Phase.RUNNING_POSTCOPY, Phase.FAILED, id="post-copy never just fails"),
        pytest.param(Phase.POSTCOPY_PAUSED, Phase.FAILED, id="paused post-copy never fails"),
        pytest.param(Phase.POSTCOPY_PAUSED, Phase.CANCELLED, id="paused post-copy no abort"),
        pytest.param(Phase.RUNNING_POSTCOPY, Phase.RUNNING_PRECOPY, id="no way back to pre-copy"),
        pytest.param(Phase.CANCELLED, Phase.QUEUED, id="cancelled is final: no retry in place"),
        pytest.param(Phase.FAILED, Phase.PREPARING, id="failed is final: no retry in place"),
        pytest.param(Phase.QUEUED, Phase.RUNNING_PRECOPY, id="queued skips preparing"),
        pytest.param(Phase.PREPARING, Phase.RUNNING_POSTCOPY, id="post-copy before pre-copy"),
        pytest.param(Phase.COMPLETING, Phase.CANCELLED, id="no abort while completing"),
        pytest.param(Phase.ERROR, Phase.COMPLETED, id="error is final"),
    ],
)
def test_forbidden_transition(current: Phase, new: Phase) -> None:
    with pytest.raises(
        InvalidTransition, match=f"migration cannot go from {current.value} to {new.value}"
    ):
        transition(current, new)


@pytest.mark.parametrize("pair", FORBIDDEN_PAIRS, ids=[_id(p) for p in FORBIDDEN_PAIRS])
def test_every_pair_outside_the_table_is_refused(pair: tuple[Phase, Phase]) -> None:
    with pytest.raises(InvalidTransition):
        transition(*pair)


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_same_phase_is_a_no_op(phase: Phase) -> None:
    assert transition(phase, phase) is phase


@pytest.mark.parametrize(
    ("phase", "is_final", "in_postcopy"),
    [
        (Phase.QUEUED, False, False),
        (Phase.PREPARING, False, False),
        (Phase.RUNNING_PRECOPY, False, False),
        (Phase.RUNNING_POSTCOPY, False, True),
        (Phase.COMPLETING, False, False),
        (Phase.COMPLETED, True, False),
        (Phase.FAILED, True, False),
        (Phase.CANCELLED, True, False),
        (Phase.POSTCOPY_PAUSED, False, True),
        (Phase.ERROR, True, False),
    ],
    ids=lambda v: v.value if isinstance(v, Phase) else None,
)
def test_phase_properties(phase: Phase, is_final: bool, in_postcopy: bool) -> None:
    assert phase.is_final is is_final
    assert phase.in_postcopy is in_postcopy


def test_every_phase_has_a_property_row() -> None:
    # test_phase_properties lists the phases by hand; a new phase must be added there.
    assert len(Phase) == 10


@pytest.mark.parametrize("final", [p for p in Phase if p.is_final], ids=lambda p: p.value)
def test_nothing_leaves_a_final_phase(final: Phase) -> None:
    assert ALLOWED[final] == frozenset()
    for other in Phase:
        if other is not final:
            with pytest.raises(InvalidTransition):
                transition(final, other)


@pytest.mark.parametrize("phase", [p for p in Phase if p.in_postcopy], ids=lambda p: p.value)
def test_post_copy_phases_cannot_be_cancelled_or_failed(phase: Phase) -> None:
    """Abort in post-copy would lose the VM: its memory is split between the hosts."""
    assert Phase.CANCELLED not in ALLOWED[phase]
    assert Phase.FAILED not in ALLOWED[phase]
