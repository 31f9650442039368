"""At most one unfinished migration per server, enforced by the database.

Revision ID: 0004
Revises: 0003
Created: 2026-11-30

- ``uq_migrations_one_active_per_server``: a unique index on ``migrations.server_id`` over
  the rows whose status is not final. Two simultaneous requests for one server (or two
  orbit-server processes) cannot both queue a migration: the second insert fails.
- Older duplicates (only a race before this index could make them) are ended as
  ``error`` first, keeping the newest, so the index can be built.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = (
    "status IN ('queued', 'preparing', 'running-precopy', 'running-postcopy', "
    "'completing', 'postcopy-paused')"
)


def upgrade() -> None:
    op.execute(
        "UPDATE migrations SET status = 'error', "
        "error = 'ended by schema upgrade 0004: a newer unfinished migration of the same "
        "server exists' "
        f"WHERE {ACTIVE} AND id < (SELECT MAX(m2.id) FROM migrations m2 "
        f"WHERE m2.server_id = migrations.server_id AND m2.{ACTIVE})"
    )
    op.create_index(
        "uq_migrations_one_active_per_server",
        "migrations",
        ["server_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_migrations_one_active_per_server", table_name="migrations")
