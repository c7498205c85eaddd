from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, jsonb, money, now_column, timestamp, uuid_pk
from app.models.caps import caps_valid
from app.models.usage import UsageCounters, usage_non_negative


class ProviderStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class LedgerKind(StrEnum):
    TOP_UP = "TOP_UP"
    CHARGE = "CHARGE"
    REFUND = "REFUND"
    ADJUSTMENT = "ADJUSTMENT"


class SubscriptionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"


class Provider(UsageCounters, table=True):
    __tablename__ = "providers"
    __table_args__ = (
        sa.CheckConstraint("balance_cents >= 0", name="balance_non_negative"),
        usage_non_negative(),
        caps_valid(),
        enum_check("status", ProviderStatus, "status"),
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: uuid.UUID = uuid_pk()
    name: str
    email: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    status: ProviderStatus = Field(
        default=ProviderStatus.ACTIVE, sa_type=sa.Text, sa_column_kwargs={"server_default": "ACTIVE"}
    )
    balance_cents: int = money(default=0)
    # IANA name: the provider's days, weeks and months (caps) and delivery windows are local ones
    timezone: str = Field(default="UTC", sa_column_kwargs={"server_default": "UTC", "nullable": False})
    # Bumped by every change to what the engine reads of this provider or its subscriptions and
    # caps, under the provider's row lock: the engine, which plans on an unlocked read and then
    # locks the providers it picked, re-reads those whose revision moved in between.
    revision: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    # caps across all its subscriptions (app/models/caps.py); null: none
    caps: dict[str, Any] | None = Field(default=None, sa_type=JSONB(none_as_null=True))
    created_at: datetime = now_column()


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.CheckConstraint("balance_after_cents >= 0", name="balance_after_non_negative"),
        enum_check("kind", LedgerKind, "kind"),
        sa.Index("ix_ledger_entries_provider_created", "provider_id", "created_at"),
        # a retried top-up is applied once
        sa.Index(
            "uq_ledger_entries_top_up_reference",
            "provider_id",
            "reference",
            unique=True,
            postgresql_where=sa.text("kind = 'TOP_UP'"),
        ),
        # an assignment is refunded at most once, whatever races (approved returns)
        sa.Index(
            "uq_ledger_entries_refund_assignment",
            "assignment_id",
            unique=True,
            postgresql_where=sa.text("kind = 'REFUND'"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    amount_cents: int = money()
    balance_after_cents: int = money()
    kind: LedgerKind = Field(sa_type=sa.Text)
    reference: str | None = None
    note: str | None = None
    assignment_id: uuid.UUID | None = Field(default=None, foreign_key="assignments.id")
    created_at: datetime = now_column()


class Subscription(UsageCounters, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        usage_non_negative(),
        caps_valid(),
        sa.UniqueConstraint("provider_id", "competition_level_id", name="uq_subscriptions_pair"),
        enum_check("status", SubscriptionStatus, "status"),
        sa.Index("ix_subscriptions_level", "competition_level_id"),
        # last_received_at changes on every assignment: unindexed and HOT
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    competition_level_id: uuid.UUID = Field(foreign_key="competition_levels.id", nullable=False)
    status: SubscriptionStatus = Field(
        default=SubscriptionStatus.ACTIVE,
        sa_type=sa.Text,
        sa_column_kwargs={"server_default": "ACTIVE"},
    )
    last_received_at: datetime | None = timestamp()
    filters: list[dict[str, Any]] = jsonb("[]")
    # weekly delivery windows and blackout dates (app/engine/schedule.py); null: always open
    schedule: dict[str, Any] | None = Field(default=None, sa_type=JSONB(none_as_null=True))
    # this subscription's own caps (app/models/caps.py); null: none
    caps: dict[str, Any] | None = Field(default=None, sa_type=JSONB(none_as_null=True))
    # paused by an operator: the provider cannot resume it itself (SPEC §10: not admin-set status)
    paused_by_operator: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = now_column()
