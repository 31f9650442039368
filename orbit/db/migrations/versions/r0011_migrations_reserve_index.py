"""An index for the scheduler's reserve: migrations by destination, status and end.

Revision ID: 0011
Revises: 0010
Created: 2026-12-01

The memory a host will take counts completed migrations to it that ended after its last
survey. Without the index every placement and every room check joined the whole history
with the hosts: 21 ms for 20,000 records on PostgreSQL; with it, a subquery per host reads
only the few it counts (0.6 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_migrations_dest_status_finished",
        "migrations",
        ["dest_host_id", "status", "finished_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_migrations_dest_status_finished", table_name="migrations")
