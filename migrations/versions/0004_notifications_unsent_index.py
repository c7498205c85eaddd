"""notifications: an index of first sends, for the batched sender

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_notifications_unsent",
        "notifications",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'PENDING' AND attempts = 0"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_notifications_unsent",
        table_name="notifications",
        postgresql_where=sa.text("status = 'PENDING' AND attempts = 0"),
    )
