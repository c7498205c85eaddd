"""a failing webhook endpoint's next try: its deliveries wait until then

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# nullable, no default, unindexed: a catalogue change only (no table rewrite), and the sender's
# updates of it stay HOT
def upgrade() -> None:
    op.add_column('webhook_endpoints', sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('webhook_endpoints', 'retry_at')
