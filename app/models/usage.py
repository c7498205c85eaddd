"""Usage counters (app/engine/usage.py): on providers (their provider-wide caps count every
assignment of the provider) and on subscriptions (their own caps count that subscription's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def _count() -> Any:
    return Field(default=0, sa_column_kwargs={"server_default": "0", "nullable": False})


def _money() -> Any:
    return Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0", "nullable": False}
    )


def _start() -> Any:
    return Field(default=None, sa_type=sa.DateTime(timezone=True))


class UsageCounters(SQLModel):
    """Mixed into Provider and Subscription: the local day, ISO week and month each counted from
    its start (None before the first assignment), and all time."""

    usage_day_start: datetime | None = _start()
    usage_day_leads: int = _count()
    usage_day_spend_cents: int = _money()
    usage_week_start: datetime | None = _start()
    usage_week_leads: int = _count()
    usage_week_spend_cents: int = _money()
    usage_month_start: datetime | None = _start()
    usage_month_leads: int = _count()
    usage_month_spend_cents: int = _money()
    usage_total_leads: int = _count()
    usage_total_spend_cents: int = _money()


def usage_non_negative() -> sa.CheckConstraint:
    columns = [f"usage_{p}_{w}" for p in ("day", "week", "month", "total") for w in ("leads", "spend_cents")]
    return sa.CheckConstraint(" AND ".join(f"{c} >= 0" for c in columns), name="usage_non_negative")
