"""Initial schema: projects, users, tokens, hosts, servers, migrations, migration samples.

Revision ID: 0001
Revises: (none)
Created: 2026-11-26

Value sets in CHECK constraints are frozen here on purpose (a revision is a snapshot, never
an import of application enums): adding a Phase, a Policy or a status needs a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("uri", sa.String(length=1024), nullable=False),
        sa.Column("migration_address", sa.String(length=1024), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("memory_total_mib", sa.Integer(), nullable=False),
        sa.Column("memory_free_mib", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('up', 'down', 'unknown')", name=op.f("ck_hosts_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "servers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("host_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("power_state", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'PAUSED', 'SHUTOFF', 'MIGRATING', 'ERROR', 'UNKNOWN')",
            name=op.f("ck_servers_status"),
        ),
        sa.CheckConstraint(
            "power_state IN (0, 1, 3, 4, 6, 7)", name=op.f("ck_servers_power_state")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_servers_host_id_hosts"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_servers_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
    )
    op.create_index(op.f("ix_servers_name"), "servers", ["name"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_users_role")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_users_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("server_id", sa.String(length=36), nullable=False),
        sa.Column("source_host_id", sa.String(length=36), nullable=True),
        sa.Column("dest_host_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("migration_type", sa.String(length=32), nullable=False),
        sa.Column("post_copy", sa.Boolean(), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("post_copy_after_iterations", sa.Integer(), nullable=False),
        sa.Column("block_migration", sa.Boolean(), nullable=False),
        sa.Column("disk_over_commit", sa.Boolean(), nullable=False),
        sa.Column("completion_timeout_s", sa.Float(), nullable=False),
        sa.Column("downtime_limit_ms", sa.Integer(), nullable=False),
        sa.Column("bandwidth_mib_s", sa.Integer(), nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_processed_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_remaining_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_processed_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_remaining_bytes", sa.BigInteger(), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("postcopy_requests", sa.Integer(), nullable=False),
        sa.Column("downtime_ms", sa.Integer(), nullable=True),
        sa.Column("switch_at_s", sa.Float(), nullable=True),
        sa.Column("total_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("phase_times", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.CheckConstraint(
            "policy IN ('precopy', 'postcopy', 'auto')", name=op.f("ck_migrations_policy")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'preparing', 'running-precopy', 'running-postcopy', "
            "'completing', 'completed', 'failed', 'cancelled', 'postcopy-paused', 'error')",
            name=op.f("ck_migrations_status"),
        ),
        sa.ForeignKeyConstraint(
            ["dest_host_id"],
            ["hosts.id"],
            name=op.f("fk_migrations_dest_host_id_hosts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_migrations_server_id_servers")
        ),
        sa.ForeignKeyConstraint(
            ["source_host_id"],
            ["hosts.id"],
            name=op.f("fk_migrations_source_host_id_hosts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_migrations_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migrations")),
        sa.UniqueConstraint("uuid", name=op.f("uq_migrations_uuid")),
    )
    op.create_index(op.f("ix_migrations_project_id"), "migrations", ["project_id"], unique=False)
    op.create_index(op.f("ix_migrations_server_id"), "migrations", ["server_id"], unique=False)
    op.create_index(op.f("ix_migrations_status"), "migrations", ["status"], unique=False)
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_tokens_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    op.create_table(
        "migration_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("migration_id", sa.Integer(), nullable=False),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_processed_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_remaining_bytes", sa.BigInteger(), nullable=False),
        sa.Column("dirty_rate_bytes_s", sa.BigInteger(), nullable=False),
        sa.Column("bandwidth_bytes_s", sa.BigInteger(), nullable=False),
        sa.Column("disk_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_processed_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_remaining_bytes", sa.BigInteger(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("postcopy", sa.Boolean(), nullable=False),
        sa.Column("postcopy_requests", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["migrations.id"],
            name=op.f("fk_migration_samples_migration_id_migrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_samples")),
    )
    op.create_index(
        op.f("ix_migration_samples_migration_id"),
        "migration_samples",
        ["migration_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_migration_samples_migration_id"), table_name="migration_samples")
    op.drop_table("migration_samples")
    op.drop_table("tokens")
    op.drop_index(op.f("ix_migrations_status"), table_name="migrations")
    op.drop_index(op.f("ix_migrations_server_id"), table_name="migrations")
    op.drop_index(op.f("ix_migrations_project_id"), table_name="migrations")
    op.drop_table("migrations")
    op.drop_table("users")
    op.drop_index(op.f("ix_servers_name"), table_name="servers")
    op.drop_table("servers")
    op.drop_table("projects")
    op.drop_table("hosts")
