from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.resolvers.context import Info
from app.resolvers.permissions import CanWriteOwn
from app.schema.webhooks import (
    CreatedWebhookEndpoint,
    CreateWebhookEndpointInput,
    UpdateWebhookEndpointInput,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.services.webhooks import deliveries, endpoints

# Admins, and a provider (provider:write) for its own endpoints: the services apply the principal
# rules (another provider's endpoint or delivery is NOT_FOUND).
WEBHOOKS: list[type[BasePermission]] = [CanWriteOwn]


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        permission_classes=WEBHOOKS,
        description="The URL must be public (its addresses are checked now and on every send). The "
        "secret is in the answer, once.",
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> CreatedWebhookEndpoint:
        c = info.context
        created = await endpoints.create_endpoint(
            c.db,
            actor=await c.actor(),
            provider_id=input.provider_id,
            url=input.url,
            events=input.events,
            description=input.description,
            enabled=input.enabled,
            settings=c.settings,
        )
        return CreatedWebhookEndpoint(endpoint=WebhookEndpoint.of(created.endpoint), secret=created.secret)

    @strawberry.mutation(permission_classes=WEBHOOKS)
    async def update_webhook_endpoint(
        self, info: Info, id: uuid.UUID, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpoint:
        c = info.context
        changes = endpoints.EndpointChanges(
            url=input.url, events=input.events, description=input.description, enabled=input.enabled
        )
        endpoint = await endpoints.update_endpoint(
            c.db,
            actor=await c.actor(),
            endpoint_id=id,
            changes=changes,
            settings=c.settings,
            dispatcher=c.dispatcher,
        )
        return WebhookEndpoint.of(endpoint)

    @strawberry.mutation(
        permission_classes=WEBHOOKS,
        description="A new secret, shown once. The old one keeps signing too for overlapHours "
        "(default WEBHOOK_ROTATION_OVERLAP_HOURS, 24; 0 stops it at once).",
    )
    async def rotate_webhook_secret(
        self, info: Info, id: uuid.UUID, overlap_hours: float | None = None
    ) -> CreatedWebhookEndpoint:
        c = info.context
        rotated = await endpoints.rotate_secret(
            c.db, actor=await c.actor(), endpoint_id=id, overlap_hours=overlap_hours, settings=c.settings
        )
        return CreatedWebhookEndpoint(endpoint=WebhookEndpoint.of(rotated.endpoint), secret=rotated.secret)

    @strawberry.mutation(
        permission_classes=WEBHOOKS,
        description="No more events; what was waiting is FAILED. Its delivery log stays readable.",
    )
    async def delete_webhook_endpoint(self, info: Info, id: uuid.UUID) -> WebhookEndpoint:
        c = info.context
        return WebhookEndpoint.of(
            await endpoints.delete_endpoint(c.db, actor=await c.actor(), endpoint_id=id)
        )

    @strawberry.mutation(
        permission_classes=WEBHOOKS,
        description="A signed webhook.test message, once (no retries), to an enabled or disabled endpoint.",
    )
    async def send_test_webhook(self, info: Info, endpoint_id: uuid.UUID) -> WebhookDelivery:
        c = info.context
        delivery = await deliveries.send_test(
            c.db, actor=await c.actor(), endpoint_id=endpoint_id, dispatcher=c.dispatcher
        )
        return WebhookDelivery.of(delivery)

    @strawberry.mutation(
        permission_classes=WEBHOOKS,
        description="Sends a delivery again now (same webhook-id and body) with a fresh set of attempts.",
    )
    async def redeliver_webhook(self, info: Info, delivery_id: uuid.UUID) -> WebhookDelivery:
        c = info.context
        delivery = await deliveries.redeliver(
            c.db, actor=await c.actor(), delivery_id=delivery_id, dispatcher=c.dispatcher
        )
        return WebhookDelivery.of(delivery)
