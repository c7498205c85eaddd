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
# caps: null, or {"DAY": {"leads": 10, "spend": 5000}, ...}: known periods, each with at least one
# non-negative integer limit (app/models/caps.py)
CAPS_VALID = """caps IS NULL OR (jsonb_typeof(caps) = 'object' AND caps <> '{}'::jsonb AND NOT jsonb_path_exists(caps, '$.keyvalue() ? (!(@.key == "DAY" || @.key == "WEEK" || @.key == "MONTH" || @.key == "TOTAL"))') AND NOT jsonb_path_exists(caps, '$.* ? (@.type() != "object")') AND NOT jsonb_path_exists(caps, '$.* ? (!exists(@.leads) && !exists(@.spend))') AND NOT jsonb_path_exists(caps, '$.*.* ? (@.type() != "number" || @ < 0 || @ != @.floor())') AND NOT jsonb_path_exists(caps, '$.*.keyvalue() ? (!(@.key == "leads" || @.key == "spend"))'))"""
PERIODS = ('day', 'week', 'month')  # counted from a local start; and 'total'

PERIOD_START = """
CREATE FUNCTION lw_period_start(period text, at timestamptz, tz text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE period WHEN 'TOTAL' THEN '-infinity'::timestamptz ELSE date_trunc(lower(period), at, tz) END
"""


def upgrade() -> None:
    op.execute(PERIOD_START)
    op.add_column('providers', sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(), server_default='UTC', nullable=False))
    op.add_column('providers', sa.Column('revision', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('subscriptions', sa.Column('schedule', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    for table in ('providers', 'subscriptions'):
        for period in PERIODS:
            op.add_column(table, sa.Column(f'usage_{period}_start', sa.DateTime(timezone=True), nullable=True))
            op.add_column(table, sa.Column(f'usage_{period}_leads', sa.Integer(), server_default='0', nullable=False))
            op.add_column(table, sa.Column(f'usage_{period}_spend_cents', sa.BigInteger(), server_default='0', nullable=False))
        op.add_column(table, sa.Column('usage_total_leads', sa.Integer(), server_default='0', nullable=False))
        op.add_column(table, sa.Column('usage_total_spend_cents', sa.BigInteger(), server_default='0', nullable=False))
        counts = [f'usage_{p}_{w}' for p in (*PERIODS, 'total') for w in ('leads', 'spend_cents')]
        op.create_check_constraint('usage_non_negative', table, ' AND '.join(f'{c} >= 0' for c in counts))
        op.add_column(table, sa.Column('caps', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
        op.create_check_constraint('caps_valid', table, CAPS_VALID)
    # what the engine will have counted had it counted from the start: the current periods and all time
    op.execute(_backfill('providers', 'a.provider_id = r.id', 'p.id = r.id'))
    op.execute(_backfill('subscriptions', 'a.subscription_id = r.id', 'p.id = r.provider_id'))


def _backfill(table: str, scope: str, join: str) -> str:
    sets = []
    for period in PERIODS:
        counted = (f"{scope} AND a.created_at >= cur.{period}"
                   f" AND lw_period_start('{period.upper()}', a.created_at, p.timezone) = cur.{period}")
        sets += [f"usage_{period}_start = cur.{period}",
                 f"usage_{period}_leads = (SELECT count(*) FROM assignments a WHERE {counted})",
                 f"usage_{period}_spend_cents = (SELECT coalesce(sum(a.price_charged_cents), 0) FROM assignments a WHERE {counted})"]
    sets += [f"usage_total_leads = (SELECT count(*) FROM assignments a WHERE {scope})",
             f"usage_total_spend_cents = (SELECT coalesce(sum(a.price_charged_cents), 0) FROM assignments a WHERE {scope})"]
    starts = ", ".join(f"lw_period_start('{p.upper()}', now(), p.timezone) AS {p}" for p in PERIODS)
    return f"UPDATE {table} r SET {', '.join(sets)} FROM providers p, LATERAL (SELECT {starts}) cur WHERE {join}"


def downgrade() -> None:
    for table in ('providers', 'subscriptions'):
        op.drop_constraint('usage_non_negative', table, type_='check')
        op.drop_constraint('caps_valid', table, type_='check')
        op.drop_column(table, 'caps')
        for period in (*PERIODS, 'total'):
            for what in ('start', 'leads', 'spend_cents'):
                if not (period == 'total' and what == 'start'):
                    op.drop_column(table, f'usage_{period}_{what}')
    op.drop_column('subscriptions', 'schedule')
    op.drop_column('providers', 'revision')
    op.drop_column('providers', 'timezone')
    op.execute("DROP FUNCTION lw_period_start(text, timestamptz, text)")
