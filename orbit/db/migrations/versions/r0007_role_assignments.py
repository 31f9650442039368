"""Role assignments: a user holds roles on projects (Keystone's model), not one role.

Revision ID: 0007
Revises: 0006
Created: 2026-11-30

- ``role_assignments`` (user, project, role), filled from each user's project and role;
- ``users.role`` goes; ``users.project_id`` becomes the default project, nullable, and is
  set to NULL when its project is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = "role IN ('admin', 'member')"


def upgrade() -> None:
    op.create_table(
        "role_assignments",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(ROLES, name=op.f("ck_role_assignments_role")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_role_assignments_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_role_assignments_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "project_id", "role", name=op.f("pk_role_assignments")),
    )
    op.execute(
        "INSERT INTO role_assignments (user_id, project_id, role, created_at) "
        "SELECT id, project_id, role, created_at FROM users"
    )
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.drop_column("role")
        batch.drop_constraint(op.f("fk_users_project_id_projects"), type_="foreignkey")
        batch.alter_column("project_id", existing_type=sa.String(36), nullable=True)
        batch.create_foreign_key(
            op.f("fk_users_project_id_projects"),
            "projects",
            ["project_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(32), nullable=False, server_default="member"))
    # each user's strongest role on its default project
    op.execute(
        "UPDATE users SET role = 'admin' WHERE EXISTS (SELECT 1 FROM role_assignments a "
        "WHERE a.user_id = users.id AND a.role = 'admin')"
    )
    op.execute("DELETE FROM users WHERE project_id IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("role", server_default=None)
        batch.create_check_constraint(op.f("ck_users_role"), ROLES)
        batch.drop_constraint(op.f("fk_users_project_id_projects"), type_="foreignkey")
        batch.alter_column("project_id", existing_type=sa.String(36), nullable=False)
        batch.create_foreign_key(
            op.f("fk_users_project_id_projects"), "projects", ["project_id"], ["id"]
        )
    op.drop_table("role_assignments")
