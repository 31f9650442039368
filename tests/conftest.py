"""Fixtures shared by every test: the real lab (root only) and a guest registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from orbit.lab.guest import Guests
from orbit.lab.lab import Lab
from tests.dbfixtures import db, db_url, postgres_url  # noqa: F401

#: fixtures that bring up (or tear down) the machine-wide lab
LAB_FIXTURES = {"lab", "no_lab"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the lab ``lab``, so that ``-m "not lab"`` runs only tests
    that leave the lab alone (a benchmark may be using it)."""
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, libvirtd); run 'sudo make test'")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A fresh two-host lab for the test module, always removed afterwards."""
    require_root()
    the_lab = Lab.from_env()
    with the_lab.session(2):
        yield the_lab


@pytest.fixture
def no_lab() -> Lab:
    """A machine with no lab on it (one left by a crashed run is removed first)."""
    require_root()
    lab = Lab.from_env()
    lab.down()
    return lab


@pytest.fixture
def guests(lab: Lab) -> Iterator[Guests]:
    """Test guests on the module's lab; every guest a test started is removed after it."""
    g = Guests(lab)
    before = {n for s in lab.status() for n in s.domains}
    yield g
    after = {n for s in lab.status() for n in s.domains}
    for name in after - before:
        g.destroy(name)
