"""Niches and their competition levels. Level changes lock the niche row (FOR NO KEY UPDATE), the
same lock the engine takes, so a distribution never sees a half-changed set of levels."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.billing import Subscription
from app.models.niches import DEFAULT_RETURN_WINDOW_HOURS, CompetitionLevel, LevelStrategy, Niche
from app.services import _guards
from app.services.audit import Actor, record
from app.services.billing import lock_providers, sync_subscription_statuses
from app.services.principals import require_operator

MAX_RECIPIENTS_LIMIT = 1000
MAX_RETURN_WINDOW_HOURS = 24 * 366  # a year: longer is a typo, not a policy


async def create_niche(
    db: Database,
    *,
    actor: Actor,
    name: str,
    level_strategy: LevelStrategy = LevelStrategy.ALL_LEVELS,
    auto_distribute: bool = False,
    return_window_hours: int = DEFAULT_RETURN_WINDOW_HOURS,
) -> Niche:
    require_operator(actor, "creating niches")
    niche = Niche(
        name=_guards.text(name, field="name"),
        level_strategy=LevelStrategy(level_strategy),
        auto_distribute=auto_distribute,
        return_window_hours=_check_return_window(return_window_hours),
    )
    try:
        async with db.begin() as session:
            session.add(niche)
            await session.flush()
            record(session, actor, AuditAction.NICHE_CREATED, entity_type="niche", entity_id=niche.id)
    except IntegrityError as exc:
        raise Conflict(f"a niche named {niche.name!r} already exists", field="name") from exc
    return niche


async def update_niche(
    db: Database,
    *,
    actor: Actor,
    niche_id: uuid.UUID,
    name: str | None = None,
    level_strategy: LevelStrategy | None = None,
    auto_distribute: bool | None = None,
    return_window_hours: int | None = None,
) -> Niche:
    require_operator(actor, "changing niches")
    if return_window_hours is not None:
        _check_return_window(return_window_hours)
    try:
        async with db.begin() as session:
            niche = await lock_niche(session, niche_id)
            if name is not None:
                niche.name = _guards.text(name, field="name")
            if level_strategy is not None:
                niche.level_strategy = LevelStrategy(level_strategy)
            if auto_distribute is not None:
                niche.auto_distribute = auto_distribute
            if return_window_hours is not None:
                # applies to requests from now on, for every assignment still inside the new window
                niche.return_window_hours = return_window_hours
            await session.flush()
            record(session, actor, AuditAction.NICHE_UPDATED, entity_type="niche", entity_id=niche.id)
    except IntegrityError as exc:
        raise Conflict(f"a niche named {name!r} already exists", field="name") from exc
    return niche


def _check_return_window(hours: int) -> int:
    return _guards.bounded_int(hours, field="returnWindowHours", minimum=0, maximum=MAX_RETURN_WINDOW_HOURS)


async def lock_niche(session: AsyncSession, niche_id: uuid.UUID) -> Niche:
    niche = (
        await session.execute(
            select(Niche).where(Niche.id == niche_id).with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
    ).scalar_one_or_none()
    if niche is None:
        raise NotFound("niche", niche_id)
    return niche


async def get_niche(db: Database, niche_id: uuid.UUID, *, actor: Actor) -> Niche:
    require_operator(actor, "reading niches")
    async with db.read() as session:
        niche = await session.get(Niche, niche_id)
    if niche is None:
        raise NotFound("niche", niche_id)
    return niche


async def list_levels(db: Database, niche_id: uuid.UUID) -> Sequence[CompetitionLevel]:
    async with db.read() as session:
        result = await session.execute(
            select(CompetitionLevel)
            .where(CompetitionLevel.niche_id == niche_id, col(CompetitionLevel.deleted_at).is_(None))
            .order_by(col(CompetitionLevel.order_position))
        )
        return result.scalars().all()


def _check_level_numbers(
    *, order_position: int | None, price_cents: int | None, max_recipients: int | None
) -> None:
    if order_position is not None:
        _guards.bounded_int(order_position, field="orderPosition", minimum=1, maximum=10_000)
    if price_cents is not None:
        _guards.bounded_int(price_cents, field="priceCents", minimum=0, maximum=10**12)
    if max_recipients is not None:
        _guards.bounded_int(max_recipients, field="maxRecipients", minimum=1, maximum=MAX_RECIPIENTS_LIMIT)


async def create_level(
    db: Database,
    *,
    actor: Actor,
    niche_id: uuid.UUID,
    name: str,
    price_cents: int,
    max_recipients: int,
    order_position: int | None = None,
    active: bool = True,
) -> CompetitionLevel:
    """Without an order_position the level goes last."""
    require_operator(actor, "creating competition levels")
    _check_level_numbers(
        order_position=order_position, price_cents=price_cents, max_recipients=max_recipients
    )
    clean_name = _guards.text(name, field="name")
    try:
        async with db.begin() as session:
            await lock_niche(session, niche_id)
            if order_position is None:
                highest = await session.scalar(
                    sa.select(sa.func.max(col(CompetitionLevel.order_position))).where(
                        col(CompetitionLevel.niche_id) == niche_id,
                        col(CompetitionLevel.deleted_at).is_(None),
                    )
                )
                order_position = (highest or 0) + 1
            level = CompetitionLevel(
                niche_id=niche_id,
                name=clean_name,
                order_position=order_position,
                price_cents=price_cents,
                max_recipients=max_recipients,
                active=active,
            )
            session.add(level)
            await session.flush()
            record(
                session,
                actor,
                AuditAction.LEVEL_CREATED,
                entity_type="competition_level",
                entity_id=level.id,
                niche_id=niche_id,
                order_position=order_position,
                price_cents=price_cents,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"order position {order_position} is already taken in this niche", field="orderPosition"
        ) from exc
    return level


async def _lock_level(session: AsyncSession, level_id: uuid.UUID) -> CompetitionLevel:
    level = await session.get(CompetitionLevel, level_id)
    if level is None or level.deleted_at is not None:
        raise NotFound("competition level", level_id)
    await lock_niche(session, level.niche_id)
    await session.refresh(level)
    return level


async def update_level(
    db: Database,
    *,
    actor: Actor,
    level_id: uuid.UUID,
    name: str | None = None,
    order_position: int | None = None,
    price_cents: int | None = None,
    max_recipients: int | None = None,
    active: bool | None = None,
) -> CompetitionLevel:
    require_operator(actor, "changing competition levels")
    _check_level_numbers(
        order_position=order_position, price_cents=price_cents, max_recipients=max_recipients
    )
    clean_name = _guards.text(name, field="name") if name is not None else None
    changes: dict[str, object] = {}
    try:
        async with db.begin() as session:
            level = await _lock_level(session, level_id)
            for field, value in (
                ("name", clean_name),
                ("order_position", order_position),
                ("price_cents", price_cents),
                ("max_recipients", max_recipients),
                ("active", active),
            ):
                if value is not None and getattr(level, field) != value:
                    changes[field] = value
                    setattr(level, field, value)
            await session.flush()
            if "price_cents" in changes:
                # a new price can make subscribers' balances (in)sufficient
                subscriber_ids = (
                    await session.scalars(
                        select(Subscription.provider_id).where(Subscription.competition_level_id == level.id)
                    )
                ).all()
                await lock_providers(session, subscriber_ids)
                await sync_subscription_statuses(session, provider_ids=subscriber_ids)
            record(
                session,
                actor,
                AuditAction.LEVEL_UPDATED,
                entity_type="competition_level",
                entity_id=level.id,
                changes=changes,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"order position {order_position} is already taken in this niche", field="orderPosition"
        ) from exc
    return level


async def delete_level(db: Database, *, actor: Actor, level_id: uuid.UUID) -> CompetitionLevel:
    """Soft delete: assignments keep pointing at it; its position becomes free."""
    require_operator(actor, "deleting competition levels")
    async with db.begin() as session:
        level = await _lock_level(session, level_id)
        level.deleted_at = utcnow()
        level.active = False
        record(
            session,
            actor,
            AuditAction.LEVEL_DELETED,
            entity_type="competition_level",
            entity_id=level.id,
        )
    return level


async def list_niches(db: Database, *, actor: Actor) -> Sequence[Niche]:
    require_operator(actor, "listing niches")
    async with db.read() as session:
        return (await session.execute(select(Niche).order_by(col(Niche.name)))).scalars().all()
