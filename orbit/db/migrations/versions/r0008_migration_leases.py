"""Migration leases: several orbit-server instances share one database.

Revision ID: 0008
Revises: 0007
Created: 2026-11-30

- ``migrations.owner`` (the instance driving it), ``migrations.lease_until`` (until when,
  renewed while it drives) and ``migrations.fence`` (the claim's number, 0 for existing
  rows). Existing unfinished migrations have no owner: the next instance takes them over.
- ``instances``: each live orbit-server instance and when it was last seen (the
  dispatchers share the work by it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fence", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("fence")
        batch.drop_column("lease_until")
        batch.drop_column("owner")
    op.drop_table("instances")
