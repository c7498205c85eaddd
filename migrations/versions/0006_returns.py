"""returns: the returns table, niches.return_window_hours, one REFUND per assignment

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03 06:47:28
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a constant default: PostgreSQL adds the column without rewriting the table
    op.add_column(
        "niches", sa.Column("return_window_hours", sa.Integer(), server_default="72", nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_niches_return_window_hours_non_negative"), "niches", "return_window_hours >= 0"
    )
    # the database itself refuses a second refund of an assignment
    op.create_index(
        "uq_ledger_entries_refund_assignment",
        "ledger_entries",
        ["assignment_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'REFUND'"),
    )
    op.create_table(
        "returns",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("assignment_id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("status", sa.Text(), server_default="REQUESTED", nullable=False),
        sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("refund_entry_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(status = 'APPROVED') = (refund_entry_id IS NOT NULL)",
            name=op.f("ck_returns_refund_iff_approved"),
        ),
        sa.CheckConstraint(
            "(status = 'REQUESTED') = (decided_at IS NULL)",
            name=op.f("ck_returns_decided_iff_not_requested"),
        ),
        sa.CheckConstraint(
            "reason IN ('INVALID_CONTACT', 'DUPLICATE', 'OUT_OF_AREA', 'OTHER')",
            name=op.f("ck_returns_reason"),
        ),
        sa.CheckConstraint("status IN ('REQUESTED', 'APPROVED', 'REJECTED')", name=op.f("ck_returns_status")),
        sa.ForeignKeyConstraint(
            ["assignment_id"], ["assignments.id"], name=op.f("fk_returns_assignment_id_assignments")
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_returns_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_returns_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["refund_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_returns_refund_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_returns")),
        sa.UniqueConstraint("assignment_id", name=op.f("uq_returns_assignment_id")),
        sa.UniqueConstraint("refund_entry_id", name=op.f("uq_returns_refund_entry_id")),
    )
    op.create_index("ix_returns_created", "returns", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_returns_provider_created", "returns", ["provider_id", "created_at", "id"], unique=False
    )
    op.create_index("ix_returns_status_created", "returns", ["status", "created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_returns_status_created", table_name="returns")
    op.drop_index("ix_returns_provider_created", table_name="returns")
    op.drop_index("ix_returns_created", table_name="returns")
    op.drop_table("returns")
    op.drop_index(
        "uq_ledger_entries_refund_assignment",
        table_name="ledger_entries",
        postgresql_where=sa.text("kind = 'REFUND'"),
    )
    op.drop_constraint(op.f("ck_niches_return_window_hours_non_negative"), "niches", type_="check")
    op.drop_column("niches", "return_window_hours")
