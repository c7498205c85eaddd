"""The webhook outbox: deliveries written in the transaction of their event (enqueue_event; the
engine writes lead.assigned in its own statement, app/engine/charge.py), the delivery log and its
attempts, re-sending by hand and test messages. The sender (sender.py) sends them.

A provider principal sees only its own deliveries, filtered in the SQL; another provider's
delivery or endpoint answers NOT_FOUND."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.webhooks import (
    TEST_EVENT,
    DeliveryStatus,
    DisabledReason,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.services import _guards
from app.services.audit import Actor, record
from app.services.dispatch import Dispatcher
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import own_provider_id, scope_to_own
from app.services.webhooks.endpoints import get_endpoint

log = logging.getLogger("leadwheel.webhooks")

# A delivery per live endpoint of the provider subscribed to the event; endpoints the sender
# disabled for failing queue theirs (held: next_attempt_at NULL) until they are enabled again, and a
# failing one's wait until it is tried next (retry_at).
ENQUEUE = sa.text(f"""
INSERT INTO webhook_deliveries (endpoint_id, provider_id, event_type, subject_id, payload, status,
                                next_attempt_at, created_at)
SELECT e.id, e.provider_id, CAST(:event_type AS text), CAST(:subject_id AS uuid),
       jsonb_build_object('type', CAST(:event_type AS text),
                          'timestamp', to_char(CAST(:at AS timestamptz) AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                          'data', CAST(:data AS jsonb)),
       '{DeliveryStatus.PENDING}', CASE WHEN e.enabled THEN greatest(now(), e.retry_at) END, now()
FROM webhook_endpoints e
WHERE e.provider_id = CAST(:provider_id AS uuid) AND e.deleted_at IS NULL
  AND CAST(:event_type AS text) = ANY(e.events)
  AND (e.enabled OR e.disabled_reason = '{DisabledReason.FAILING}')
""")


async def enqueue_event(
    conn: AsyncSession | AsyncConnection,
    *,
    provider_id: uuid.UUID,
    event_type: WebhookEvent,
    data: dict[str, Any],
    subject_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Writes the event's deliveries in the caller's transaction (so they exist if and only if the
    event commits) and returns how many: after the commit, when it is not 0, the caller wakes the
    sender (`dispatcher.wake_webhooks()`); the sweep sends them anyway if it does not. `data` is
    the body's `data`; the body is `{"type", "timestamp", "data"}`, as Standard Webhooks suggests."""
    result = await conn.execute(
        ENQUEUE,
        {
            "provider_id": provider_id,
            "event_type": WebhookEvent(event_type).value,
            "subject_id": subject_id,
            "at": occurred_at or utcnow(),
            "data": json.dumps(data, default=str),
        },
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeliveryFilter:
    provider_id: uuid.UUID | None = None
    endpoint_id: uuid.UUID | None = None
    status: DeliveryStatus | None = None


async def list_deliveries(
    db: Database, *, actor: Actor, where: DeliveryFilter, first: int, after: PageKey | None
) -> Page[WebhookDelivery]:
    """Newest first. An endpoint filter reads through the endpoint's provider (the log's index)."""
    provider_id = own_provider_id(actor, where.provider_id)
    stmt = select(WebhookDelivery)
    if where.endpoint_id is not None:
        endpoint = await _endpoint_any_state(db, actor=actor, endpoint_id=where.endpoint_id)
        if provider_id is not None and endpoint.provider_id != provider_id:
            return Page(items=[], has_next=False)
        provider_id = endpoint.provider_id
        stmt = stmt.where(WebhookDelivery.endpoint_id == where.endpoint_id)
    if provider_id is not None:
        stmt = stmt.where(WebhookDelivery.provider_id == provider_id)
    if where.status is not None:
        stmt = stmt.where(WebhookDelivery.status == DeliveryStatus(where.status))
    async with db.read() as session:
        return await keyset_page(session, stmt, WebhookDelivery, first=first, after=after)


async def _endpoint_any_state(db: Database, *, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """An endpoint, deleted ones included (their log stays readable)."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    async with db.read() as session:
        found = (
            await session.execute(scope_to_own(stmt, WebhookEndpoint.provider_id, actor))
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("webhook endpoint", endpoint_id)
    return found


async def get_delivery(db: Database, *, actor: Actor, delivery_id: uuid.UUID) -> WebhookDelivery:
    stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    async with db.read() as session:
        found = (
            await session.execute(scope_to_own(stmt, WebhookDelivery.provider_id, actor))
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("webhook delivery", delivery_id)
    return found


async def redeliver(
    db: Database, *, actor: Actor, delivery_id: uuid.UUID, dispatcher: Dispatcher
) -> WebhookDelivery:
    """Sends a delivery again now, whatever its status, with the same `webhook-id` and body (a
    receiver that already has it can tell) and a fresh set of attempts; its log keeps the earlier
    ones. Its endpoint must be enabled (else CONFLICT: enabling it sends what waits); a failing
    endpoint's wait ends (this is its next try)."""
    async with db.begin() as session:
        stmt = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, col(WebhookEndpoint.id) == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
            .with_for_update(of=WebhookDelivery)
        )
        found = (await session.execute(scope_to_own(stmt, WebhookDelivery.provider_id, actor))).one_or_none()
        if found is None:
            raise NotFound("webhook delivery", delivery_id)
        delivery, endpoint = found
        if endpoint.deleted_at is not None:
            raise Conflict(f"webhook endpoint {endpoint.id} was deleted: its deliveries cannot be sent")
        if not endpoint.enabled:
            raise Conflict(f"webhook endpoint {endpoint.id} is disabled: enable it (what waits is sent then)")
        previous = delivery.status
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        delivery.delivered_at = None
        record(
            session,
            actor,
            AuditAction.WEBHOOK_REDELIVERY_REQUESTED,
            entity_type="webhook_delivery",
            entity_id=delivery.id,
            previous_status=str(previous),
        )
    if endpoint.retry_at is not None and endpoint.retry_at > utcnow():
        await _end_wait(db, endpoint.id, delivery.id)
    await dispatcher.wake_webhooks()
    return delivery


# A redelivery is its endpoint's next try: the endpoint's wait ends, and the redelivery is due now
# even if a turn recording a failure moved it to a new wait's end since its commit. Only a wait
# still running: one over already may be the redelivery's own (tried, failed) since.
END_WAIT = sa.text(f"""
WITH ended AS (UPDATE webhook_endpoints SET retry_at = NULL WHERE id = :endpoint_id AND retry_at > now())
UPDATE webhook_deliveries SET next_attempt_at = now()
WHERE id = :delivery_id AND status = '{DeliveryStatus.PENDING}' AND attempts = 0 AND next_attempt_at > now()
""")


async def _end_wait(db: Database, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> None:
    """Apart from the redelivery's transaction, after its commit, and only a shortcut: what the
    redelivery wrote stands if this fails (the delivery then waits for the wait's planned end).
    Apart, the redelivery's transaction never holds the delivery's row while waiting for the
    endpoint's, which a sender's turn may hold while it waits for that delivery (given back)."""
    try:
        async with db.begin() as session:
            await session.execute(END_WAIT, {"endpoint_id": endpoint_id, "delivery_id": delivery_id})
    except Exception:  # noqa: BLE001  (PostgreSQL away, or a deadlock with a turn: the wait runs out)
        log.warning("webhooks.redelivery_wait_not_ended endpoint_id=%s", endpoint_id, exc_info=True)


async def send_test(
    db: Database, *, actor: Actor, endpoint_id: uuid.UUID, dispatcher: Dispatcher
) -> WebhookDelivery:
    """A `webhook.test` message to one endpoint, signed and logged like any other, whatever events
    it subscribes to. Sent to a disabled endpoint too: its owner can check a fix before
    re-enabling it (which sends the backlog)."""
    endpoint = await get_endpoint(db, actor=actor, endpoint_id=endpoint_id)
    now = utcnow()
    async with db.begin() as session:
        delivery = WebhookDelivery(
            endpoint_id=endpoint.id,
            provider_id=endpoint.provider_id,
            event_type=TEST_EVENT,
            payload={
                "type": TEST_EVENT,
                "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "data": {
                    "endpoint_id": str(endpoint.id),
                    "provider_id": str(endpoint.provider_id),
                    "message": "A test message from LeadWheel: a 2xx answer means it arrived.",
                },
            },
            next_attempt_at=now,
            created_at=now,
        )
        session.add(delivery)
        await session.flush()
        record(
            session,
            actor,
            AuditAction.WEBHOOK_TEST_REQUESTED,
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            delivery_id=delivery.id,
        )
    await dispatcher.wake_webhooks()
    return delivery


@dataclass(frozen=True)
class Overview:
    """What the dashboard and /metrics show: endpoints the sender disabled, enabled ones whose
    last attempt failed (from two failures in a row, each waiting for its next try), and recent
    failures."""

    flagged: list[WebhookEndpoint]
    failing: list[WebhookEndpoint]
    failed: list[WebhookDelivery]
    pending: int
    disabled: int


async def overview(db: Database, *, actor: Actor, failed_limit: int = 20) -> Overview:
    failed_limit = _guards.bounded_int(failed_limit, field="failures", minimum=1, maximum=100)
    owner = own_provider_id(actor, None)
    flagged_stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.disabled_reason == DisabledReason.FAILING, col(WebhookEndpoint.deleted_at).is_(None)
    )
    failing_stmt = select(WebhookEndpoint).where(
        col(WebhookEndpoint.enabled),
        col(WebhookEndpoint.consecutive_failures) > 0,
        col(WebhookEndpoint.deleted_at).is_(None),
    )
    failed_stmt = select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.FAILED)
    if owner is not None:
        flagged_stmt = flagged_stmt.where(WebhookEndpoint.provider_id == owner)
        failing_stmt = failing_stmt.where(WebhookEndpoint.provider_id == owner)
        failed_stmt = failed_stmt.where(WebhookDelivery.provider_id == owner)
    async with db.read() as session:
        flagged = list(
            (await session.execute(flagged_stmt.order_by(col(WebhookEndpoint.disabled_at).desc()))).scalars()
        )
        failing = list(
            (
                await session.execute(
                    failing_stmt.order_by(
                        col(WebhookEndpoint.consecutive_failures).desc(), col(WebhookEndpoint.id)
                    ).limit(FAILING_LISTED)
                )
            ).scalars()
        )
        failed = list(
            (
                await session.execute(
                    failed_stmt.order_by(col(WebhookDelivery.created_at).desc()).limit(failed_limit)
                )
            ).scalars()
        )
        pending, disabled = (await session.execute(sa.text(COUNTS), {"owner": owner})).one()
    return Overview(
        flagged=flagged, failing=failing, failed=failed, pending=int(pending), disabled=int(disabled)
    )


FAILING_LISTED = 50  # the most failures in a row first


COUNTS = f"""
SELECT (SELECT count(*) FROM webhook_deliveries
        WHERE status = '{DeliveryStatus.PENDING}'
          AND (CAST(:owner AS uuid) IS NULL OR provider_id = CAST(:owner AS uuid))),
       (SELECT count(*) FROM webhook_endpoints
        WHERE NOT enabled AND deleted_at IS NULL
          AND (CAST(:owner AS uuid) IS NULL OR provider_id = CAST(:owner AS uuid)))
"""
