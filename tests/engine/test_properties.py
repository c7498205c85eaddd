"""Property test of the engine's invariants over random niches, levels, balances, statuses and
filters. Sync test, own event loop and connection pool per example (function-scoped fixtures are not
reset between hypothesis examples); the database is truncated at the start of each example."""

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import create_database
from app.engine.distribute import distribute_lead
from app.engine.preview import preview_distribution
from app.models.billing import ProviderStatus
from app.models.niches import LevelStrategy
from app.services import billing, leads, niches
from app.services.audit import SYSTEM
from tests.conftest import TABLES
from tests.invariants import violations

FILTERS = [
    None,
    [{"field": "state", "op": "in", "value": ["TX", "OK"]}],
    [{"field": "zip", "op": "prefix", "value": "75"}],
    [{"field": "score", "op": "gte", "value": 50}],
    [{"field": "score", "op": "lte", "value": 50}, {"field": "state", "op": "neq", "value": "OK"}],
]

level_st = st.tuples(st.integers(0, 3000), st.integers(1, 3), st.booleans())  # price, max, active
provider_st = st.tuples(st.integers(0, 8000), st.booleans())  # balance, suspended
attributes_st = st.fixed_dictionaries(
    {"state": st.sampled_from(["TX", "OK", "CA"]), "zip": st.sampled_from(["75001", "73301", "90210"])},
    optional={"score": st.integers(0, 100)},
)
scenario_st = st.fixed_dictionaries(
    {
        "strategy": st.sampled_from(list(LevelStrategy)),
        "levels": st.lists(level_st, min_size=1, max_size=4),
        "providers": st.lists(provider_st, min_size=1, max_size=6),
        # per (provider, level): subscribed?, filter index, paused?
        "subs": st.lists(
            st.tuples(st.booleans(), st.integers(0, len(FILTERS) - 1), st.booleans()),
            min_size=24,
            max_size=24,
        ),
        "leads": st.lists(attributes_st, min_size=1, max_size=8),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenario_st)
def test_engine_invariants(database_url: str, scenario: dict[str, Any]) -> None:
    asyncio.run(_check(database_url, scenario))


async def _check(database_url: str, s: dict[str, Any]) -> None:
    db = create_database(database_url, pool_size=2)
    try:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {TABLES} CASCADE")
        niche = await niches.create_niche(db, actor=SYSTEM, name="N", level_strategy=s["strategy"])
        levels = []
        for i, (price, max_recipients, active) in enumerate(s["levels"]):
            levels.append(
                await niches.create_level(
                    db,
                    actor=SYSTEM,
                    niche_id=niche.id,
                    name=f"L{i + 1}",
                    price_cents=price,
                    max_recipients=max_recipients,
                    active=active,
                )
            )
        for p, (balance, suspended) in enumerate(s["providers"]):
            provider = await billing.create_provider(db, actor=SYSTEM, name=f"P{p}", email=f"p{p}@x.test")
            if balance:
                await billing.top_up(
                    db, actor=SYSTEM, provider_id=provider.id, amount_cents=balance, reference="r"
                )
            for li, level in enumerate(levels):
                subscribed, filter_index, paused = s["subs"][(p * 4 + li) % 24]
                if subscribed:
                    sub = await billing.subscribe(
                        db,
                        actor=SYSTEM,
                        provider_id=provider.id,
                        competition_level_id=level.id,
                        filters=FILTERS[filter_index],
                    )
                    if paused:
                        await billing.pause_subscription(db, actor=SYSTEM, subscription_id=sub.id)
            if suspended:
                await billing.set_provider_status(
                    db, actor=SYSTEM, provider_id=provider.id, status=ProviderStatus.SUSPENDED
                )
        active = [lv for lv, (_, _, is_active) in zip(levels, s["levels"], strict=True) if is_active]
        for n, attributes in enumerate(s["leads"]):
            lead = await leads.submit_lead(db, actor=SYSTEM, niche_id=niche.id, attributes=attributes)
            await leads.approve_lead(db, actor=SYSTEM, lead_id=lead.id)
            preview = await preview_distribution(db, lead_id=lead.id)
            result = await distribute_lead(db, lead_id=lead.id)
            # determinism: the dry run on the same state predicted exactly what the engine did
            assert [p.candidate.provider_id for p in preview.plan.picks] == [
                a.provider_id for a in result.assigned
            ]
            assert [(k.candidate.provider_id, k.reason) for k in preview.plan.skips] == [
                (k.provider_id, k.reason) for k in result.skipped
            ]
            # rotation: with no level changes, starting levels go round the active levels in order
            started = [e.level_id for e in result.events if e.type.value == "LEVEL_STARTED"]
            if active:
                assert started[0] == active[n % len(active)].id
            else:
                assert started == []
            # FIRST_MATCH stops at the first level that assigned
            if s["strategy"] is LevelStrategy.FIRST_MATCH and result.assigned:
                assert len({a.level_id for a in result.assigned}) == 1
                assert started[-1] == result.assigned[0].level_id
            # every level's cap holds
            per_level: dict[object, int] = {}
            for a in result.assigned:
                per_level[a.level_id] = per_level.get(a.level_id, 0) + 1
            caps = {lv.id: lv.max_recipients for lv in levels}
            assert all(count <= caps[level_id] for level_id, count in per_level.items())
        assert await violations(db) == {}
    finally:
        await db.dispose()
