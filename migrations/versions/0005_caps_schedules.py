"""caps, schedules, provider timezones

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:45:43.968833
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The one definition of a cap's period, in the provider's time zone: the instant its local day, ISO
# week (from Monday) or month began (DST-correct: PostgreSQL's date_trunc in a zone), -infinity for
# TOTAL. The engine's candidate read and write, the cap writes and the invariants all use it.
PERIOD_START = """
CREATE FUNCTION lw_period_start(period text, at timestamptz, tz text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE period WHEN 'TOTAL' THEN '-infinity'::timestamptz ELSE date_trunc(lower(period), at, tz) END
"""


def upgrade() -> None:
    op.execute(PERIOD_START)
    op.create_unique_constraint('uq_subscriptions_id_provider', 'subscriptions', ['id', 'provider_id'])
    op.create_table('caps',
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('provider_id', sa.Uuid(), nullable=False),
    sa.Column('subscription_id', sa.Uuid(), nullable=True),
    sa.Column('period', sa.Text(), nullable=False),
    sa.Column('max_leads', sa.Integer(), nullable=True),
    sa.Column('max_spend_cents', sa.BigInteger(), nullable=True),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_leads', sa.Integer(), server_default='0', nullable=False),
    sa.Column('used_spend_cents', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("period IN ('DAY', 'WEEK', 'MONTH', 'TOTAL')", name=op.f('ck_caps_period')),
    sa.CheckConstraint('max_leads IS NOT NULL OR max_spend_cents IS NOT NULL', name=op.f('ck_caps_some_limit')),
    sa.CheckConstraint('used_leads >= 0 AND used_spend_cents >= 0', name=op.f('ck_caps_usage_non_negative')),
    sa.CheckConstraint('max_leads IS NULL OR max_leads >= 0', name=op.f('ck_caps_max_leads_non_negative')),
    sa.CheckConstraint('max_spend_cents IS NULL OR max_spend_cents >= 0', name=op.f('ck_caps_max_spend_non_negative')),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_caps_provider_id_providers')),
    sa.ForeignKeyConstraint(['subscription_id', 'provider_id'], ['subscriptions.id', 'subscriptions.provider_id'], name='fk_caps_subscription_provider', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_caps')),
    sa.UniqueConstraint('provider_id', 'subscription_id', 'period', name='uq_caps_scope_period', postgresql_nulls_not_distinct=True),
    postgresql_with={'fillfactor': 80},
    )
    op.add_column('providers', sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(), server_default='UTC', nullable=False))
    op.add_column('providers', sa.Column('revision', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('subscriptions', sa.Column('schedule', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('subscriptions', 'schedule')
    op.drop_column('providers', 'revision')
    op.drop_column('providers', 'timezone')
    op.drop_table('caps')
    op.drop_constraint('uq_subscriptions_id_provider', 'subscriptions', type_='unique')
    op.execute("DROP FUNCTION lw_period_start(text, timestamptz, text)")
