"""The Database handle: sessions, URLs, SQLite settings, threads, upgrade and errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from orbit.db.database import (
    DEFAULT_URL,
    SQLITE_BUSY_TIMEOUT_S,
    URL_ENV,
    Database,
    default_url,
    ensure_sqlite_dir,
)
from orbit.db.models import Host, Project
from orbit.errors import DatabaseError, OrbitError
from tests.dbfixtures import free_port

THREADS = 4
SESSIONS_PER_THREAD = 15


def count_projects(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Project)) or 0


def test_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    assert default_url() == DEFAULT_URL == "sqlite:////var/lib/orbit/orbit.db"
    monkeypatch.setenv(URL_ENV, "postgresql+psycopg://orbit@db.example/orbit")
    assert default_url() == "postgresql+psycopg://orbit@db.example/orbit"
    monkeypatch.setenv(URL_ENV, "")
    assert default_url() == DEFAULT_URL


def test_ensure_sqlite_dir_creates_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "orbit" / "orbit.db"
    ensure_sqlite_dir(f"sqlite:///{path}")
    assert path.parent.is_dir()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert not path.exists()  # the database itself is the engine's business
    ensure_sqlite_dir(f"sqlite:///{path}")  # idempotent


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@127.0.0.1:1/x"]
)
def test_ensure_sqlite_dir_ignores_urls_without_a_file(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **kw: made.append(self))
    ensure_sqlite_dir(url)
    assert made == []  # no directory is made for them


def test_ensure_sqlite_dir_maps_os_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DatabaseError, match="cannot create the database directory") as err:
        ensure_sqlite_dir(f"sqlite:///{tmp_path / 'file' / 'sub' / 'orbit.db'}")
    assert isinstance(err.value.__cause__, OSError)


@pytest.mark.parametrize("url", ["not a url", "nosuchdb://x/y"])
def test_a_bad_url_is_a_database_error(url: str) -> None:
    with pytest.raises(DatabaseError) as err:
        Database(url)
    assert isinstance(err.value, OrbitError)
    assert err.value.__cause__ is not None


def test_the_session_commits_on_success(db: Database) -> None:
    with db.session() as s:
        s.add(Project(name="p1"))
    assert count_projects(db) == 1


def test_the_session_rolls_back_on_an_exception(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.session() as s:
        s.add(Project(name="p1"))
        s.flush()  # the row reached the database...
        raise RuntimeError("boom")
    assert count_projects(db) == 0  # ...and was rolled back


def test_objects_stay_readable_after_the_session(db: Database) -> None:
    with db.session() as s:
        project = Project(name="p1")
        s.add(project)
    assert project.name == "p1"
    assert project.id and project.created_at.tzinfo is not None


def test_concurrent_writers_from_threads(db: Database) -> None:
    """Each thread reads then writes in its own sessions; none may fail with 'locked'."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(SESSIONS_PER_THREAD):
                with db.session() as s:
                    seen = s.scalar(select(func.count()).select_from(Host)) or 0
                    s.add(Host(name=f"t{t}-{i}", uri="qemu:///system", vcpus=seen))
                    s.flush()
                    s.get_one(Host, s.scalars(select(Host.id).limit(1)).one()).memory_free_mib += 1
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Host)) == THREADS * SESSIONS_PER_THREAD


def test_upgrade_is_idempotent_and_downgrade_removes_everything(db: Database) -> None:
    with db.session() as s:
        s.add(Project(name="kept"))
    db.upgrade()
    assert count_projects(db) == 1
    db.downgrade("base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    assert db.current_revision() is None
    db.upgrade()
    assert count_projects(db) == 0


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'orbit.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert conn.scalar(text("PRAGMA busy_timeout")) == int(SQLITE_BUSY_TIMEOUT_S * 1000)
    finally:
        db.dispose()


def test_in_memory_sqlite_is_one_database_for_every_session_and_thread() -> None:
    db = Database("sqlite://")
    try:
        db.upgrade()
        with db.session() as s:
            s.add(Project(name="p1"))
        counts: list[int] = []
        reader = threading.Thread(target=lambda: counts.append(count_projects(db)))
        reader.start()
        reader.join()
        assert counts == [1]
        with db.engine.connect() as conn:
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
    finally:
        db.dispose()


def test_an_unreachable_sqlite_file_is_a_database_error(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'orbit.db'}")
    try:
        with pytest.raises(DatabaseError, match="unable to open database file") as err:
            count_projects(db)
        assert "\n" not in str(err.value)  # one readable line: no SQL, no link
        with pytest.raises(DatabaseError, match=r"schema upgrade .* failed") as err:
            db.upgrade()
        assert "\n" not in str(err.value)
        with pytest.raises(DatabaseError):
            db.current_revision()
    finally:
        db.dispose()


def test_an_unreachable_postgresql_is_a_database_error() -> None:
    db = Database(f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/orbit")
    try:
        with pytest.raises(DatabaseError) as err:
            count_projects(db)
        assert "secret" not in str(err.value)  # the password is masked
        assert "127.0.0.1" in str(err.value)
        assert "\n" not in str(err.value)
        with pytest.raises(DatabaseError, match="schema upgrade") as err:
            db.upgrade()
        assert "\n" not in str(err.value)
    finally:
        db.dispose()


def test_a_locked_sqlite_database_is_a_database_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that waits longer than the busy timeout gets DatabaseError, not a hang."""
    url = f"sqlite:///{tmp_path / 'orbit.db'}"
    holder = Database(url)
    holder.upgrade()
    monkeypatch.setattr("orbit.db.database.SQLITE_BUSY_TIMEOUT_S", 0.2)
    waiter = Database(url)
    try:
        with holder.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # hold the write lock
            with pytest.raises(DatabaseError, match="database is locked"), waiter.session() as s:
                s.add(Project(name="p1"))
            conn.rollback()
    finally:
        waiter.dispose()
        holder.dispose()


def test_json_columns_are_read_by_orjson_and_nan_by_json() -> None:
    from orbit.db.database import json_loads

    assert json_loads(b'{"decisions": [{"at_s": 1.5}]}') == {"decisions": [{"at_s": 1.5}]}
    nan, inf = json_loads("[NaN, Infinity]")  # what json.dumps writes for them
    assert nan != nan and inf == float("inf")


def test_open_pool_opens_connections_on_postgresql_and_nothing_on_sqlite(db: Database) -> None:
    """orbit-server opens its pool as it starts: the connections stay in the pool, open
    (PostgreSQL), and the statements are prepared at their first execution."""
    opened = db.open_pool(4)
    if db.engine.dialect.name == "postgresql":
        assert opened == 4
        assert db.engine.pool.checkedin() >= 4  # type: ignore[attr-defined]
        with db.engine.connect() as connection:
            assert connection.connection.driver_connection.prepare_threshold == 0  # type: ignore[union-attr]
    else:
        assert opened == 0
