from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, jsonb, money, now_column, timestamp, uuid_pk


class LeadStatus(StrEnum):
    PENDING_REVIEW = "PENDING_REVIEW"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    DISTRIBUTED = "DISTRIBUTED"
    NO_ELIGIBLE = "NO_ELIGIBLE"
    FAILED = "FAILED"


DISTRIBUTABLE = frozenset({LeadStatus.APPROVED, LeadStatus.NO_ELIGIBLE})


class Lead(SQLModel, table=True):
    __tablename__ = "leads"
    __table_args__ = (
        enum_check("status", LeadStatus, "status"),
        sa.CheckConstraint("distribution_attempts >= 0", name="attempts_non_negative"),
        sa.Index("ix_leads_niche_created", "niche_id", "created_at", "id"),
        sa.Index("ix_leads_status_created", "status", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    niche_id: uuid.UUID = Field(foreign_key="niches.id", nullable=False)
    status: LeadStatus = Field(
        default=LeadStatus.PENDING_REVIEW,
        sa_type=sa.Text,
        sa_column_kwargs={"server_default": "PENDING_REVIEW"},
    )
    attributes: dict[str, Any] = jsonb("{}")
    rejection_reason: str | None = None
    distributed_at: datetime | None = timestamp()
    distribution_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = now_column()


class Assignment(SQLModel, table=True):
    __tablename__ = "assignments"
    __table_args__ = (
        # a provider never receives (or pays for) one lead twice
        sa.UniqueConstraint("lead_id", "provider_id", name="uq_assignments_lead_provider"),
        sa.CheckConstraint("price_charged_cents >= 0", name="price_charged_non_negative"),
        sa.Index("ix_assignments_provider_created", "provider_id", "created_at"),
        sa.Index("ix_assignments_created", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    lead_id: uuid.UUID = Field(foreign_key="leads.id", nullable=False)
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    subscription_id: uuid.UUID = Field(foreign_key="subscriptions.id", nullable=False)
    competition_level_id: uuid.UUID = Field(foreign_key="competition_levels.id", nullable=False)
    price_charged_cents: int = money()
    created_at: datetime = now_column()
