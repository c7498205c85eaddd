"""Caps and a provider's time zone (SPEC §8). A cap limits leads and/or spend per local DAY, WEEK,
MONTH or in TOTAL, on one subscription or on the provider across all its subscriptions.

Caps are stored on their row (app/models/caps.py). What counts toward them is kept by the engine's
write statement as usage counters on the provider and subscription rows, whether they have caps or
not, so a new cap applies to the period under way and a distribution never counts a buyer's
history. A change of time zone moves every period's boundaries: under the provider's row lock (the
engine's lock), the counters are counted again. tests/invariants.py recounts them and must agree."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database
from app.engine.schedule import ScheduleError, zone
from app.engine.usage import LOCAL_PERIODS, current
from app.errors import InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.billing import Provider, Subscription
from app.models.caps import CapPeriod
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


async def recount_usage(session: AsyncSession, provider_id: uuid.UUID) -> None:
    """Counts the provider's usage counters and its subscriptions' again from the assignments (the
    current local periods, in its time zone now, and all time). Under the provider's lock."""
    await session.execute(RECOUNT_PROVIDER, {"provider": provider_id})
    await session.execute(RECOUNT_SUBSCRIPTIONS, {"provider": provider_id})


async def set_caps(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID | None = None,
    subscription_id: uuid.UUID | None = None,
    caps: Sequence[CapLimit],
) -> list[CapUsage]:
    """Replaces the caps of a provider (provider-wide) or of one subscription with `caps`: a period
    not given any more loses its cap. What counts toward a cap is counted whether it exists or not
    (the usage counters), so a new cap applies to the period already under way. A provider
    principal sets only its own."""
    if (provider_id is None) == (subscription_id is None):
        raise InvalidInput("give exactly one of providerId and subscriptionId", field="providerId")
    limits = validate_limits(caps)
    wanted = {
        CapPeriod(limit.period).value: {
            name: value
            for name, value in (("leads", limit.max_leads), ("spend", limit.max_spend_cents))
            if value is not None
        }
        for limit in limits
    }
    async with db.begin() as session:
        target: Provider | Subscription | None
        if subscription_id is not None:
            target = await session.get(Subscription, subscription_id)
            if target is None:
                raise NotFound("subscription", subscription_id)
            check_own(actor, target.provider_id, "subscription", subscription_id)
            provider_id = target.provider_id
        assert provider_id is not None
        check_own(actor, provider_id, "provider", provider_id)
        provider = await lock_provider(session, provider_id)
        if subscription_id is None:
            target = provider
        else:  # read again under the provider's lock, which guards its subscriptions too
            await session.refresh(target, with_for_update={"key_share": True})
        assert target is not None
        previous, target.caps = target.caps, wanted or None
        record(
            session,
            actor,
            AuditAction.CAPS_CHANGED,
            entity_type="subscription" if subscription_id else "provider",
            entity_id=subscription_id or provider_id,
            previous=previous,
            caps=wanted,
        )
    found_caps = await caps_of_providers(db, [provider_id])
    return [c for c in found_caps[provider_id] if c.subscription_id == subscription_id]


async def set_timezone(db: Database, *, actor: Actor, provider_id: uuid.UUID, timezone: str) -> Provider:
    """A new time zone moves every day, week and month of the provider: its usage counters and its
    subscriptions' are counted again in the new zone."""
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
            await recount_usage(session, provider_id)
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


def _used(what: str) -> str:
    row = "CASE WHEN c.subscription_id IS NULL THEN {p} ELSE {s} END"
    return row.format(
        p=current("p.", "c.period", what, timezone="p.timezone"),
        s=current("s.", "c.period", what, timezone="p.timezone"),
    )


# every cap of the providers (their own and their subscriptions'): one row per cap, from the JSON
USAGE = sa.text(f"""
WITH c AS (
    SELECT p.id AS provider_id, NULL::uuid AS subscription_id, e.key AS period, e.value AS lim
    FROM providers p, jsonb_each(p.caps) e
    WHERE p.id = ANY(CAST(:ids AS uuid[]))
    UNION ALL
    SELECT s.provider_id, s.id, e.key, e.value
    FROM subscriptions s, jsonb_each(s.caps) e
    WHERE s.provider_id = ANY(CAST(:ids AS uuid[]))
)
SELECT c.provider_id, c.subscription_id, c.period, (c.lim->>'leads')::int AS max_leads,
       (c.lim->>'spend')::bigint AS max_spend_cents,
       {_used("leads")} AS used_leads, {_used("spend_cents")} AS used_spend_cents,
       lw_period_start(c.period, now(), p.timezone) AS period_start
FROM c
JOIN providers p ON p.id = c.provider_id
LEFT JOIN subscriptions s ON s.id = c.subscription_id
ORDER BY c.subscription_id IS NOT NULL, c.subscription_id,
         array_position(ARRAY['DAY', 'WEEK', 'MONTH', 'TOTAL'], c.period)
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
        provider_id=row.provider_id,
        subscription_id=row.subscription_id,
        period=CapPeriod(row.period),
        max_leads=row.max_leads,
        max_spend_cents=row.max_spend_cents,
        used_leads=int(row.used_leads),
        used_spend_cents=int(row.used_spend_cents),
        period_start=None if start is None or start.year < 2 else start,
    )


def _recount(table: str, scope: str) -> sa.TextClause:
    """UPDATE of the usage counters of `table`'s rows of :provider from the assignments; `scope`
    selects the assignments a row counts (its provider's, or its subscription's). The current
    periods' starts are taken once per row (clock_timestamp() moves)."""
    sets = []
    for period in LOCAL_PERIODS:
        name = period.value.lower()
        counted = (
            f"{scope} AND a.created_at >= cur.{name}"
            f" AND lw_period_start('{period.value}', a.created_at, p.timezone) = cur.{name}"
        )
        sets += [
            f"usage_{name}_start = cur.{name}",
            f"usage_{name}_leads = (SELECT count(*) FROM assignments a WHERE {counted})",
            f"usage_{name}_spend_cents = (SELECT coalesce(sum(a.price_charged_cents), 0)"
            f" FROM assignments a WHERE {counted})",
        ]
    sets += [
        f"usage_total_leads = (SELECT count(*) FROM assignments a WHERE {scope})",
        f"usage_total_spend_cents = (SELECT coalesce(sum(a.price_charged_cents), 0)"
        f" FROM assignments a WHERE {scope})",
    ]
    starts = ", ".join(
        f"lw_period_start('{period.value}', clock.at, p.timezone) AS {period.value.lower()}"
        for period in LOCAL_PERIODS
    )
    join = "p.id = r.id" if table == "providers" else "p.id = r.provider_id"
    return sa.text(
        f"UPDATE {table} r SET {', '.join(sets)}"
        f" FROM providers p, LATERAL (SELECT clock_timestamp() AS at) clock, LATERAL (SELECT {starts}) cur"
        f" WHERE {join} AND p.id = :provider"
    )


RECOUNT_PROVIDER = _recount("providers", "a.provider_id = r.id")
RECOUNT_SUBSCRIPTIONS = _recount("subscriptions", "a.subscription_id = r.id")
