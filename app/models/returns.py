"""Returns (SPEC §8): a provider (or an operator) asks to give an assignment back; an operator
approves it, which refunds the price once, or rejects it with a note. The assignment itself stays:
a returned lead still counts toward the caps it was charged under."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, now_column, timestamp, uuid_pk


class ReturnReason(StrEnum):
    INVALID_CONTACT = "INVALID_CONTACT"
    DUPLICATE = "DUPLICATE"
    OUT_OF_AREA = "OUT_OF_AREA"
    OTHER = "OTHER"


class ReturnStatus(StrEnum):
    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class Return(SQLModel, table=True):
    __tablename__ = "returns"
    __table_args__ = (
        enum_check("reason", ReturnReason, "reason"),
        enum_check("status", ReturnStatus, "status"),
        # a decision is complete or absent, and an approval always carries its refund
        sa.CheckConstraint("(status = 'REQUESTED') = (decided_at IS NULL)", name="decided_iff_not_requested"),
        sa.CheckConstraint(
            "(status = 'APPROVED') = (refund_entry_id IS NOT NULL)", name="refund_iff_approved"
        ),
        sa.Index("ix_returns_provider_created", "provider_id", "created_at", "id"),
        sa.Index("ix_returns_status_created", "status", "created_at", "id"),
        sa.Index("ix_returns_created", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    # one return per assignment: a second request is a CONFLICT, never a second refund
    assignment_id: uuid.UUID = Field(
        foreign_key="assignments.id", nullable=False, sa_column_kwargs={"unique": True}
    )
    # copied from the assignment (they never change): a provider principal's reads filter on it
    lead_id: uuid.UUID = Field(foreign_key="leads.id", nullable=False)
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    reason: ReturnReason = Field(sa_type=sa.Text)
    note: str | None = None
    status: ReturnStatus = Field(
        default=ReturnStatus.REQUESTED, sa_type=sa.Text, sa_column_kwargs={"server_default": "REQUESTED"}
    )
    requested_by: str
    decided_by: str | None = None
    decided_at: datetime | None = timestamp()
    decision_note: str | None = None
    refund_entry_id: uuid.UUID | None = Field(
        default=None, foreign_key="ledger_entries.id", sa_column_kwargs={"unique": True}
    )
    created_at: datetime = now_column()
