from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, now_column, timestamp, uuid_pk


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    NO_ELIGIBLE = "NO_ELIGIBLE"
    FAILED = "FAILED"


TERMINAL_RUN_STATUSES = frozenset(
    {RunStatus.SUCCESS, RunStatus.PARTIAL, RunStatus.NO_ELIGIBLE, RunStatus.FAILED}
)
# the outcomes of a run that assigned the lead to someone
ASSIGNING_RUN_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.PARTIAL})
OPEN_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class SkipReason(StrEnum):
    """Why a distribution passed over a subscription (SPEC §2.7), recorded per provider."""

    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    ALREADY_ASSIGNED = "ALREADY_ASSIGNED"
    INELIGIBLE = "INELIGIBLE"
    ELIGIBILITY_ERROR = "ELIGIBILITY_ERROR"
    PROVIDER_SUSPENDED = "PROVIDER_SUSPENDED"
    SUBSCRIPTION_PAUSED = "SUBSCRIPTION_PAUSED"
    # the buyer's own limits (SPEC §8): they never make a run PARTIAL
    CAP_REACHED = "CAP_REACHED"
    OUTSIDE_SCHEDULE = "OUTSIDE_SCHEDULE"


class PreviewDecision(StrEnum):
    WOULD_ASSIGN = "WOULD_ASSIGN"
    WOULD_SKIP = "WOULD_SKIP"
    NOT_REACHED = "NOT_REACHED"


class Template(StrEnum):
    """Notification templates (app/services/notifications.py renders them)."""

    LEAD_ASSIGNED = "lead_assigned"
    PROVIDER_INVITE = "provider_invite"


class NotificationStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class DistributionBatch(SQLModel, table=True):
    """distributeLeads: one run per matching lead; progress is counted from the runs."""

    __tablename__ = "distribution_batches"

    id: uuid.UUID = uuid_pk()
    filters: dict[str, Any] = Field(sa_type=JSONB, sa_column_kwargs={"nullable": False})
    total: int
    requested_by: str
    created_at: datetime = now_column()


class DistributionRun(SQLModel, table=True):
    __tablename__ = "distribution_runs"
    __table_args__ = (
        enum_check("status", RunStatus, "status"),
        sa.Index("ix_distribution_runs_lead_created", "lead_id", "created_at"),
        sa.Index(
            "uq_distribution_runs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        ),
        # the sweep and the dead-letter list read these
        sa.Index(
            "ix_distribution_runs_open",
            "status",
            "updated_at",
            postgresql_where=sa.text("status IN ('QUEUED', 'RUNNING', 'FAILED')"),
        ),
        # what a niche's feed missed (services/runs.niche_runs_since): the runs changed since a time
        sa.Index("ix_distribution_runs_updated", "updated_at"),
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: uuid.UUID = uuid_pk()
    lead_id: uuid.UUID = Field(foreign_key="leads.id", nullable=False)
    status: RunStatus = Field(
        default=RunStatus.QUEUED, sa_type=sa.Text, sa_column_kwargs={"server_default": "QUEUED"}
    )
    # unique among all runs (partial index below): the same key for another lead is a CONFLICT
    idempotency_key: str | None = None
    requested_by: str = Field(default="system", sa_column_kwargs={"server_default": "system"})
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # progress events of this run carry seq 1..seq; bumped in each step's transaction
    seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    started_at: datetime | None = timestamp()
    finished_at: datetime | None = timestamp()
    duration_ms: float | None = None
    outcome: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    error: str | None = None
    # retries: not to be run before this time (backoff); the sweep sends it when due
    next_attempt_at: datetime | None = timestamp()
    # when a job for this run was last sent to the queue (the sweep re-sends stale ones)
    enqueued_at: datetime | None = timestamp()
    batch_id: uuid.UUID | None = Field(default=None, foreign_key="distribution_batches.id", index=True)
    created_at: datetime = now_column()
    updated_at: datetime = now_column()


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run just requested, as its request statement returned it: what distributeLead answers
    with, made without the ORM (building a DistributionRun, with SQLModel's validation and
    SQLAlchemy's instrumentation, was a twentieth of the API's CPU per distributeLead). Reads as a
    DistributionRun does."""

    id: uuid.UUID
    lead_id: uuid.UUID
    idempotency_key: str | None
    requested_by: str
    created_at: datetime
    status: RunStatus = RunStatus.QUEUED
    attempts: int = 0
    seq: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    outcome: dict[str, Any] | None = None
    error: str | None = None

    @property
    def updated_at(self) -> datetime:
        return self.created_at

    @property
    def enqueued_at(self) -> datetime:
        return self.created_at


class Notification(SQLModel, table=True):
    """The outbox: a row per assignment, written in the assignment's transaction, and rows of other
    messages (provider invites) with no assignment. Unique per assignment (NULLs do not collide)."""

    __tablename__ = "notifications"
    __table_args__ = (
        enum_check("status", NotificationStatus, "status"),
        sa.CheckConstraint(
            f"assignment_id IS NOT NULL OR template <> '{Template.LEAD_ASSIGNED.value}'",
            name="lead_assigned_has_assignment",
        ),
        sa.Index(
            "ix_notifications_pending",
            "created_at",
            postgresql_where=sa.text("status = 'PENDING'"),
        ),
        # first sends, oldest first: what the sender drains, without reading past retries
        sa.Index(
            "ix_notifications_unsent",
            "created_at",
            postgresql_where=sa.text("status = 'PENDING' AND attempts = 0"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    assignment_id: uuid.UUID | None = Field(
        default=None, foreign_key="assignments.id", nullable=True, sa_column_kwargs={"unique": True}
    )
    template: str
    recipient: str
    variables: dict[str, Any] = Field(sa_type=JSONB, sa_column_kwargs={"nullable": False})
    status: NotificationStatus = Field(
        default=NotificationStatus.PENDING,
        sa_type=sa.Text,
        sa_column_kwargs={"server_default": "PENDING"},
    )
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str | None = None
    next_attempt_at: datetime | None = timestamp()
    sent_at: datetime | None = timestamp()
    created_at: datetime = now_column()
