"""ORBIT's database layer: the models, the database handle and its Alembic migrations.

- :mod:`orbit.db.models`: the tables (SQLAlchemy 2 typed ORM).
- :mod:`orbit.db.database`: :class:`Database` (engine, sessions, ``upgrade()``) and the URL.
- :mod:`orbit.db.types`: UTC timestamps and uuid4 ids.
- ``orbit/db/migrations/``: Alembic's env.py and revisions; the schema comes from there.
"""

from orbit.db.database import DEFAULT_URL, Database, default_url, ensure_sqlite_dir

__all__ = ["DEFAULT_URL", "Database", "default_url", "ensure_sqlite_dir"]
