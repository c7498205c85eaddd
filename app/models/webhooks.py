"""Webhooks into buyers' systems (SPEC §9): a provider's endpoints, the outbox of deliveries (one
row per event and endpoint, written in the event's transaction) and the log of every attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, jsonb, now_column, timestamp, uuid_pk


class WebhookEvent(StrEnum):
    """What an endpoint subscribes to; the body's `type`."""

    LEAD_ASSIGNED = "lead.assigned"
    RETURN_DECIDED = "return.decided"


# sendTestWebhook's event: sent to one endpoint on request, never subscribed to
TEST_EVENT = "webhook.test"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # waiting for its first attempt or a retry (or for its endpoint's re-enabling)
    DELIVERED = "DELIVERED"  # a 2xx answer within the timeout
    FAILED = "FAILED"  # every attempt failed (re-sendable by hand), or its endpoint was deleted


class DisabledReason(StrEnum):
    MANUAL = "MANUAL"  # by a person: new events are not queued for it
    FAILING = "FAILING"  # by the sender after consecutive failures, flagged: events keep queuing


class AttemptOutcome(StrEnum):
    """How an attempt ended, for the log and lw_webhook_attempts_total."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"  # an answer outside 2xx (a redirect included: never followed)
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    REFUSED = "refused"  # the URL or the address it resolves to is not allowed (SSRF guard)


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        enum_check("disabled_reason", DisabledReason, "disabled_reason"),
        sa.CheckConstraint("enabled = (disabled_reason IS NULL)", name="enabled_has_no_reason"),
        # the sweep's probe for disablings whose hold was lost (a few rows at most, rarely changed)
        sa.Index("ix_webhook_endpoints_hold_pending", "id", postgresql_where=sa.text("hold_pending")),
        # the engine's probe per assignment: the provider's live endpoints
        sa.Index(
            "ix_webhook_endpoints_provider", "provider_id", postgresql_where=sa.text("deleted_at IS NULL")
        ),
        # failure counters change with sends: unindexed and HOT
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False)
    url: str
    description: str = Field(default="", sa_column_kwargs={"server_default": ""})
    events: list[str] = Field(sa_type=ARRAY(sa.Text), sa_column_kwargs={"nullable": False})
    enabled: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    disabled_reason: DisabledReason | None = Field(default=None, sa_type=sa.Text)
    disabled_at: datetime | None = timestamp()
    # Standard Webhooks secrets (whsec_ + base64): stored as they are, since signing needs them
    secret: str
    # the secret before the last rotation, still signing until previous_secret_expires_at
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = timestamp()
    consecutive_failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # from its second failure in a row: when it is tried next (its waiting deliveries are due no
    # sooner); NULL after a success, a redelivery, a new URL, enabling or disabling it
    # (app/services/webhooks/claims.py)
    retry_at: datetime | None = timestamp()
    # disabled by the sender, its waiting deliveries not held yet: set by the turn that disables
    # it, cleared by the hold (or by enabling it); the sweep holds what a dead sender left
    hold_pending: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    deleted_at: datetime | None = timestamp()
    created_at: datetime = now_column()
    updated_at: datetime = now_column()


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the outbox row. Its id is the `webhook-id` (msg_<hex>), its
    payload the body, both the same on every attempt. Its attempts are logged in the row (a table
    of attempts was a fifth of the sender's PostgreSQL work: an insert, two index entries and a
    foreign-key check per attempt). No foreign key to its endpoint: every insert selects the
    endpoint's row, and endpoints are never deleted (a key check per delivery, taking a lock on
    the endpoint's row, in the distribution's transaction)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        enum_check("status", DeliveryStatus, "status"),
        sa.CheckConstraint(
            f"event_type IN ({', '.join(repr(e.value) for e in WebhookEvent)}, '{TEST_EVENT}')",
            name="event_type",
        ),
        # the delivery log, newest first, of a provider (an endpoint's is a filter on it)
        sa.Index("ix_webhook_deliveries_provider_created", "provider_id", "created_at", "id"),
        # what is due: the sender's and the sweep's scan (next_attempt_at NULL: held by a disabled endpoint)
        sa.Index(
            "ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=sa.text("status = 'PENDING'")
        ),
        # an endpoint's waiting deliveries in creation order: what its sender sends next
        sa.Index(
            "ix_webhook_deliveries_endpoint_pending",
            "endpoint_id",
            "created_at",
            postgresql_where=sa.text("status = 'PENDING'"),
        ),
        sa.Index("ix_webhook_deliveries_failed", "created_at", postgresql_where=sa.text("status = 'FAILED'")),
    )

    id: uuid.UUID = uuid_pk()
    endpoint_id: uuid.UUID
    # the endpoint's provider, copied: the log is read per provider
    provider_id: uuid.UUID
    event_type: str
    # what the event is about: the assignment of lead.assigned, the return of return.decided
    subject_id: uuid.UUID | None = None
    payload: dict[str, Any] = Field(sa_type=JSONB, sa_column_kwargs={"nullable": False})
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING, sa_type=sa.Text, sa_column_kwargs={"server_default": "PENDING"}
    )
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # when a sender may claim it: NULL while its endpoint is disabled; for a delivery a distribution
    # leased to its worker (sent at once by that worker), when the lease ends
    next_attempt_at: datetime | None = timestamp()
    last_attempt_at: datetime | None = timestamp()
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = timestamp()
    # every attempt, oldest first: {at, outcome, status_code, latency_ms, error, response_body (the
    # first KiB of the answer)}
    attempt_log: list[dict[str, Any]] = jsonb("[]")
    created_at: datetime = now_column()

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.id)


def webhook_id(delivery_id: uuid.UUID) -> str:
    """The `webhook-id` header: stable across attempts, so receivers can deduplicate."""
    return f"msg_{delivery_id.hex}"
