"""Dashboard sessions, shared secrets and forwarded operator requests in the database.

Revision ID: 0009
Revises: 0008
Created: 2026-11-30

- ``dashboard_sessions``: a logged-in browser (the SHA-256 of its cookie's id, its ORBIT
  token, one-time messages, last use); deleted with its token. Any orbit-server instance
  serves any browser, and a restart logs no one out.
- ``server_secrets``: secrets every instance shares (the key signing the log-in form).
- ``migrations.requested``: an operator's force-complete, abort or resume that an instance
  took for the one driving the migration, which applies it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("requested", sa.String(32), nullable=True))
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(36), nullable=False),
        sa.Column("flashes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["tokens.id"],
            name=op.f("fk_dashboard_sessions_token_id_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_dashboard_sessions")),
    )
    op.create_index(
        op.f("ix_dashboard_sessions_last_used_at"), "dashboard_sessions", ["last_used_at"]
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_index(op.f("ix_dashboard_sessions_last_used_at"), table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("requested")
