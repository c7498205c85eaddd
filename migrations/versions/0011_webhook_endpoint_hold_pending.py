"""a webhook endpoint disabled by the sender whose waiting deliveries are not held yet

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# a constant default: a catalogue change only (no table rewrite). The partial index holds the few
# endpoints whose hold is pending; the sender's other updates of a row leave it unchanged (HOT)
def upgrade() -> None:
    op.add_column(
        'webhook_endpoints',
        sa.Column('hold_pending', sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(
        'ix_webhook_endpoints_hold_pending',
        'webhook_endpoints',
        ['id'],
        postgresql_where=sa.text('hold_pending'),
    )


def downgrade() -> None:
    op.drop_index('ix_webhook_endpoints_hold_pending', table_name='webhook_endpoints')
    op.drop_column('webhook_endpoints', 'hold_pending')
