"""provider users: buyers' accounts, invites, provider-bound API keys; tokens and challenges name
their owner; the notification outbox carries messages without an assignment; a subscription
remembers an operator's pause

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 06:54:58
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_OWNER = "num_nonnulls(admin_id, provider_user_id) = 1"
LEAD_ASSIGNED_HAS_ASSIGNMENT = "assignment_id IS NOT NULL OR template <> 'lead_assigned'"


def upgrade() -> None:
    op.create_table(
        "provider_users",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("totp_secret", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrollment_token_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("enrollment_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_totp_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_provider_users_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_users")),
        sa.UniqueConstraint("email", name=op.f("uq_provider_users_email")),
        sa.UniqueConstraint("enrollment_token_hash", name=op.f("uq_provider_users_enrollment_token_hash")),
    )
    op.create_index(op.f("ix_provider_users_provider_id"), "provider_users", ["provider_id"], unique=False)
    op.create_table(
        "provider_invites",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("provider_user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_user_id"],
            ["provider_users.id"],
            name=op.f("fk_provider_invites_provider_user_id_provider_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_invites")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_provider_invites_token_hash")),
    )
    op.create_index(
        op.f("ix_provider_invites_provider_user_id"), "provider_invites", ["provider_user_id"], unique=False
    )
    for table in ("access_tokens", "mfa_challenges"):
        op.add_column(table, sa.Column("provider_user_id", sa.Uuid(), nullable=True))
        op.alter_column(table, "admin_id", existing_type=sa.UUID(), nullable=True)
        op.create_index(op.f(f"ix_{table}_provider_user_id"), table, ["provider_user_id"], unique=False)
        op.create_foreign_key(
            op.f(f"fk_{table}_provider_user_id_provider_users"),
            table,
            "provider_users",
            ["provider_user_id"],
            ["id"],
            ondelete="CASCADE",
        )
        op.create_check_constraint(op.f(f"ck_{table}_one_owner"), table, ONE_OWNER)
    op.add_column("api_keys", sa.Column("provider_id", sa.Uuid(), nullable=True))
    op.add_column("api_keys", sa.Column("provider_user_id", sa.Uuid(), nullable=True))
    op.create_index(op.f("ix_api_keys_provider_id"), "api_keys", ["provider_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_api_keys_provider_user_id_provider_users"),
        "api_keys",
        "provider_users",
        ["provider_user_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f("fk_api_keys_provider_id_providers"), "api_keys", "providers", ["provider_id"], ["id"]
    )
    # NULL for messages that are not about an assignment; the unique constraint stays (NULLs never
    # collide), and the engine's insert is unchanged
    op.alter_column("notifications", "assignment_id", existing_type=sa.UUID(), nullable=True)
    op.create_check_constraint(
        op.f("ck_notifications_lead_assigned_has_assignment"), "notifications", LEAD_ASSIGNED_HAS_ASSIGNMENT
    )
    op.add_column(
        "subscriptions",
        sa.Column("paused_by_operator", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("subscriptions", "paused_by_operator")
    op.drop_constraint(
        op.f("ck_notifications_lead_assigned_has_assignment"), "notifications", type_="check"
    )
    op.execute("DELETE FROM notifications WHERE assignment_id IS NULL")
    op.alter_column("notifications", "assignment_id", existing_type=sa.UUID(), nullable=False)
    op.drop_constraint(op.f("fk_api_keys_provider_id_providers"), "api_keys", type_="foreignkey")
    op.drop_constraint(op.f("fk_api_keys_provider_user_id_provider_users"), "api_keys", type_="foreignkey")
    op.drop_index(op.f("ix_api_keys_provider_id"), table_name="api_keys")
    # a provider's keys would become operator keys without their binding: they go with it
    op.execute("DELETE FROM api_keys WHERE provider_id IS NOT NULL")
    op.drop_column("api_keys", "provider_user_id")
    op.drop_column("api_keys", "provider_id")
    for table in ("mfa_challenges", "access_tokens"):
        op.drop_constraint(op.f(f"ck_{table}_one_owner"), table, type_="check")
        op.drop_constraint(op.f(f"fk_{table}_provider_user_id_provider_users"), table, type_="foreignkey")
        op.drop_index(op.f(f"ix_{table}_provider_user_id"), table_name=table)
        op.execute(f"DELETE FROM {table} WHERE provider_user_id IS NOT NULL")
        op.alter_column(table, "admin_id", existing_type=sa.UUID(), nullable=False)
        op.drop_column(table, "provider_user_id")
    op.drop_index(op.f("ix_provider_invites_provider_user_id"), table_name="provider_invites")
    op.drop_table("provider_invites")
    op.drop_index(op.f("ix_provider_users_provider_id"), table_name="provider_users")
    op.drop_table("provider_users")
