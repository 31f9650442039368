"""Database fixtures: a private PostgreSQL server for the session, a fresh database per test.

- ``postgres_url`` (session): a PostgreSQL server of its own
  (:func:`orbit.lab.postgres.private_postgres`) with database ``orbit_test`` (server time
  zone +05:30, not UTC, on purpose); always stopped and removed at the end. Started only if
  a test asks for PostgreSQL.
- ``db_url`` (per test, parametrized ``sqlite`` / ``postgresql``): the URL of a new, empty
  database: a file in ``tmp_path``, or a database with a unique name on the private server
  (not dropped: the server and its data go at the session's end).
- ``db`` (per test): a :class:`~orbit.db.database.Database` on ``db_url``, upgraded to the
  newest schema revision, disposed after the test. On PostgreSQL the database is a copy
  of a template that was upgraded once per session (``CREATE DATABASE ... TEMPLATE``:
  tens of milliseconds instead of running every migration again); the upgrade then finds
  nothing to do, and a template that is not at the newest revision would still be
  upgraded.

Register them with one line in ``tests/conftest.py``::

    from tests.dbfixtures import db, db_url, postgres_url  # noqa: F401
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orbit.db.database import Database
from orbit.errors import LabError
from orbit.lab.postgres import free_port, private_postgres

__all__ = ["db", "db_url", "free_port", "postgres_url"]

TEST_DATABASE = "orbit_test"
#: Not UTC on purpose: the server hands back timestamps in its zone, and UTCDateTime must
#: turn them into UTC (a UTC server would hide a missing conversion).
PG_TIMEZONE = "Asia/Kolkata"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the test session; yields the URL of ``orbit_test``."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(private_postgres(TEST_DATABASE, timezone=PG_TIMEZONE))
        except LabError as err:
            pytest.fail(f"{err}; the database tests need it", pytrace=False)
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database on each backend (PostgreSQL: dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orbit.db'}"
        return
    server_url = make_url(request.getfixturevalue("postgres_url"))
    name = f"orbit_{uuid.uuid4().hex[:12]}"
    url = server_url.set(database=name).render_as_string(hide_password=False)
    if "db" in request.fixturenames:  # the db fixture makes it, a copy of the template
        yield url
        return
    admin = create_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    yield url  # not dropped: the private server and its data go at the session's end


#: the session's upgraded PostgreSQL database that each test's database is copied from
PG_TEMPLATE = "orbit_template"
_pg_template_ready: set[str] = set()


def _from_pg_template(db_url: str) -> None:
    """Replace the empty database ``db_url`` by a copy of the upgraded template (made on
    first use: the newest schema revision, no rows)."""
    url = make_url(db_url)
    server = url.set(database="postgres")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        key = server.render_as_string(hide_password=False)
        if key not in _pg_template_ready:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)"))
                conn.execute(text(f"CREATE DATABASE {PG_TEMPLATE}"))
            template = Database(url.set(database=PG_TEMPLATE).render_as_string(False))
            try:
                template.upgrade()
            finally:
                template.dispose()
            _pg_template_ready.add(key)
        with admin.connect() as conn:  # one statement per test: each costs PostgreSQL work
            conn.execute(text(f"CREATE DATABASE {url.database} TEMPLATE {PG_TEMPLATE}"))
    finally:
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A Database on a fresh database of each backend, upgraded to the newest revision."""
    if db_url.startswith("postgresql"):
        _from_pg_template(db_url)
    database = Database(db_url)
    try:
        database.upgrade()
        yield database
    finally:
        database.dispose()
