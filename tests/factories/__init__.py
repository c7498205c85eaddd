"""Factories per aggregate, built on the real services (so tests exercise the same paths)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.result import AssignedProvider
from app.models.billing import Provider, Subscription
from app.models.leads import Lead
from app.models.niches import CompetitionLevel, LevelStrategy, Niche
from app.services import billing, caps, leads, niches
from app.services.audit import SYSTEM

_counter = itertools.count(1)


async def make_niche(
    db: Database,
    *,
    levels: Sequence[tuple[int, int]] = ((4500, 3), (3000, 3), (1500, 3)),
    strategy: LevelStrategy = LevelStrategy.ALL_LEVELS,
    name: str | None = None,
) -> tuple[Niche, list[CompetitionLevel]]:
    """levels: (price_cents, max_recipients) per level, positions 1..n."""
    niche = await niches.create_niche(
        db, actor=SYSTEM, name=name or f"Niche {next(_counter)}", level_strategy=strategy
    )
    made = [
        await niches.create_level(
            db,
            actor=SYSTEM,
            niche_id=niche.id,
            name=f"L{i + 1}",
            price_cents=price,
            max_recipients=max_recipients,
        )
        for i, (price, max_recipients) in enumerate(levels)
    ]
    return niche, made


async def make_provider(
    db: Database, *, balance_cents: int = 0, name: str | None = None, provider_id: uuid.UUID | None = None
) -> Provider:
    n = next(_counter)
    provider = await billing.create_provider(
        db, actor=SYSTEM, name=name or f"Provider {n}", email=f"p{n}-{uuid.uuid4().hex[:6]}@example.test"
    )
    if provider_id is not None:
        provider = await _rekey(db, provider, provider_id)
    if balance_cents:
        await billing.top_up(
            db, actor=SYSTEM, provider_id=provider.id, amount_cents=balance_cents, reference="initial"
        )
    return await billing.get_provider(db, provider.id, actor=SYSTEM)


async def _rekey(db: Database, provider: Provider, new_id: uuid.UUID) -> Provider:
    """Tests of the provider-id tiebreak need ids in a known order."""
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE providers SET id = $1 WHERE id = $2", (new_id, provider.id))
    return await billing.get_provider(db, new_id, actor=SYSTEM)


async def subscribe(
    db: Database, provider: Provider, level: CompetitionLevel, filters: Any = None
) -> Subscription:
    return await billing.subscribe(
        db, actor=SYSTEM, provider_id=provider.id, competition_level_id=level.id, filters=filters
    )


async def make_lead(
    db: Database, niche: Niche, attributes: dict[str, Any] | None = None, *, approved: bool = True
) -> Lead:
    lead = await leads.submit_lead(
        db, actor=SYSTEM, niche_id=niche.id, attributes=attributes or {"state": "TX", "zip": "75001"}
    )
    if approved:
        lead, _ = await leads.approve_lead(db, actor=SYSTEM, lead_id=lead.id)
    return lead


def ordered_ids(n: int) -> list[uuid.UUID]:
    """n UUIDs in ascending order."""
    return [uuid.UUID(int=(i + 1) << 64 | next(_counter)) for i in range(n)]


async def make_assignment(db: Database, niche: Niche, provider: Provider) -> AssignedProvider:
    """A new lead of `niche` distributed: `provider`'s assignment of it (the provider must be
    subscribed and able to pay); what a return refers to."""
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    (assigned,) = [a for a in result.assigned if a.provider_id == provider.id]
    return assigned


async def backdate_assignments(db: Database, where: str, to: str, **params: Any) -> None:
    """Moves assignments (`where`, SQL on assignments) to `to` (SQL), as history written long ago,
    then counts their providers' usage again: the engine counted them at the time they were made."""
    async with db.engine.begin() as conn:
        moved = await conn.execute(
            sa.text(f"UPDATE assignments SET created_at = {to} WHERE {where} RETURNING provider_id"), params
        )
        providers = sorted({row[0] for row in moved})
    for provider_id in providers:
        async with db.begin() as session:
            await billing.lock_provider(session, provider_id)
            await caps.recount_usage(session, provider_id)
