"""A provider's webhook endpoints: create, update (enable, disable), rotate the secret, delete.

Principals (app/services/principals.py): a provider principal manages only its own endpoints;
another provider's endpoint answers NOT_FOUND, as a missing one does. The secret is returned only
by create and rotate (shown once); every other read leaves it out."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.billing import Provider
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
from app.services.principals import own_provider_id, scope_to_own
from app.services.webhooks.outbound import validate_url
from app.settings import Settings

MAX_ENDPOINTS_PER_PROVIDER = 20
MAX_DESCRIPTION = 500
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@dataclass(frozen=True)
class CreatedEndpoint:
    """The endpoint and its new secret: the only time the secret is shown."""

    endpoint: WebhookEndpoint
    secret: str


@dataclass(frozen=True)
class EndpointChanges:
    """What updateWebhookEndpoint changes: None leaves a field as it is."""

    url: str | None = None
    events: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def parse_events(events: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    for event in events:
        try:
            value = WebhookEvent(event).value
        except ValueError:
            known = ", ".join(e.value for e in WebhookEvent)
            raise InvalidInput(
                f"events: {event!r} is not an event; events are {known}", field="events"
            ) from None
        if value not in chosen:
            chosen.append(value)
    if not chosen:
        raise InvalidInput("events must name at least one event", field="events")
    return chosen


def _description(value: str) -> str:
    cleaned = value.strip() if isinstance(value, str) else ""
    _guards.no_nul(cleaned, field="description")
    if len(cleaned) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
    return cleaned


async def create_endpoint(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID | None,
    url: str,
    events: Sequence[str],
    description: str = "",
    enabled: bool = True,
    settings: Settings,
) -> CreatedEndpoint:
    owner = own_provider_id(actor, provider_id)
    if owner is None:
        raise InvalidInput("providerId is required", field="providerId")
    chosen = parse_events(events)
    text = _description(description)
    checked = await validate_url(url, settings=settings)  # before the transaction: it resolves DNS
    secret = new_secret()
    async with db.begin() as session:
        if not await _lock_provider(session, owner):
            raise NotFound("provider", owner)
        # under the provider's lock, so two creations cannot both pass the limit
        count = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(WebhookEndpoint)
                .where(col(WebhookEndpoint.provider_id) == owner, col(WebhookEndpoint.deleted_at).is_(None))
            )
        ).scalar_one()
        if count >= MAX_ENDPOINTS_PER_PROVIDER:
            raise Conflict(f"a provider may have at most {MAX_ENDPOINTS_PER_PROVIDER} webhook endpoints")
        endpoint = WebhookEndpoint(
            provider_id=owner,
            url=checked,
            events=chosen,
            description=text,
            enabled=enabled,
            disabled_reason=None if enabled else DisabledReason.MANUAL,
            disabled_at=None if enabled else utcnow(),
            secret=secret,
        )
        session.add(endpoint)
        await session.flush()
        record(
            session,
            actor,
            AuditAction.WEBHOOK_ENDPOINT_CREATED,
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            provider_id=owner,
            events=chosen,
            enabled=enabled,
        )
    return CreatedEndpoint(endpoint, secret)


async def _lock_provider(session: AsyncSession, provider_id: uuid.UUID) -> bool:
    """The provider's row lock, its revision bumped: the engine holds the lock from its write's
    start to its commit, which writes the deliveries for the provider's endpoints; taken first (the
    engine's lock order), a change to an endpoint waits for a distribution in flight and then sees
    its deliveries. The revision tells an engine that planned before this change and locks after
    it that its statement's view of the endpoints is older than the change: it writes nothing and
    plans again (app/engine/charge.py), as after any change to the provider."""
    locked = await session.execute(
        sa.update(Provider)
        .where(col(Provider.id) == provider_id)
        .values(revision=Provider.revision + 1)
        .returning(col(Provider.id))
    )
    return locked.scalar_one_or_none() is not None


async def _lock_endpoint(session: AsyncSession, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """The live endpoint, locked after its provider (_lock_provider), if the principal may manage
    it: else NOT_FOUND."""
    owner = (
        await session.execute(
            scope_to_own(
                select(col(WebhookEndpoint.provider_id)).where(WebhookEndpoint.id == endpoint_id),
                WebhookEndpoint.provider_id,
                actor,
            )
        )
    ).scalar_one_or_none()
    if owner is None or not await _lock_provider(session, owner):
        raise NotFound("webhook endpoint", endpoint_id)
    stmt = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, col(WebhookEndpoint.deleted_at).is_(None))
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: deliveries referencing it still insert
        .execution_options(populate_existing=True)
    )
    endpoint = (
        await session.execute(scope_to_own(stmt, WebhookEndpoint.provider_id, actor))
    ).scalar_one_or_none()
    if endpoint is None:
        raise NotFound("webhook endpoint", endpoint_id)
    return endpoint


async def get_endpoint(db: Database, *, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, col(WebhookEndpoint.deleted_at).is_(None)
    )
    async with db.read() as session:
        found = (
            await session.execute(scope_to_own(stmt, WebhookEndpoint.provider_id, actor))
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("webhook endpoint", endpoint_id)
    return found


async def list_endpoints(
    db: Database, *, actor: Actor, provider_id: uuid.UUID | None
) -> list[WebhookEndpoint]:
    """Live endpoints, oldest first: a provider's, or every provider's for an operator."""
    owner = own_provider_id(actor, provider_id)
    stmt = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    if owner is not None:
        stmt = stmt.where(WebhookEndpoint.provider_id == owner)
    async with db.read() as session:
        rows = await session.execute(stmt.order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id)))
        return list(rows.scalars().all())


async def update_endpoint(
    db: Database,
    *,
    actor: Actor,
    endpoint_id: uuid.UUID,
    changes: EndpointChanges,
    settings: Settings,
    dispatcher: Dispatcher,
) -> WebhookEndpoint:
    """Disabling holds the endpoint's waiting deliveries; enabling sends them, oldest first, and
    clears the failure count (and the flag of an endpoint the sender disabled). A new URL ends a
    failing endpoint's wait, and what waited for it is due at once (as enabling does: a delivery
    a worker is sending at that moment may go twice, with its one webhook-id)."""
    url = await validate_url(changes.url, settings=settings) if changes.url is not None else None
    events = parse_events(changes.events) if changes.events is not None else None
    description = _description(changes.description) if changes.description is not None else None
    async with db.begin() as session:
        endpoint = await _lock_endpoint(session, actor, endpoint_id)
        resumed = False
        changed = [
            name
            for name, value in (("url", url), ("events", events), ("description", description))
            if value is not None and getattr(endpoint, name) != value
        ]
        if url is not None:
            ends_wait = endpoint.retry_at is not None and endpoint.url != url
            endpoint.url = url
            if ends_wait:
                endpoint.retry_at = None
                await session.flush()
                await session.execute(waiting(endpoint.id).values(next_attempt_at=sa.func.now()))
                resumed = True
        if events is not None:
            endpoint.events = events
        if description is not None:
            endpoint.description = description
        if changes.enabled is True and not endpoint.enabled:
            await _enable(session, actor, endpoint)
            resumed = True
        elif changes.enabled is False and endpoint.enabled:
            endpoint.enabled, endpoint.disabled_reason = False, DisabledReason.MANUAL
            endpoint.retry_at = None
            endpoint.disabled_at = endpoint.updated_at = utcnow()
            await hold_deliveries(session, endpoint.id)
            record(
                session,
                actor,
                AuditAction.WEBHOOK_ENDPOINT_DISABLED,
                entity_type="webhook_endpoint",
                entity_id=endpoint.id,
                reason=DisabledReason.MANUAL.value,
            )
        if changed:
            endpoint.updated_at = utcnow()
            record(
                session,
                actor,
                AuditAction.WEBHOOK_ENDPOINT_UPDATED,
                entity_type="webhook_endpoint",
                entity_id=endpoint.id,
                changed=changed,
            )
    if resumed:
        await dispatcher.wake_webhooks()
    return await get_endpoint(db, actor=actor, endpoint_id=endpoint_id)


async def _enable(session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint) -> None:
    previous = endpoint.disabled_reason
    endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, None, None
    endpoint.consecutive_failures, endpoint.retry_at, endpoint.hold_pending = 0, None, False
    endpoint.updated_at = utcnow()
    await session.flush()
    # the held backlog (and retries not due yet) become due now; the sender takes them in
    # creation order
    result = await session.execute(waiting(endpoint.id).values(next_attempt_at=sa.func.now()))
    resumed = result.rowcount  # type: ignore[attr-defined]  # an UPDATE's result has one
    record(
        session,
        actor,
        AuditAction.WEBHOOK_ENDPOINT_ENABLED,
        entity_type="webhook_endpoint",
        entity_id=endpoint.id,
        previous_reason=str(previous) if previous else None,
        resumed_deliveries=resumed,
    )


def waiting(endpoint_id: uuid.UUID) -> sa.Update:
    """An update of an endpoint's waiting (PENDING) deliveries."""
    return sa.update(WebhookDelivery).where(
        col(WebhookDelivery.endpoint_id) == endpoint_id, col(WebhookDelivery.status) == DeliveryStatus.PENDING
    )


async def hold_deliveries(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """A disabled endpoint's waiting deliveries leave the sender's scan (next_attempt_at NULL)
    until it is enabled again; not its test messages, sent whatever its state."""
    not_a_test = col(WebhookDelivery.event_type) != TEST_EVENT
    await session.execute(waiting(endpoint_id).where(not_a_test).values(next_attempt_at=None))


async def rotate_secret(
    db: Database, *, actor: Actor, endpoint_id: uuid.UUID, overlap_hours: float | None, settings: Settings
) -> CreatedEndpoint:
    """A new secret signs from now on; the current one keeps signing too (both signatures in
    `webhook-signature`) for the overlap, so the buyer can switch without losing a message. A
    secret from an earlier rotation still in its overlap stops signing."""
    hours = settings.webhook_rotation_overlap_hours if overlap_hours is None else overlap_hours
    if not 0 <= hours <= 24 * 30:
        raise InvalidInput("overlapHours must be between 0 and 720", field="overlapHours")
    secret = new_secret()
    async with db.begin() as session:
        endpoint = await _lock_endpoint(session, actor, endpoint_id)
        endpoint.previous_secret = endpoint.secret if hours > 0 else None
        endpoint.previous_secret_expires_at = utcnow() + timedelta(hours=hours) if hours > 0 else None
        endpoint.secret = secret
        endpoint.updated_at = utcnow()
        record(
            session,
            actor,
            AuditAction.WEBHOOK_SECRET_ROTATED,
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
            overlap_hours=hours,
        )
    return CreatedEndpoint(endpoint, secret)


async def delete_endpoint(db: Database, *, actor: Actor, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Kept (its delivery log stays readable) but gone: no new events, and what was waiting is
    FAILED."""
    async with db.begin() as session:
        endpoint = await _lock_endpoint(session, actor, endpoint_id)
        now = utcnow()
        endpoint.deleted_at = endpoint.updated_at = now
        if endpoint.enabled:
            endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = (
                False,
                DisabledReason.MANUAL,
                now,
            )
        await session.flush()
        await session.execute(
            waiting(endpoint.id).values(
                status=DeliveryStatus.FAILED, next_attempt_at=None, last_error="endpoint deleted"
            )
        )
        record(
            session,
            actor,
            AuditAction.WEBHOOK_ENDPOINT_DELETED,
            entity_type="webhook_endpoint",
            entity_id=endpoint.id,
        )
    return endpoint
