"""a failing webhook endpoint is paused between attempts: tried once per retry delay, not once per
waiting delivery

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 12:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable, no default: no table rewrite
    op.add_column('webhook_endpoints', sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('webhook_endpoints', 'paused_until')
