"""Caps and a provider's time zone (SPEC §8). A cap limits leads and/or spend per local DAY, WEEK,
MONTH or in TOTAL, on one subscription or on the provider across all its subscriptions.

Usage is kept on each cap row, for the period it last counted, by the engine's write statement, so
a distribution never counts a buyer's history. Here, under the provider's row lock (the engine's
lock: nothing is assigned to the provider meanwhile), a new cap's current period is counted once
from the assignments, and a change of time zone (which moves every period's boundaries) counts the
current periods again. tests/invariants.py recounts them and must agree."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.engine.schedule import ScheduleError, zone
from app.errors import InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.billing import Provider, Subscription
from app.models.caps import Cap, CapPeriod
from app.services import _guards
from app.services.audit import Actor, record
from app.services.billing import lock_provider
from app.services.principals import check_own

MAX_CAP = 10**12


@dataclass(frozen=True)
class CapLimit:
    """A cap as asked for: at least one of the two limits."""

    period: CapPeriod
    max_leads: int | None = None
    max_spend_cents: int | None = None


@dataclass(frozen=True)
class CapUsage:
    """A cap with what its current period has used."""

    id: uuid.UUID
    provider_id: uuid.UUID
    subscription_id: uuid.UUID | None
    period: CapPeriod
    max_leads: int | None
    max_spend_cents: int | None
    used_leads: int
    used_spend_cents: int
    period_start: datetime | None  # None for TOTAL

    @property
    def provider_wide(self) -> bool:
        return self.subscription_id is None


def validate_limits(limits: Sequence[CapLimit]) -> list[CapLimit]:
    seen: set[CapPeriod] = set()
    for n, limit in enumerate(limits):
        field = f"caps[{n}]"
        period = CapPeriod(limit.period)
        if period in seen:
            raise InvalidInput(f"{field}: one cap per period; {period} is given twice", field=field)
        seen.add(period)
        if limit.max_leads is None and limit.max_spend_cents is None:
            raise InvalidInput(f"{field}: give maxLeads, maxSpendCents or both", field=field)
        for name, value in (("maxLeads", limit.max_leads), ("maxSpendCents", limit.max_spend_cents)):
            if value is not None:
                _guards.bounded_int(value, field=f"{field}.{name}", minimum=0, maximum=MAX_CAP)
    return list(limits)


def validate_timezone(name: str) -> str:
    try:
        zone(name)
    except ScheduleError as exc:
        raise InvalidInput(str(exc), field="timezone") from None
    return name


# Counts a cap's current period from the assignments (the same period definition as the engine:
# lw_period_start). The range condition lets the provider's (provider_id, created_at) index work;
# the equality is the definition.
RECOUNT = sa.text("""
UPDATE caps c
SET period_start = n.start, used_leads = n.leads, used_spend_cents = n.spend
FROM (
    SELECT c2.id, cur.start, count(a.id) AS leads, coalesce(sum(a.price_charged_cents), 0) AS spend
    FROM caps c2
    JOIN providers p ON p.id = c2.provider_id
    CROSS JOIN LATERAL (SELECT lw_period_start(c2.period, clock_timestamp(), p.timezone) AS start) cur
    LEFT JOIN assignments a
           ON a.provider_id = c2.provider_id
          AND (c2.subscription_id IS NULL OR a.subscription_id = c2.subscription_id)
          AND a.created_at >= cur.start
          AND lw_period_start(c2.period, a.created_at, p.timezone) = cur.start
    WHERE c2.id = ANY(CAST(:ids AS uuid[]))
    GROUP BY c2.id, cur.start
) n
WHERE c.id = n.id
""")


async def _recount(session: AsyncSession, cap_ids: Sequence[uuid.UUID]) -> None:
    if cap_ids:
        await session.execute(RECOUNT, {"ids": list(cap_ids)})


async def set_caps(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID | None = None,
    subscription_id: uuid.UUID | None = None,
    caps: Sequence[CapLimit],
) -> list[CapUsage]:
    """Replaces the caps of a provider (provider-wide) or of one subscription with `caps`: a period
    not given any more loses its cap, a new one is counted from the assignments of its current
    period, a changed limit keeps its usage. A provider principal sets only its own."""
    if (provider_id is None) == (subscription_id is None):
        raise InvalidInput("give exactly one of providerId and subscriptionId", field="providerId")
    limits = validate_limits(caps)
    async with db.begin() as session:
        if subscription_id is not None:
            found = await session.get(Subscription, subscription_id)
            if found is None:
                raise NotFound("subscription", subscription_id)
            check_own(actor, found.provider_id, "subscription", subscription_id)
            provider_id = found.provider_id
        assert provider_id is not None
        check_own(actor, provider_id, "provider", provider_id)
        await lock_provider(session, provider_id)
        existing = {
            cap.period: cap
            for cap in (
                await session.scalars(
                    select(Cap).where(
                        Cap.provider_id == provider_id,
                        col(Cap.subscription_id).is_(None)
                        if subscription_id is None
                        else Cap.subscription_id == subscription_id,
                    )
                )
            ).all()
        }
        wanted = {CapPeriod(limit.period): limit for limit in limits}
        for period, cap in existing.items():
            if period not in wanted:
                await session.delete(cap)
        new: list[Cap] = []
        for period, limit in wanted.items():
            kept = existing.get(period)
            if kept is None:
                kept = Cap(provider_id=provider_id, subscription_id=subscription_id, period=period)
                session.add(kept)
                new.append(kept)
            kept.max_leads, kept.max_spend_cents = limit.max_leads, limit.max_spend_cents
            kept.updated_at = utcnow()
        await session.flush()
        await _recount(session, [cap.id for cap in new])
        record(
            session,
            actor,
            AuditAction.CAPS_CHANGED,
            entity_type="subscription" if subscription_id else "provider",
            entity_id=subscription_id or provider_id,
            caps=[
                {"period": p, "max_leads": lim.max_leads, "max_spend_cents": lim.max_spend_cents}
                for p, lim in sorted(wanted.items())
            ],
        )
    found_caps = await caps_of_providers(db, [provider_id])
    return [c for c in found_caps[provider_id] if c.subscription_id == subscription_id]


async def set_timezone(db: Database, *, actor: Actor, provider_id: uuid.UUID, timezone: str) -> Provider:
    """A new time zone moves every day, week and month of the provider: the current period of each
    of its caps is counted again in the new zone."""
    check_own(actor, provider_id, "provider", provider_id)
    name = validate_timezone(timezone.strip() if isinstance(timezone, str) else timezone)
    async with db.begin() as session:
        provider = await lock_provider(session, provider_id)
        # PostgreSQL computes the periods: it must know the zone too (its own tz database)
        if not await session.scalar(
            sa.text("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :tz)"), {"tz": name}
        ):
            raise InvalidInput(f"the database does not know the time zone {name!r}", field="timezone")
        previous = provider.timezone
        provider.timezone = name
        await session.flush()
        if name != previous:
            cap_ids = list(await session.scalars(select(col(Cap.id)).where(Cap.provider_id == provider_id)))
            await _recount(session, cap_ids)
            record(
                session,
                actor,
                AuditAction.PROVIDER_TIMEZONE_CHANGED,
                entity_type="provider",
                entity_id=provider_id,
                previous=previous,
                timezone=name,
            )
    return provider


USAGE = sa.text("""
SELECT c.id, c.provider_id, c.subscription_id, c.period, c.max_leads, c.max_spend_cents,
       CASE WHEN c.period_start = cur.start THEN c.used_leads ELSE 0 END AS used_leads,
       CASE WHEN c.period_start = cur.start THEN c.used_spend_cents ELSE 0 END AS used_spend_cents,
       cur.start AS period_start
FROM caps c
JOIN providers p ON p.id = c.provider_id
CROSS JOIN LATERAL (SELECT lw_period_start(c.period, now(), p.timezone) AS start) cur
WHERE c.provider_id = ANY(CAST(:ids AS uuid[]))
ORDER BY c.subscription_id IS NOT NULL, c.period
""")


async def caps_of_providers(
    db: Database, provider_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[CapUsage]]:
    """Every cap of these providers (theirs and their subscriptions'), with current usage: one
    statement for a batch (the GraphQL loaders)."""
    found: dict[uuid.UUID, list[CapUsage]] = defaultdict(list)
    async with db.connect() as conn:
        rows = await conn.execute(USAGE, {"ids": list(provider_ids)})
        for row in rows:
            found[row.provider_id].append(_usage(row))
    return {pid: found.get(pid, []) for pid in provider_ids}


def _usage(row: Any) -> CapUsage:
    start = row.period_start
    return CapUsage(
        id=row.id,
        provider_id=row.provider_id,
        subscription_id=row.subscription_id,
        period=CapPeriod(row.period),
        max_leads=row.max_leads,
        max_spend_cents=row.max_spend_cents,
        used_leads=int(row.used_leads),
        used_spend_cents=int(row.used_spend_cents),
        period_start=None if start is None or start.year < 2 else start,
    )
