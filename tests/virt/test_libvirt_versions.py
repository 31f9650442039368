"""Which libvirt versions the driver will not ask to take a post-copy resume."""

from __future__ import annotations

import pytest

from orbit.virt.libvirt_driver import resume_defect_of


@pytest.mark.parametrize("version", [9_000_000, 10_010_000, 11_001_000])
def test_versions_before_11_2_can_resume(version: int) -> None:
    assert resume_defect_of(version) is None


@pytest.mark.parametrize(("version", "text"), [(11_002_000, "11.2.0"), (11_003_000, "11.3.0")])
def test_versions_from_11_2_crash_on_a_resume_and_say_so(version: int, text: str) -> None:
    why = resume_defect_of(version)
    assert why is not None and f"libvirt {text}" in why and "crashes" in why
