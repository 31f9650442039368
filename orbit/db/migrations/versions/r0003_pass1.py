"""What each migration's first pass left dirty, for the next plan of the same server.

Revision ID: 0003
Revises: 0002
Created: 2026-11-29

- ``migrations.pass1_dirtied_bytes`` and ``migrations.pass1_s``: the memory the guest
  dirtied during pass 1 and that pass's seconds (NULL when there was no second pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("pass1_dirtied_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("pass1_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("pass1_s")
        batch.drop_column("pass1_dirtied_bytes")
