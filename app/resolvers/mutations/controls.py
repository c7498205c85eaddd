"""Buyer controls (SPEC §8): caps, time zone, schedule and filters. Thin: parse, permission, one
service call (which applies the principal), convert."""

from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.resolvers.context import Info
from app.resolvers.permissions import CanWriteOwn
from app.schema.controls import CapInput, DeliveryScheduleInput
from app.schema.scalars import JSON
from app.schema.types import Provider, Subscription
from app.services import billing, subscriptions
from app.services.caps import CapLimit, set_caps, set_timezone

# operators, and buyers on their own provider and subscriptions (the services check ownership)
OWN: list[type[BasePermission]] = [CanWriteOwn]


def _limits(given: list[CapInput]) -> list[CapLimit]:
    return [CapLimit(c.period, c.max_leads, c.max_spend_cents) for c in given]


@strawberry.type
class ControlMutations:
    @strawberry.mutation(
        permission_classes=OWN,
        description="An IANA time zone (e.g. America/Chicago): the provider's days, weeks and months "
        "for caps, and the clock of its delivery windows.",
    )
    async def set_provider_timezone(self, info: Info, provider_id: uuid.UUID, timezone: str) -> Provider:
        provider = await set_timezone(
            info.context.db, actor=await info.context.actor(), provider_id=provider_id, timezone=timezone
        )
        return Provider.of(provider)

    @strawberry.mutation(
        permission_classes=OWN,
        description="Replaces the provider-wide caps (across all its subscriptions); [] removes them. "
        "One cap per period.",
    )
    async def set_provider_caps(self, info: Info, provider_id: uuid.UUID, caps: list[CapInput]) -> Provider:
        await set_caps(
            info.context.db, actor=await info.context.actor(), provider_id=provider_id, caps=_limits(caps)
        )
        # caps and their usage come from the caps loader; the row is read again for the rest
        return Provider.of(
            await billing.get_provider(info.context.db, provider_id, actor=await info.context.actor())
        )

    @strawberry.mutation(
        permission_classes=OWN,
        description="Replaces the subscription's own caps; [] removes them. One cap per period.",
    )
    async def set_subscription_caps(
        self, info: Info, subscription_id: uuid.UUID, caps: list[CapInput]
    ) -> Subscription:
        await set_caps(
            info.context.db,
            actor=await info.context.actor(),
            subscription_id=subscription_id,
            caps=_limits(caps),
        )
        return Subscription.of(
            await billing.get_subscription(info.context.db, subscription_id, actor=await info.context.actor())
        )

    @strawberry.mutation(
        permission_classes=OWN, description="Delivery windows and blackout dates; null: always open."
    )
    async def set_subscription_schedule(
        self, info: Info, subscription_id: uuid.UUID, schedule: DeliveryScheduleInput | None
    ) -> Subscription:
        updated = await subscriptions.set_schedule(
            info.context.db,
            actor=await info.context.actor(),
            subscription_id=subscription_id,
            schedule=None if schedule is None else schedule.as_json(),
        )
        return Subscription.of(updated)

    @strawberry.mutation(
        permission_classes=OWN,
        description='Replaces the eligibility filters: [{"field": "state", "op": "in", "value": ["TX"]}, …]',
    )
    async def set_subscription_filters(
        self, info: Info, subscription_id: uuid.UUID, filters: JSON
    ) -> Subscription:
        updated = await subscriptions.set_filters(
            info.context.db,
            actor=await info.context.actor(),
            subscription_id=subscription_id,
            filters=filters,
        )
        return Subscription.of(updated)
