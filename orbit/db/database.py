"""The database handle: one Engine, a session factory, and the Alembic schema upgrade.

Use one :class:`Database` per process and a short session per unit of work::

    db = Database(default_url())
    db.upgrade()                        # create or upgrade the schema (idempotent)
    with db.session() as session:       # commits on success, rolls back on an exception
        session.add(Host(name="h1", uri="qemu+tcp://198.18.0.1/system"))

The URL is any SQLAlchemy URL; ORBIT is tested on SQLite (``sqlite:////path/orbit.db``,
or ``sqlite://`` in memory) and PostgreSQL (``postgresql+psycopg://user@host:port/db``).

SQLite is set up for a multi-threaded server: connections may cross threads
(``check_same_thread=False``; a session still belongs to one thread at a time), foreign keys
are enforced (``PRAGMA foreign_keys=ON``, off by default in SQLite), a writer waits up to
:data:`SQLITE_BUSY_TIMEOUT_S` for another's lock instead of failing at once, and a file
database uses the write-ahead log so that readers do not wait for a writer. An in-memory
database is one connection shared by every session (``StaticPool``), or each session would
see its own empty database.

Errors: connection and operational failures (no server, a locked SQLite file, a failed
upgrade, a bad URL) are raised as :class:`orbit.errors.DatabaseError` with the cause kept.
Constraint violations stay SQLAlchemy's ``IntegrityError``: only the caller knows whether a
duplicate name is a user's mistake or a race.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from orbit.errors import DatabaseError

log = logging.getLogger(__name__)

#: Where ORBIT keeps its database unless ``ORBIT_DATABASE_URL`` says otherwise.
DEFAULT_URL = "sqlite:////var/lib/orbit/orbit.db"
URL_ENV = "ORBIT_DATABASE_URL"
#: How long an SQLite writer waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0
#: How long a session waits for a pooled connection before the request answers 503.
POOL_TIMEOUT_S = 10.0
#: Connections kept open, and how many more may open at a busy moment: together 40, so that
#: a burst of requests waits for the processor, not for a connection (two instances on one
#: PostgreSQL stay within its default 100). A burst of 200 migrations takes ~25 at once in
#: each instance (API threads and the migrations starting): with 10 kept, every burst opened
#: and closed ~50 PostgreSQL sessions (pg_stat_database), each a new backend to start.
POOL_SIZE = 30
POOL_OVERFLOW = 10
#: psycopg prepares a statement on a connection at its first execution, not its sixth:
#: PostgreSQL then plans it up to five times on that connection (custom plans) before it
#: keeps one, instead of up to ten. A burst of 200 migrations runs ~20 kinds of
#: statement on ~25 connections in each instance: the database's processor for it fell
#: from ~1.15 s to ~0.82 s (of which planning had been ~40 %).
PREPARE_THRESHOLD = 0
#: Connections orbit-server opens as it starts (:meth:`Database.open_pool`): about what a
#: burst takes at once in one instance.
WARM_CONNECTIONS = 20
#: A pooled PostgreSQL connection idle this long is pinged before use (a restarted server
#: costs one retry, not an error). One in steady use is not: a ping is a round trip, and
#: a request takes two or three connections (pinging each cost ~1 ms of processor).
PING_IDLE_S = 1.0
#: Alembic's scripts: env.py and versions/, next to this file.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value: orjson reads it in about a third of the time of ``json.loads``
    (a page of 50 migrations reads 150). Python's json writes NaN and Infinity, which orjson
    refuses: such a text is read by ``json.loads``."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def default_url() -> str:
    """``$ORBIT_DATABASE_URL`` if set (and not empty), else :data:`DEFAULT_URL`."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as err:
        raise DatabaseError(
            f"bad database URL ({err}); check its form, e.g. "
            "postgresql+psycopg://user@host:5432/orbit"
        ) from err


def _reason(err: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy's own adds the SQL and a link)."""
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    return next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), type(cause).__name__)


def _sqlite_path(url: URL) -> Path | None:
    """The file of an SQLite URL; None for another backend or an in-memory database."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


class InstanceLock:
    """SQLite serves one orbit-server: the first holds an exclusive lock on
    ``<database>.lock`` (``flock``, released when the process ends, however it ends); a
    second is refused with a clear error. PostgreSQL takes any number (no lock)."""

    def __init__(self, url: str | URL) -> None:
        self._fd: int | None = None
        path = _sqlite_path(_parse(url))
        if path is None:
            return
        lock = path.with_name(path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DatabaseError(
                f"the SQLite database {path} is in use by orbit-server (pid {holder}): SQLite "
                "serves one instance; run several on PostgreSQL"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor ends the flock
            self._fd = None


def ensure_sqlite_dir(url: str | URL) -> None:
    """Create the directory of an SQLite database file (mode 0700); no-op for other URLs.

    The caller decides when (a CLI command, the API server's start), since the default
    directory, ``/var/lib/orbit``, needs root to create.
    """
    path = _sqlite_path(_parse(url))
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise DatabaseError(f"cannot create the database directory {path.parent}: {err}") from err


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """Per-connection SQLite settings (runs outside any transaction, where PRAGMAs apply)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _on_sqlite_file_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _on_sqlite_connect(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent; readers don't block on writers
    finally:
        cursor.close()


_CHECKED_IN_AT = "orbit_checked_in_at"


def _stamp_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()


def busy_message(engine: Engine) -> str:
    """Why a session could not get a connection: every pooled one is in use."""
    return (
        "the database is busy: every pooled connection is in use "
        f"({engine.pool.status()}); try again in a moment"
    )


class Database:
    """One database: an Engine (a connection pool) and a factory of sessions.

    Thread-safe: share one instance; give each thread (each request) its own session.
    Creating it does not connect; the first session or :meth:`upgrade` does.
    """

    def __init__(
        self, url: str | URL, *, echo: bool = False, pool_timeout_s: float = POOL_TIMEOUT_S
    ) -> None:
        self.url = _parse(url)
        kwargs: dict[str, Any] = {"echo": echo, "json_deserializer": json_loads}
        sqlite_file = _sqlite_path(self.url)
        is_sqlite = self.url.get_backend_name() == "sqlite"
        if is_sqlite:
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_S,  # sqlite3 sets the busy timeout from it
            }
            if sqlite_file is None:
                kwargs["poolclass"] = StaticPool
            else:
                kwargs["pool_timeout"] = pool_timeout_s
                kwargs["pool_size"] = POOL_SIZE
                kwargs["max_overflow"] = POOL_OVERFLOW
        else:
            kwargs["pool_timeout"] = pool_timeout_s
            kwargs["pool_size"] = POOL_SIZE
            kwargs["max_overflow"] = POOL_OVERFLOW
            # the connection used last goes out first: at a few requests a second the same
            # few stay warm, and the others idle (pinged only after PING_IDLE_S)
            kwargs["pool_use_lifo"] = True
            if self.url.drivername in ("postgresql", "postgresql+psycopg"):  # psycopg 3
                kwargs["connect_args"] = {"prepare_threshold": PREPARE_THRESHOLD}
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as err:
            raise DatabaseError(f"cannot use database {self._safe_url}: {err}") from err
        if is_sqlite:
            listener = _on_sqlite_connect if sqlite_file is None else _on_sqlite_file_connect
            event.listen(self.engine, "connect", listener)
        else:
            event.listen(self.engine, "checkin", _stamp_checkin)
            event.listen(self.engine, "checkout", self._ping_if_idle)
        # expire_on_commit=False: objects stay readable after the session commits and closes
        # (an API handler returns what it just wrote); reload them to see others' changes.
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _ping_if_idle(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        """Ping a connection idle :data:`PING_IDLE_S` or more; a dead one is replaced
        (DisconnectionError: the pool opens another, as ``pool_pre_ping`` does)."""
        idle_since = record.info.get(_CHECKED_IN_AT)
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
            return
        try:
            alive = self.engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # the driver's own errors: a closed socket, a reset
            raise DisconnectionError(f"pooled connection lost: {_reason(err)}") from err
        if not alive:
            raise DisconnectionError("pooled connection lost")

    @property
    def _safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Database({self._safe_url!r})"

    def open_pool(self, connections: int = WARM_CONNECTIONS) -> int:
        """Open up to ``connections`` pooled connections now (PostgreSQL; SQLite has
        nothing to open): a burst of requests soon after a start then finds them open,
        as on a server that has run a while, instead of starting a PostgreSQL backend
        for each (~6 ms of the database's processor apiece). How many it opened; a
        database that refuses some is not an error (the pool opens them when needed)."""
        if self.engine.dialect.name != "postgresql":
            return 0
        held = []
        try:
            for _ in range(min(connections, POOL_SIZE)):
                held.append(self.engine.connect())
        except SQLAlchemyError as err:
            log.warning("pool opened connections=%d of %d error=%s",
                        len(held), connections, _reason(err))  # fmt: skip
        finally:
            for connection in held:
                connection.close()  # back to the pool, open
        return len(held)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one unit of work: committed if the block ends normally, rolled
        back (and the exception re-raised) if it raises; closed in both cases.

        Raises DatabaseError if the database cannot be reached or is locked (the cause is
        kept); IntegrityError and programming errors pass through unchanged.
        """
        # Leaving the ``with`` closes the session, which rolls back what was not committed.
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except (OperationalError, InterfaceError) as err:
                raise DatabaseError(f"database {self._safe_url} failed: {_reason(err)}") from err
            except PoolTimeout as err:
                raise DatabaseError(busy_message(self.engine)) from err

    def alembic_config(self) -> Config:
        """An Alembic Config for this database, built in code (there is no alembic.ini).

        env.py takes the connection from ``config.attributes["connection"]`` when a caller
        put one there (as :meth:`upgrade` does), else it connects to ``attributes["url"]``.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        # r<rev>_<slug>.py: revision files are importable module names (mypy checks them)
        config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
        config.attributes["url"] = self.url
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (default: the newest) with Alembic; idempotent.

        The whole upgrade is one transaction on PostgreSQL (its DDL is transactional), so a
        failure leaves the schema as it was; SQLite commits its DDL as it goes. Raises
        DatabaseError for any failure, the cause kept.
        """
        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Take the schema back to ``revision`` ("base": nothing), as :meth:`upgrade`."""
        self._migrate(command.downgrade, revision)

    def _migrate(self, step: Callable[[Config, str], None], revision: str) -> None:
        """Run Alembic's ``step`` on one connection. On SQLite, foreign keys are off while
        it runs: a batch operation copies a table and drops the old one, and dropping a
        table with foreign keys on deletes its rows first, with their ON DELETE actions
        (every token, and the user of every migration, would go with the users table).
        They are checked before the commit instead."""
        config = self.alembic_config()
        sqlite = self.url.get_backend_name() == "sqlite"
        try:
            with self.engine.connect() as connection:
                if sqlite:  # outside a transaction, where the PRAGMA applies
                    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                    connection.commit()
                try:
                    with connection.begin():
                        config.attributes["connection"] = connection
                        step(config, revision)
                        if sqlite:
                            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                            if broken:
                                raise DatabaseError(
                                    f"schema {step.__name__} of {self._safe_url} to {revision} "
                                    f"would break {len(broken)} foreign keys, e.g. {broken[0]}"
                                )
                finally:
                    if sqlite:
                        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                        connection.commit()
        except (CommandError, SQLAlchemyError) as err:
            raise DatabaseError(
                f"schema {step.__name__} of {self._safe_url} to {revision} failed: {_reason(err)}"
            ) from err

    def current_revision(self) -> str | None:
        """The schema revision the database is at; None before the first upgrade."""
        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except (OperationalError, InterfaceError) as err:
            raise DatabaseError(f"database {self._safe_url} failed: {_reason(err)}") from err

    def dispose(self) -> None:
        """Close every pooled connection. The Database stays usable (it reconnects)."""
        self.engine.dispose()
