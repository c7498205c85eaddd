"""Demo data and a walk-through: a niche with three levels, providers in every interesting state,
a few leads distributed, and who got what and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.result import DistributionResult
from app.engine.schedule import DAYS
from app.models.billing import Provider, ProviderStatus
from app.models.caps import CapPeriod
from app.models.niches import LevelStrategy
from app.services import billing, caps, leads, niches, subscriptions
from app.services.audit import SYSTEM
from app.services.caps import CapLimit

HILL_ZONE = "America/Chicago"


@dataclass(frozen=True)
class DemoRun:
    niche_name: str
    provider_names: dict[str, str]
    results: list[tuple[dict[str, object], DistributionResult]]


LEADS: list[dict[str, object]] = [
    {"name": "Pat Doe", "state": "TX", "zip": "75001", "roof_sqft": 2400},
    {"name": "Sam Roe", "state": "OK", "zip": "73001", "roof_sqft": 1800},
    {"name": "Ana Poe", "state": "TX", "zip": "77002"},
    {"name": "Lee Moe", "state": "TX", "zip": "75204", "roof_sqft": 3100},
    {"name": "Kim Zoe", "state": "TX", "zip": "78701", "roof_sqft": 2000},
]


async def run_demo(db: Database) -> DemoRun:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    niche = await niches.create_niche(
        db, actor=SYSTEM, name=f"Roofing / Texas ({stamp})", level_strategy=LevelStrategy.ALL_LEVELS
    )
    levels = [
        await niches.create_level(
            db, actor=SYSTEM, niche_id=niche.id, name=name, price_cents=price, max_recipients=n
        )
        for name, price, n in (("Exclusive", 4500, 1), ("Shared", 3000, 2), ("Budget", 1500, 3))
    ]
    names: dict[str, str] = {}
    # Hill Country's hours (Chicago time) open two hours from now, so the demo shows them closed
    local = datetime.now(ZoneInfo(HILL_ZONE))
    opens, closes = local + timedelta(hours=2), local + timedelta(hours=10)
    hours = {"windows": [{"days": list(DAYS), "from": f"{opens:%H}:00", "to": f"{closes:%H}:00"}]}

    async def provider(name: str, balance: int) -> Provider:
        made = await billing.create_provider(
            db,
            actor=SYSTEM,
            name=name,
            email=f"{name.split()[0].lower()}.{stamp.replace(':', '')}@example.test",
        )
        if balance:
            await billing.top_up(
                db, actor=SYSTEM, provider_id=made.id, amount_cents=balance, reference="demo"
            )
        names[str(made.id)] = name
        return made

    acme = await provider("Acme Roofing", 20_000)
    bolt = await provider("Bolt Roofs", 9_000)
    cedar = await provider("Cedar & Sons", 3_500)  # runs short quickly
    delta = await provider("Delta Shingle", 50_000)
    echo = await provider("Echo Exteriors", 50_000)
    frontier = await provider("Frontier Roofing", 50_000)
    gulf = await provider("Gulf Coast Roofing", 50_000)  # takes at most 2 leads a day
    hill = await provider("Hill Country Roofs", 50_000)  # takes leads only in its delivery hours
    await caps.set_timezone(db, actor=SYSTEM, provider_id=hill.id, timezone=HILL_ZONE)
    for p in (acme, bolt, cedar, delta, echo, frontier, gulf, hill):
        for level in levels:
            filters: list[dict[str, object]] | None = None
            if p is bolt:
                filters = [{"field": "state", "op": "eq", "value": "TX"}]
            if p is delta:
                filters = [{"field": "roof_sqft", "op": "gte", "value": 2000}]
            sub = await billing.subscribe(
                db, actor=SYSTEM, provider_id=p.id, competition_level_id=level.id, filters=filters
            )
            if p is echo and level is levels[1]:
                await billing.pause_subscription(db, actor=SYSTEM, subscription_id=sub.id)
            if p is hill:
                await subscriptions.set_schedule(db, actor=SYSTEM, subscription_id=sub.id, schedule=hours)
    await caps.set_caps(db, actor=SYSTEM, provider_id=gulf.id, caps=[CapLimit(CapPeriod.DAY, max_leads=2)])
    await billing.set_provider_status(
        db, actor=SYSTEM, provider_id=frontier.id, status=ProviderStatus.SUSPENDED
    )
    results = []
    for attributes in LEADS:
        lead = await leads.submit_lead(db, actor=SYSTEM, niche_id=niche.id, attributes=attributes)
        await leads.approve_lead(db, actor=SYSTEM, lead_id=lead.id)
        results.append((attributes, await distribute_lead(db, lead_id=lead.id)))
    return DemoRun(niche_name=niche.name, provider_names=names, results=results)
