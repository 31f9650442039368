"""auto's plan on each migration, the link rate it achieved, and a host's configured link rate.

Revision ID: 0002
Revises: 0001
Created: 2026-11-29

- ``migrations.prediction``: the plan auto chose before the migration started (strategy,
  predicted total and post-copy seconds, the measured dirty rate, the link rate and where
  it came from); NULL for other policies.
- ``migrations.transfer_rate_bytes_s``: what pre-copy achieved on the link; the next plan
  between the same two hosts starts from it.
- ``migrations.postcopy_weight``: auto's objective, frozen with the other settings.
- ``hosts.link_mib_s``: the rate migrations to this host can expect when there is no history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("prediction", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("transfer_rate_bytes_s", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("postcopy_weight", sa.Float(), nullable=False, server_default="1.0")
        )
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("link_mib_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("link_mib_s")
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("postcopy_weight")
        batch.drop_column("transfer_rate_bytes_s")
        batch.drop_column("prediction")
