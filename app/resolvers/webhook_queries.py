"""Webhook queries, a mixin of the schema's Query: each one permission, one service call."""

from __future__ import annotations

import uuid
from functools import partial

import strawberry
from strawberry.permission import BasePermission

from app.models.webhooks import DeliveryStatus
from app.resolvers.context import Info
from app.resolvers.cost import page_size
from app.resolvers.permissions import CanReadOwn, CanReadOwnDetails
from app.resolvers.reads import page_of
from app.schema.pagination import Connection
from app.schema.webhooks import WebhookDelivery, WebhookEndpoint, WebhookOverview
from app.services.webhooks import deliveries, endpoints

# Endpoints (no secrets, URLs' passwords masked): readers, and a provider its own. The delivery log
# (bodies carry the leads' contact details): admins, and a provider its own. The services filter a
# provider principal to its own provider in SQL.
ENDPOINTS: list[type[BasePermission]] = [CanReadOwn]
DELIVERIES: list[type[BasePermission]] = [CanReadOwnDetails]


@strawberry.type
class WebhookQueries:
    @strawberry.field(permission_classes=ENDPOINTS, description="Live endpoints, oldest first.")
    async def webhook_endpoints(
        self, info: Info, provider_id: uuid.UUID | None = None
    ) -> list[WebhookEndpoint]:
        c = info.context
        found = await endpoints.list_endpoints(c.db, actor=await c.actor(), provider_id=provider_id)
        return [WebhookEndpoint.of(e) for e in found]

    @strawberry.field(permission_classes=ENDPOINTS)
    async def webhook_endpoint(self, info: Info, id: uuid.UUID) -> WebhookEndpoint:
        c = info.context
        return WebhookEndpoint.of(await endpoints.get_endpoint(c.db, actor=await c.actor(), endpoint_id=id))

    @strawberry.field(
        permission_classes=DELIVERIES,
        description="The delivery log, newest first, with each delivery's attempts. first: 1..100.",
    )
    async def webhook_deliveries(
        self,
        info: Info,
        provider_id: uuid.UUID | None = None,
        endpoint_id: uuid.UUID | None = None,
        status: DeliveryStatus | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> Connection[WebhookDelivery]:
        where = deliveries.DeliveryFilter(provider_id=provider_id, endpoint_id=endpoint_id, status=status)
        return await page_of(
            info,
            partial(deliveries.list_deliveries, where=where, first=first),
            WebhookDelivery.of,
            after=after,
        )

    @strawberry.field(permission_classes=DELIVERIES)
    async def webhook_delivery(self, info: Info, id: uuid.UUID) -> WebhookDelivery:
        c = info.context
        return WebhookDelivery.of(await deliveries.get_delivery(c.db, actor=await c.actor(), delivery_id=id))

    @strawberry.field(
        permission_classes=DELIVERIES,
        description="For the dashboards: flagged and failing endpoints, the latest `failures` (1 to 100) "
        "failed deliveries (a provider: its own).",
    )
    @page_size("failures", of="recentFailures")
    async def webhook_overview(self, info: Info, failures: int = 20) -> WebhookOverview:
        c = info.context
        found = await deliveries.overview(c.db, actor=await c.actor(), failed_limit=failures)
        return WebhookOverview(
            flagged_endpoints=[WebhookEndpoint.of(e) for e in found.flagged],
            failing_endpoints=[WebhookEndpoint.of(e) for e in found.failing],
            recent_failures=[WebhookDelivery.of(d) for d in found.failed],
            pending_deliveries=found.pending,
            disabled_endpoints=found.disabled,
        )
