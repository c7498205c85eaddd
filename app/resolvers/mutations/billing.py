from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.models.billing import LedgerKind, ProviderStatus
from app.resolvers.context import Info
from app.resolvers.permissions import CanWriteOwn, IsAdmin
from app.schema.scalars import JSON, Cents
from app.schema.types import LedgerEntry, Provider, Subscription
from app.services import billing

ADMIN: list[type[BasePermission]] = [IsAdmin]
WRITE_OWN: list[type[BasePermission]] = [CanWriteOwn]


@strawberry.type
class BillingMutations:
    @strawberry.mutation(permission_classes=ADMIN)
    async def create_provider(self, info: Info, name: str, email: str) -> Provider:
        provider = await billing.create_provider(
            info.context.db, actor=await info.context.actor(), name=name, email=email
        )
        return Provider.of(provider)

    @strawberry.mutation(permission_classes=ADMIN, description="Suspend (ACTIVE -> SUSPENDED) or reactivate.")
    async def set_provider_status(self, info: Info, id: uuid.UUID, status: ProviderStatus) -> Provider:
        provider = await billing.set_provider_status(
            info.context.db, actor=await info.context.actor(), provider_id=id, status=status
        )
        return Provider.of(provider)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Applied once per (provider, reference): a retry returns the first entry.",
    )
    async def top_up_balance(
        self, info: Info, provider_id: uuid.UUID, amount_cents: Cents, reference: str
    ) -> LedgerEntry:
        entry = await billing.top_up(
            info.context.db,
            actor=await info.context.actor(),
            provider_id=provider_id,
            amount_cents=amount_cents,
            reference=reference,
        )
        return LedgerEntry.of(entry)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="REFUND (+) or ADJUSTMENT (±); charges come only from distributions.",
    )
    async def adjust_balance(
        self,
        info: Info,
        provider_id: uuid.UUID,
        amount_cents: Cents,
        kind: LedgerKind,
        reference: str | None = None,
        note: str | None = None,
    ) -> LedgerEntry:
        entry = await billing.adjust_balance(
            info.context.db,
            actor=await info.context.actor(),
            provider_id=provider_id,
            amount_cents=amount_cents,
            kind=kind,
            reference=reference,
            note=note,
        )
        return LedgerEntry.of(entry)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description='filters: [{"field": "state", "op": "in", "value": ["TX"]}, …]; ops eq, neq, in, '
        "not_in, prefix, gte, lte, exists.",
    )
    async def subscribe_provider(
        self,
        info: Info,
        provider_id: uuid.UUID,
        competition_level_id: uuid.UUID,
        filters: JSON | None = None,
    ) -> Subscription:
        subscription = await billing.subscribe(
            info.context.db,
            actor=await info.context.actor(),
            provider_id=provider_id,
            competition_level_id=competition_level_id,
            filters=filters,
        )
        return Subscription.of(subscription)

    @strawberry.mutation(
        permission_classes=WRITE_OWN,
        description="A provider pauses its own subscriptions; an operator's pause only an operator lifts.",
    )
    async def pause_subscription(self, info: Info, id: uuid.UUID) -> Subscription:
        sub = await billing.pause_subscription(
            info.context.db, actor=await info.context.actor(), subscription_id=id
        )
        return Subscription.of(sub)

    @strawberry.mutation(
        permission_classes=WRITE_OWN,
        description="A provider resumes its own subscriptions, unless an operator paused them (FORBIDDEN).",
    )
    async def resume_subscription(self, info: Info, id: uuid.UUID) -> Subscription:
        sub = await billing.resume_subscription(
            info.context.db, actor=await info.context.actor(), subscription_id=id
        )
        return Subscription.of(sub)
