"""An operator can disable a host (Nova's service status): it then takes no new VMs.

Revision ID: 0005
Revises: 0004
Created: 2026-11-30

- ``hosts.disabled`` (false for every existing host) and ``hosts.disabled_reason``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("disabled_reason", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("disabled_reason")
        batch.drop_column("disabled")
