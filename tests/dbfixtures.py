"""Database fixtures: a private PostgreSQL server for the session, a fresh database per test.

- ``postgres_url`` (session): starts a PostgreSQL server of its own from the Debian package's
  binaries (``/usr/lib/postgresql/<highest>/bin``) in a temporary directory, on 127.0.0.1 and
  a free port, with database ``orbit_test`` (server time zone +05:30, not UTC, on purpose);
  always stopped and removed at the end. The
  system's PostgreSQL service is never used. Started only if a test asks for PostgreSQL.
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

import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orbit.db.database import Database

#: Where Debian's postgresql-NN packages put initdb and pg_ctl.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_SYSTEM_USER = "postgres"
PG_START_TIMEOUT_S = 60
PG_COMMAND_TIMEOUT_S = 120
TEST_DATABASE = "orbit_test"
#: Not UTC on purpose: the server hands back timestamps in its zone, and UTCDateTime must
#: turn them into UTC (a UTC server would hide a missing conversion).
PG_TIMEZONE = "Asia/Kolkata"
BACKENDS = ["sqlite", "postgresql"]


def find_pg_bin() -> Path:
    """The bin directory of the highest installed PostgreSQL; pytest.fail if there is none."""
    candidates = [p for p in Path("/").glob(PG_BIN_GLOB.lstrip("/")) if (p / "initdb").exists()]
    if not candidates:
        pytest.fail(
            f"PostgreSQL is not installed (no initdb under {PG_BIN_GLOB}); the database tests "
            "need it: run scripts/bootstrap-debian.sh (or apt-get install postgresql)",
            pytrace=False,
        )

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    return max(candidates, key=version)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_pg_user(argv: list[str]) -> list[str]:
    """Run as the postgres system user when root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
    return argv


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(
        _as_pg_user(argv),
        capture_output=True,
        text=True,
        timeout=PG_COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        log_tail = ""
        if log is not None and log.exists():
            log_tail = "\n--- server log ---\n" + "\n".join(log.read_text().splitlines()[-20:])
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stdout}{proc.stderr}{log_tail}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the test session; yields the URL of ``orbit_test``."""
    pg_bin = find_pg_bin()
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="orbit-pg-"))
    data = base / "data"
    log = base / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, user=PG_SYSTEM_USER, group=PG_SYSTEM_USER)
        _run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={data} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off "
            f"-c TimeZone={PG_TIMEZONE}"
        )
        started = True  # from here on, stop it whatever happens
        _run(
            [
                str(pg_bin / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-t",
                str(PG_START_TIMEOUT_S),
                "-w",
                "start",
            ],
            "starting PostgreSQL",
            log,
        )
        server = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {TEST_DATABASE}"))
        finally:
            admin.dispose()
        yield f"{server}/{TEST_DATABASE}"
    finally:
        if started:
            subprocess.run(
                _as_pg_user([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=PG_COMMAND_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        shutil.rmtree(base, ignore_errors=True)


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
