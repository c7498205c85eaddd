"""Buyer caps (SPEC §8): a limit on leads and/or spend per period, on one subscription or on the
provider across all its subscriptions, and the usage the engine's write statement keeps per
period, so the hot path never counts a buyer's assignment history."""

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
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    subscription_id: uuid.UUID | None = None
    period: CapPeriod = Field(sa_type=sa.Text)
    max_leads: int | None = None
    max_spend_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = now_column()
    updated_at: datetime = now_column()


class CapUsage(SQLModel, table=True):
    """What counts toward a cap in one period: the period's start in the provider's local time (as
    an instant; -infinity for TOTAL), computed by lw_period_start() (migration 0005), the one
    definition of a period the engine, the cap writes and the invariants all use."""

    __tablename__ = "cap_usage"
    __table_args__ = (
        sa.CheckConstraint("leads >= 0", name="leads_non_negative"),
        sa.CheckConstraint("spend_cents >= 0", name="spend_non_negative"),
    )

    cap_id: uuid.UUID = Field(
        primary_key=True, sa_column_kwargs={"nullable": False}, foreign_key="caps.id", ondelete="CASCADE"
    )
    period_start: datetime = Field(primary_key=True, sa_type=sa.DateTime(timezone=True))
    leads: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    spend_cents: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
