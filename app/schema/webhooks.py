"""GraphQL types of webhooks (SPEC §9). An endpoint never shows its secret: only
CreatedWebhookEndpoint carries it, once, from createWebhookEndpoint and rotateWebhookSecret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry

from app.models import webhooks as models
from app.models.webhooks import DeliveryStatus, DisabledReason, WebhookEvent
from app.schema.scalars import JSON

strawberry.enum(
    WebhookEvent,
    name="WebhookEventType",
    description="What an endpoint subscribes to; the body's `type` is the value (lead.assigned, …).",
)
strawberry.enum(DeliveryStatus, name="WebhookDeliveryStatus")
strawberry.enum(
    DisabledReason,
    name="WebhookDisabledReason",
    description="MANUAL: disabled by a person (new events are not queued). FAILING: disabled by the "
    "sender after consecutive failed attempts, flagged (events keep queuing until it is enabled).",
)


def masked(url: str) -> str:
    """A URL as shown: a password in it (https://user:pass@host/…) is a secret too."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not at or "/" in userinfo or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


@strawberry.type
class WebhookEndpoint:
    id: uuid.UUID
    provider_id: uuid.UUID
    url: str = strawberry.field(description="As written, a password in it shown as ***.")
    description: str
    events: list[WebhookEvent]
    enabled: bool
    disabled_reason: DisabledReason | None
    disabled_at: datetime | None
    consecutive_failures: int = strawberry.field(
        description="Failed attempts in a row; the endpoint is disabled at WEBHOOK_DISABLE_AFTER_FAILURES."
    )
    retry_at: datetime | None = strawberry.field(
        description="From its second failure in a row: when it is tried next (its waiting deliveries "
        "wait until then; a test message or a redelivery is sent at once, and a redelivery ends the "
        "wait). In the past once the wait is over, until the next attempt; null after a success. "
        "Deliveries already waiting keep the wait's planned end."
    )
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="Until then the secret before the last rotation signs too (both signatures are sent)."
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field(
        description="Disabled by the sender for failing: needs someone to look and re-enable it."
    )
    def flagged(self) -> bool:
        return self.disabled_reason == DisabledReason.FAILING

    @classmethod
    def of(cls, m: models.WebhookEndpoint) -> WebhookEndpoint:
        return cls(
            id=m.id,
            provider_id=m.provider_id,
            url=masked(m.url),
            description=m.description,
            events=[WebhookEvent(e) for e in m.events],
            enabled=m.enabled,
            disabled_reason=DisabledReason(m.disabled_reason) if m.disabled_reason else None,
            disabled_at=m.disabled_at,
            consecutive_failures=m.consecutive_failures,
            retry_at=m.retry_at,
            previous_secret_expires_at=m.previous_secret_expires_at,
            created_at=m.created_at,
            updated_at=m.updated_at,
        )


@strawberry.type(description="Shown once: store the secret now; it signs every message (Standard Webhooks).")
class CreatedWebhookEndpoint:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="whsec_…: verify with any Standard Webhooks library.")


@strawberry.type(description="One attempt to send a delivery: what the endpoint answered, or why it failed.")
class WebhookAttempt:
    attempted_at: datetime
    outcome: str = strawberry.field(
        description="success, http_error (an answer outside 2xx, redirects included), timeout, "
        "connection_error or refused (an address webhooks may not reach)."
    )
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None = strawberry.field(description="The first KiB of the answer.")

    @classmethod
    def of(cls, entry: dict[str, Any]) -> WebhookAttempt:
        return cls(
            attempted_at=datetime.fromisoformat(entry["at"]),
            outcome=entry["outcome"],
            status_code=entry.get("status_code"),
            latency_ms=entry["latency_ms"],
            error=entry.get("error"),
            response_body=entry.get("response_body"),
        )


@strawberry.type(description="One event for one endpoint: sent at least once, retried with backoff.")
class WebhookDelivery:
    id: uuid.UUID
    webhook_id: str = strawberry.field(description="The `webhook-id` header: the same on every attempt.")
    endpoint_id: uuid.UUID
    provider_id: uuid.UUID
    event_type: str = strawberry.field(description="lead.assigned, return.decided or webhook.test.")
    subject_id: uuid.UUID | None = strawberry.field(
        description="What the event is about: the assignment (lead.assigned), the return (return.decided)."
    )
    status: DeliveryStatus
    attempt_count: int = strawberry.field(
        description="Attempts in the current schedule (redeliverWebhook starts anew; `attempts` lists all)."
    )
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    payload: JSON = strawberry.field(description="The body sent: {type, timestamp, data}.")
    created_at: datetime
    attempt_log: strawberry.Private[list[dict[str, Any]]]

    @classmethod
    def of(cls, m: models.WebhookDelivery) -> WebhookDelivery:
        return cls(
            id=m.id,
            webhook_id=models.webhook_id(m.id),
            endpoint_id=m.endpoint_id,
            provider_id=m.provider_id,
            event_type=m.event_type,
            subject_id=m.subject_id,
            status=DeliveryStatus(m.status),
            attempt_count=m.attempts,
            next_attempt_at=m.next_attempt_at,
            last_attempt_at=m.last_attempt_at,
            last_status_code=m.last_status_code,
            last_error=m.last_error,
            delivered_at=m.delivered_at,
            payload=m.payload,
            created_at=m.created_at,
            attempt_log=m.attempt_log,
        )

    @strawberry.field(description="Every attempt, oldest first (redeliveries' included).")
    def attempts(self) -> list[WebhookAttempt]:
        return [WebhookAttempt.of(a) for a in self.attempt_log]


@strawberry.type(
    description="What needs an operator's eye: flagged and failing endpoints, and recent failed deliveries."
)
class WebhookOverview:
    flagged_endpoints: list[WebhookEndpoint]
    failing_endpoints: list[WebhookEndpoint] = strawberry.field(
        description="Enabled endpoints whose last attempt failed (from two failures in a row each waits "
        "for its next try: retryAt); the 50 with the most failures in a row."
    )
    recent_failures: list[WebhookDelivery]
    pending_deliveries: int
    disabled_endpoints: int


@strawberry.input
class CreateWebhookEndpointInput:
    provider_id: uuid.UUID | None = strawberry.field(
        default=None, description="Required for operators; a provider's own credentials may leave it out."
    )
    url: str = strawberry.field(description="https (http outside production); a public address.")
    events: list[WebhookEvent]
    description: str = ""
    enabled: bool = True


@strawberry.input(description="Fields left out (or null) stay as they are.")
class UpdateWebhookEndpointInput:
    url: str | None = None
    events: list[WebhookEvent] | None = None
    description: str | None = None
    enabled: bool | None = strawberry.field(
        default=None,
        description="false holds its waiting deliveries; true sends them, oldest first, and clears the flag.",
    )
