"""Providers, their prepaid balance and ledger, and subscriptions.

Invariants: balance_cents >= 0 (CHECK), and the sum of a provider's ledger equals its balance —
every balance change writes its ledger entry in the same transaction, under the provider's row
lock. Subscription statuses change only under that lock too, so the engine, which holds it while
charging, never races a top-up or a pause."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.engine.eligibility import validate_filters
from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.billing import (
    LedgerEntry,
    LedgerKind,
    Provider,
    ProviderStatus,
    Subscription,
    SubscriptionStatus,
)
from app.models.niches import CompetitionLevel
from app.services import _guards
from app.services.audit import Actor, record
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import check_own, require_operator, scope_to_own

MAX_AMOUNT_CENTS = 10**12


async def create_provider(db: Database, *, actor: Actor, name: str, email: str) -> Provider:
    require_operator(actor, "creating providers")
    provider = Provider(name=_guards.text(name, field="name"), email=_guards.email(email))
    try:
        async with db.begin() as session:
            session.add(provider)
            await session.flush()
            record(
                session, actor, AuditAction.PROVIDER_CREATED, entity_type="provider", entity_id=provider.id
            )
    except IntegrityError as exc:
        raise Conflict(f"a provider with email {provider.email} already exists", field="email") from exc
    return provider


async def set_provider_status(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, status: ProviderStatus
) -> Provider:
    """Suspend or reactivate."""
    require_operator(actor, "suspending or reactivating providers")
    async with db.begin() as session:
        provider = await lock_provider(session, provider_id)
        previous = provider.status
        provider.status = ProviderStatus(status)
        record(
            session,
            actor,
            AuditAction.PROVIDER_STATUS_CHANGED,
            entity_type="provider",
            entity_id=provider.id,
            previous=previous,
            status=provider.status,
        )
    return provider


async def lock_provider(session: AsyncSession, provider_id: uuid.UUID) -> Provider:
    """Locks the provider to change it or its subscriptions or caps, and bumps its revision (written
    with the transaction's other changes): an engine that read it before this commit and locks it
    after reads it again instead of planning on what it read (app/engine/distribute.py)."""
    provider = (
        await session.execute(
            select(Provider)
            .where(Provider.id == provider_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if provider is None:
        raise NotFound("provider", provider_id)
    provider.revision += 1
    return provider


async def lock_providers(session: AsyncSession, provider_ids: Sequence[uuid.UUID]) -> None:
    """In ascending id order, the engine's order, so the two never deadlock; revisions bumped as
    lock_provider does."""
    ids = sorted(set(provider_ids))
    if ids:
        await session.execute(
            sa.select(col(Provider.id))
            .where(col(Provider.id).in_(ids))
            .order_by(col(Provider.id))
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
        await session.execute(
            sa.update(Provider).where(col(Provider.id).in_(ids)).values(revision=Provider.revision + 1)
        )


async def sync_subscription_statuses(session: AsyncSession, *, provider_ids: Sequence[uuid.UUID]) -> None:
    """ACTIVE <-> INSUFFICIENT_FUNDS as each provider's balance now implies; PAUSED stays.
    Callers hold the providers' row locks."""
    if not provider_ids:
        return
    await session.execute(
        sa.text(
            """
            UPDATE subscriptions s
            SET status = CASE WHEN lv.price_cents > p.balance_cents
                              THEN 'INSUFFICIENT_FUNDS' ELSE 'ACTIVE' END
            FROM providers p, competition_levels lv
            WHERE s.provider_id = ANY(CAST(:ids AS uuid[])) AND p.id = s.provider_id
              AND lv.id = s.competition_level_id
              AND s.status IN ('ACTIVE', 'INSUFFICIENT_FUNDS')
              AND s.status <> CASE WHEN lv.price_cents > p.balance_cents
                                   THEN 'INSUFFICIENT_FUNDS' ELSE 'ACTIVE' END
            """
        ),
        {"ids": list(provider_ids)},
    )


async def post_entry(
    session: AsyncSession,
    *,
    provider: Provider,
    amount_cents: int,
    kind: LedgerKind,
    reference: str | None,
    note: str | None = None,
    assignment_id: uuid.UUID | None = None,
) -> LedgerEntry:
    """The one way a service changes a balance: its entry, the new balance and the subscription
    statuses it implies, together. The caller holds `provider`'s row lock (`lock_provider`)."""
    new_balance = provider.balance_cents + amount_cents
    if new_balance < 0:
        raise Conflict(
            f"provider {provider.id} has {provider.balance_cents} cents; "
            f"{-amount_cents} cannot be taken without a negative balance",
            field="amountCents",
        )
    provider.balance_cents = new_balance
    entry = LedgerEntry(
        provider_id=provider.id,
        amount_cents=amount_cents,
        balance_after_cents=new_balance,
        kind=kind,
        reference=reference,
        note=note,
        assignment_id=assignment_id,
    )
    session.add(entry)
    await session.flush()
    await sync_subscription_statuses(session, provider_ids=[provider.id])
    return entry


async def top_up(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, amount_cents: int, reference: str
) -> LedgerEntry:
    """Applied once per (provider, reference): a retry returns the first entry unchanged. The same
    reference with another amount is a CONFLICT, not a silent no-op."""
    require_operator(actor, "topping up balances")
    _guards.bounded_int(amount_cents, field="amountCents", minimum=1, maximum=MAX_AMOUNT_CENTS)
    reference = _guards.text(reference, field="reference", max_length=200)
    async with db.begin() as session:
        provider = await lock_provider(session, provider_id)
        # read after the lock: a concurrent first attempt has committed by now
        existing = (
            await session.execute(
                select(LedgerEntry).where(
                    LedgerEntry.provider_id == provider_id,
                    LedgerEntry.kind == LedgerKind.TOP_UP,
                    LedgerEntry.reference == reference,
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            if existing.amount_cents != amount_cents:
                raise Conflict(
                    f"top-up {reference!r} was already applied with {existing.amount_cents} cents",
                    field="reference",
                )
            return existing
        entry = await post_entry(
            session, provider=provider, amount_cents=amount_cents, kind=LedgerKind.TOP_UP, reference=reference
        )
        record(
            session,
            actor,
            AuditAction.BALANCE_CHANGED,
            entity_type="provider",
            entity_id=provider_id,
            kind=LedgerKind.TOP_UP,
            amount_cents=amount_cents,
            reference=reference,
            balance_after_cents=entry.balance_after_cents,
        )
    return entry


async def adjust_balance(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID,
    amount_cents: int,
    kind: LedgerKind,
    reference: str | None = None,
    note: str | None = None,
    assignment_id: uuid.UUID | None = None,
) -> LedgerEntry:
    """REFUND (positive) or ADJUSTMENT (either sign). A CHARGE is only ever written by the engine,
    with its assignment: never a charge without a lead."""
    require_operator(actor, "adjusting balances")
    if kind not in (LedgerKind.REFUND, LedgerKind.ADJUSTMENT):
        raise InvalidInput(
            "only REFUND or ADJUSTMENT: top-ups use topUpBalance, charges come from distributions",
            field="kind",
        )
    _guards.bounded_int(
        amount_cents, field="amountCents", minimum=-MAX_AMOUNT_CENTS, maximum=MAX_AMOUNT_CENTS
    )
    if amount_cents == 0:
        raise InvalidInput("amountCents must not be zero", field="amountCents")
    if kind is LedgerKind.REFUND and amount_cents < 0:
        raise InvalidInput("a refund credits the provider: amountCents must be positive", field="amountCents")
    if kind is LedgerKind.REFUND and assignment_id is not None:
        # the refund of an assignment is its price, once: approving its return writes it
        raise InvalidInput("an assignment is refunded by approving its return", field="assignmentId")
    async with db.begin() as session:
        provider = await lock_provider(session, provider_id)
        entry = await post_entry(
            session,
            provider=provider,
            amount_cents=amount_cents,
            kind=kind,
            reference=reference,
            note=note,
            assignment_id=assignment_id,
        )
        record(
            session,
            actor,
            AuditAction.BALANCE_CHANGED,
            entity_type="provider",
            entity_id=provider_id,
            kind=kind,
            amount_cents=amount_cents,
            reference=reference,
            balance_after_cents=entry.balance_after_cents,
        )
    return entry


async def subscribe(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID,
    competition_level_id: uuid.UUID,
    filters: Any = None,
) -> Subscription:
    require_operator(actor, "subscribing providers to levels (the level sets the price)")
    conditions = validate_filters([] if filters is None else filters)
    try:
        async with db.begin() as session:
            provider = await lock_provider(session, provider_id)
            level = await session.get(CompetitionLevel, competition_level_id)
            if level is None or level.deleted_at is not None:
                raise NotFound("competition level", competition_level_id)
            status = (
                SubscriptionStatus.ACTIVE
                if provider.balance_cents >= level.price_cents
                else SubscriptionStatus.INSUFFICIENT_FUNDS
            )
            subscription = Subscription(
                provider_id=provider_id,
                competition_level_id=competition_level_id,
                status=status,
                filters=[c.as_json() for c in conditions],
            )
            session.add(subscription)
            await session.flush()
            record(
                session,
                actor,
                AuditAction.SUBSCRIPTION_CREATED,
                entity_type="subscription",
                entity_id=subscription.id,
                provider_id=provider_id,
                competition_level_id=competition_level_id,
                filters=subscription.filters,
            )
    except IntegrityError as exc:
        raise Conflict(
            "this provider is already subscribed to this competition level", field="competitionLevelId"
        ) from exc
    return subscription


async def lock_own_subscription(
    session: AsyncSession, *, actor: Actor, subscription_id: uuid.UUID
) -> tuple[Provider, Subscription]:
    """A subscription the principal may change (another provider's is NOT_FOUND, filtered in SQL),
    locked after its provider: the provider's row lock (which bumps its revision) is what every
    change to its subscriptions takes, in the engine's lock order."""
    found = (
        await session.execute(
            scope_to_own(
                select(col(Subscription.provider_id)).where(Subscription.id == subscription_id),
                col(Subscription.provider_id),
                actor,
            )
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound("subscription", subscription_id)
    provider = await lock_provider(session, found)
    subscription = (
        await session.execute(
            select(Subscription)
            .where(Subscription.id == subscription_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return provider, subscription


async def _change_subscription(
    db: Database, *, actor: Actor, subscription_id: uuid.UUID, pause: bool
) -> Subscription:
    """A provider pauses and resumes its own subscriptions (another's is NOT_FOUND), but not one
    an operator paused: that pause is the operator's to lift."""
    async with db.begin() as session:
        provider, subscription = await lock_own_subscription(
            session, actor=actor, subscription_id=subscription_id
        )
        previous = subscription.status
        by_operator = actor.provider_id is None
        if pause:
            if subscription.status != SubscriptionStatus.PAUSED or by_operator:
                subscription.paused_by_operator = by_operator
            subscription.status = SubscriptionStatus.PAUSED
        elif subscription.status == SubscriptionStatus.PAUSED:
            if subscription.paused_by_operator and not by_operator:
                raise Forbidden("an operator paused this subscription: only an operator can resume it")
            subscription.paused_by_operator = False
            level = await session.get(CompetitionLevel, subscription.competition_level_id)
            assert level is not None
            subscription.status = (
                SubscriptionStatus.ACTIVE
                if provider.balance_cents >= level.price_cents
                else SubscriptionStatus.INSUFFICIENT_FUNDS
            )
        if subscription.status != previous:
            record(
                session,
                actor,
                AuditAction.SUBSCRIPTION_STATUS_CHANGED,
                entity_type="subscription",
                entity_id=subscription.id,
                previous=previous,
                status=subscription.status,
            )
    return subscription


async def pause_subscription(db: Database, *, actor: Actor, subscription_id: uuid.UUID) -> Subscription:
    return await _change_subscription(db, actor=actor, subscription_id=subscription_id, pause=True)


async def resume_subscription(db: Database, *, actor: Actor, subscription_id: uuid.UUID) -> Subscription:
    return await _change_subscription(db, actor=actor, subscription_id=subscription_id, pause=False)


async def get_provider(db: Database, provider_id: uuid.UUID, *, actor: Actor) -> Provider:
    """A provider principal reads only its own; another id answers as a missing one does."""
    async with db.read() as session:
        stmt = scope_to_own(select(Provider).where(Provider.id == provider_id), col(Provider.id), actor)
        provider = (await session.execute(stmt)).scalar_one_or_none()
    if provider is None:
        raise NotFound("provider", provider_id)
    return provider


async def get_subscription(db: Database, subscription_id: uuid.UUID, *, actor: Actor) -> Subscription:
    stmt = select(Subscription).where(Subscription.id == subscription_id)
    async with db.read() as session:
        found = (
            await session.execute(scope_to_own(stmt, col(Subscription.provider_id), actor))
        ).scalar_one_or_none()
    if found is None:
        raise NotFound("subscription", subscription_id)
    return found


async def list_providers(db: Database, *, actor: Actor, first: int, after: PageKey | None) -> Page[Provider]:
    """A provider principal's list holds its own provider only."""
    async with db.read() as session:
        stmt = scope_to_own(select(Provider), col(Provider.id), actor)
        return await keyset_page(session, stmt, Provider, first=first, after=after)


async def list_ledger(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, first: int, after: PageKey | None
) -> Page[LedgerEntry]:
    check_own(actor, provider_id, "provider", provider_id)
    async with db.read() as session:
        stmt = scope_to_own(
            select(LedgerEntry).where(LedgerEntry.provider_id == provider_id),
            col(LedgerEntry.provider_id),
            actor,
        )
        return await keyset_page(session, stmt, LedgerEntry, first=first, after=after)
