"""Buyer caps (SPEC §8): a limit on leads and/or spend per period, on one subscription or on the
provider across all its subscriptions. Each cap row also holds its usage: the period it counts
(`period_start`) and what that period has used, kept by the engine's write statement, so the hot
path never counts a buyer's assignment history. A period is what lw_period_start() (migration 0005)
says: the one definition the engine, the cap writes and the invariants all use."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, now_column, uuid_pk


class CapPeriod(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"  # ISO: from Monday
    MONTH = "MONTH"
    TOTAL = "TOTAL"


class Cap(SQLModel, table=True):
    __tablename__ = "caps"
    __table_args__ = (
        enum_check("period", CapPeriod, "period"),
        sa.CheckConstraint("max_leads IS NULL OR max_leads >= 0", name="max_leads_non_negative"),
        sa.CheckConstraint("max_spend_cents IS NULL OR max_spend_cents >= 0", name="max_spend_non_negative"),
        sa.CheckConstraint("max_leads IS NOT NULL OR max_spend_cents IS NOT NULL", name="some_limit"),
        sa.CheckConstraint("used_leads >= 0 AND used_spend_cents >= 0", name="usage_non_negative"),
        # one cap per scope and period; a provider-wide cap has no subscription
        sa.UniqueConstraint(
            "provider_id",
            "subscription_id",
            "period",
            name="uq_caps_scope_period",
            postgresql_nulls_not_distinct=True,
        ),
        # a subscription's cap belongs to that subscription's provider
        sa.ForeignKeyConstraint(
            ["subscription_id", "provider_id"],
            ["subscriptions.id", "subscriptions.provider_id"],
            name="fk_caps_subscription_provider",
            ondelete="CASCADE",
        ),
        {"postgresql_with": {"fillfactor": 80}},  # usage changes with every assignment: HOT updates
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    subscription_id: uuid.UUID | None = None
    period: CapPeriod = Field(sa_type=sa.Text)
    max_leads: int | None = None
    max_spend_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    # usage of the period starting at period_start (the provider's local day, week or month as an
    # instant; -infinity for TOTAL; None before the first count). An older period_start means the
    # current period has used nothing yet.
    period_start: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    used_leads: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    used_spend_cents: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = now_column()
    updated_at: datetime = now_column()
