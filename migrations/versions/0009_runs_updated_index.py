"""runs by the time they changed: what a niche's feed missed, read again after a resync

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:02:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# CONCURRENTLY, outside the migration's transaction: the engine writes distribution_runs all the
# time, and a plain build would block those writes for as long as it takes on a large table
def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            'ix_distribution_runs_updated',
            'distribution_runs',
            ['updated_at'],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            'ix_distribution_runs_updated',
            table_name='distribution_runs',
            postgresql_concurrently=True,
        )
