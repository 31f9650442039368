"""Host drains: a record per drain with its plan and each VM's outcome.

Revision ID: 0006
Revises: 0005
Created: 2026-11-30

- ``drains``: host, options (post-copy, parallelism, deadline, targets), the plan's items
  (JSON) and state; ``uq_drains_one_active_per_host``: one unfinished drain per host.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('running', 'cancelling')"
STATES = "status IN ('running', 'cancelling', 'completed', 'incomplete', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "drains",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("host_id", sa.String(36), nullable=True),
        sa.Column("host_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("post_copy", sa.Boolean(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("deadline_s", sa.Float(), nullable=True),
        sa.Column("targets", sa.JSON(), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("predicted_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name="fk_drains_host_id_hosts", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_drains_user_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_drains"),
        sa.UniqueConstraint("uuid", name="uq_drains_uuid"),
        sa.CheckConstraint(STATES, name="ck_drains_status"),
    )
    op.create_index(
        "uq_drains_one_active_per_host",
        "drains",
        ["host_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_drains_one_active_per_host", table_name="drains")
    op.drop_table("drains")
