"""Fixtures shared by every test: the real lab (root only) and a guest registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from orbit.errors import LabError
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


#: scrypt's cost in tests: 2**10 instead of 2**14 (a hash in ~5 ms instead of ~85 ms; every
#: API, CLI and dashboard test creates users and logs in). Stored hashes carry their cost, so
#: checking works the same; tests/identity/test_security.py checks the production cost.
TEST_SCRYPT_N = 2**10


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("production_hashing") is None:
        from orbit.identity import security

        monkeypatch.setattr(security, "SCRYPT_N", TEST_SCRYPT_N)


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
    before = _domains(lab)
    yield g
    for name in _domains(lab) - before:
        g.destroy(name)


def _domains(lab: Lab) -> set[str]:
    """Every domain defined or running on the lab's hosts that answer (one a test left
    stopped or cut off is skipped: Lab.down removes what is left there)."""
    from orbit.lab import daemon
    from orbit.lab.libvirt_util import list_domains  # libvirt only where the lab is used

    names: set[str] = set()
    for host in lab.hosts():
        if not daemon.answers(host.address):
            continue
        try:
            names |= set(list_domains(host.uri))
        except LabError:
            continue
    return names
