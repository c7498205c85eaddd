from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, jsonb, now_column, uuid_pk


class ActorType(StrEnum):
    USER = "USER"
    API_KEY = "API_KEY"
    SYSTEM = "SYSTEM"


class AuditAction(StrEnum):
    DISTRIBUTION_STARTED = "DISTRIBUTION_STARTED"
    DISTRIBUTION_COMPLETED = "DISTRIBUTION_COMPLETED"
    DISTRIBUTION_FAILED = "DISTRIBUTION_FAILED"
    DISTRIBUTION_SKIPPED_PROVIDER = "DISTRIBUTION_SKIPPED_PROVIDER"
    ASSIGNMENT_CREATED = "ASSIGNMENT_CREATED"
    NICHE_CREATED = "NICHE_CREATED"
    NICHE_UPDATED = "NICHE_UPDATED"
    LEVEL_CREATED = "LEVEL_CREATED"
    LEVEL_UPDATED = "LEVEL_UPDATED"
    LEVEL_DELETED = "LEVEL_DELETED"
    PROVIDER_CREATED = "PROVIDER_CREATED"
    PROVIDER_STATUS_CHANGED = "PROVIDER_STATUS_CHANGED"
    BALANCE_CHANGED = "BALANCE_CHANGED"
    SUBSCRIPTION_CREATED = "SUBSCRIPTION_CREATED"
    SUBSCRIPTION_STATUS_CHANGED = "SUBSCRIPTION_STATUS_CHANGED"
    LEAD_SUBMITTED = "LEAD_SUBMITTED"
    LEAD_APPROVED = "LEAD_APPROVED"
    LEAD_REJECTED = "LEAD_REJECTED"
    DISTRIBUTION_REQUESTED = "DISTRIBUTION_REQUESTED"
    ADMIN_LOGIN = "ADMIN_LOGIN"
    ADMIN_LOGOUT = "ADMIN_LOGOUT"
    ADMIN_LOGIN_FAILED = "ADMIN_LOGIN_FAILED"
    API_KEY_CREATED = "API_KEY_CREATED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    WEBHOOK_ENDPOINT_CREATED = "WEBHOOK_ENDPOINT_CREATED"
    WEBHOOK_ENDPOINT_UPDATED = "WEBHOOK_ENDPOINT_UPDATED"
    WEBHOOK_ENDPOINT_DISABLED = "WEBHOOK_ENDPOINT_DISABLED"  # by a person, or by the sender (FAILING)
    WEBHOOK_ENDPOINT_ENABLED = "WEBHOOK_ENDPOINT_ENABLED"
    WEBHOOK_ENDPOINT_DELETED = "WEBHOOK_ENDPOINT_DELETED"
    WEBHOOK_SECRET_ROTATED = "WEBHOOK_SECRET_ROTATED"
    WEBHOOK_REDELIVERY_REQUESTED = "WEBHOOK_REDELIVERY_REQUESTED"
    WEBHOOK_TEST_REQUESTED = "WEBHOOK_TEST_REQUESTED"


class AuditEntry(SQLModel, table=True):
    """Append-only: a trigger (migration 0001) refuses UPDATE and DELETE."""

    __tablename__ = "audit_log"
    __table_args__ = (
        enum_check("actor_type", ActorType, "actor_type"),
        sa.Index("ix_audit_log_entity", "entity_type", "entity_id", "created_at"),
        sa.Index("ix_audit_log_created", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    action: str
    actor_type: ActorType = Field(sa_type=sa.Text)
    actor_id: uuid.UUID | None = None
    entity_type: str
    entity_id: uuid.UUID | None = None
    details: dict[str, Any] = jsonb("{}")
    created_at: datetime = now_column()
