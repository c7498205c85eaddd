"""Traversal (ALL_LEVELS / FIRST_MATCH), cross-level dedupe, LRU order, backfill and skip reasons."""

from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.billing import ProviderStatus
from app.models.distribution import SkipReason
from app.models.niches import LevelStrategy
from app.services import billing
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, ordered_ids, subscribe


async def test_all_levels_visits_every_level_and_dedupes_across_levels(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(300, 2), (200, 2), (100, 2)])
    ids = ordered_ids(4)
    providers = [await make_provider(db, balance_cents=10_000, provider_id=i) for i in ids]
    for level in levels:
        for p in providers:
            await subscribe(db, p, level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    by_level = [(a.level_name, a.provider_id) for a in result.assigned]
    # L1 takes p0, p1; L2 skips them as ALREADY_ASSIGNED and takes p2, p3; L3 finds nobody left
    assert by_level == [("L1", ids[0]), ("L1", ids[1]), ("L2", ids[2]), ("L2", ids[3])]
    already = [
        (s.level_name, s.provider_id) for s in result.skipped if s.reason is SkipReason.ALREADY_ASSIGNED
    ]
    assert already == [("L2", ids[0]), ("L2", ids[1])] + [("L3", i) for i in ids]
    assert result.status.value == "SUCCESS"  # dedupe skips do not make a run PARTIAL


async def test_first_match_stops_after_the_first_level_that_assigns(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(300, 1), (200, 5)], strategy=LevelStrategy.FIRST_MATCH)
    rich = await make_provider(db, balance_cents=10_000)
    for level in levels:
        await subscribe(db, rich, level)
    other = await make_provider(db, balance_cents=10_000)
    await subscribe(db, other, levels[1])
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.level_name for a in result.assigned] == ["L1"]
    # the next lead starts at L2 (rotation); FIRST_MATCH stops there too
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert sorted(a.level_name for a in result.assigned) == ["L2", "L2"]


async def test_first_match_falls_through_a_level_that_assigns_nobody(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(300, 1), (200, 1)], strategy=LevelStrategy.FIRST_MATCH)
    provider = await make_provider(db, balance_cents=250)  # cannot pay L1
    for level in levels:
        await subscribe(db, provider, level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.level_name for a in result.assigned] == ["L2"]
    assert [s.reason for s in result.skipped] == [SkipReason.INSUFFICIENT_BALANCE]
    assert result.status.value == "PARTIAL"
    # FIRST_MATCH reads the starting level first; L2 was read when the walk reached it
    assert result.statements == 4  # lock, L1, L2, write (which locks the provider)


async def test_lru_nulls_first_then_provider_id(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    ids = ordered_ids(3)
    providers = [await make_provider(db, balance_cents=10_000, provider_id=i) for i in reversed(ids)]
    for p in providers:
        await subscribe(db, p, level)
    winners = []
    for _ in range(6):
        result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
        winners.append(result.assigned[0].provider_id)
    # never-served first in id order, then least recently served
    assert winners == ids + ids


async def test_backfill_when_a_pick_cannot_pay(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(1000, 2)])
    ids = ordered_ids(3)
    poor = await make_provider(db, balance_cents=999, provider_id=ids[0])
    rich = [await make_provider(db, balance_cents=5000, provider_id=i) for i in ids[1:]]
    for p in [poor, *rich]:
        await subscribe(db, p, level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.provider_id for a in result.assigned] == ids[1:]
    assert [(s.provider_id, s.reason) for s in result.skipped] == [(ids[0], SkipReason.INSUFFICIENT_BALANCE)]
    assert result.status.value == "PARTIAL"
    assert (await billing.get_provider(db, poor.id, actor=SYSTEM)).balance_cents == 999


async def test_suspended_provider_paused_subscription_and_filters(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 5)])
    ids = ordered_ids(5)
    ps = [await make_provider(db, balance_cents=1000, provider_id=i) for i in ids]
    await subscribe(db, ps[0], level)
    await billing.set_provider_status(db, actor=SYSTEM, provider_id=ps[0].id, status=ProviderStatus.SUSPENDED)
    paused = await subscribe(db, ps[1], level)
    await billing.pause_subscription(db, actor=SYSTEM, subscription_id=paused.id)
    await subscribe(db, ps[2], level, filters=[{"field": "state", "op": "eq", "value": "OK"}])
    await subscribe(db, ps[3], level, filters=[{"field": "income", "op": "gte", "value": 5}])
    await subscribe(db, ps[4], level, filters=[{"field": "zip", "op": "prefix", "value": "75"}])
    result = await distribute_lead(
        db, lead_id=(await make_lead(db, niche, {"state": "TX", "zip": "75001"})).id
    )
    assert [a.provider_id for a in result.assigned] == [ids[4]]
    assert [(s.provider_id, s.reason) for s in result.skipped] == [
        (ids[0], SkipReason.PROVIDER_SUSPENDED),
        (ids[1], SkipReason.SUBSCRIPTION_PAUSED),
        (ids[2], SkipReason.INELIGIBLE),
        (ids[3], SkipReason.ELIGIBILITY_ERROR),
    ]
    assert result.status.value == "PARTIAL"  # an eligibility error counts like a balance skip
    # resuming and reactivating brings them back
    await billing.resume_subscription(db, actor=SYSTEM, subscription_id=paused.id)
    await billing.set_provider_status(db, actor=SYSTEM, provider_id=ps[0].id, status=ProviderStatus.ACTIVE)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert {ids[0], ids[1]} <= {a.provider_id for a in result.assigned}


async def test_max_recipients_caps_each_level(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 3)])
    for _ in range(10):
        await subscribe(db, await make_provider(db, balance_cents=1000), level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert len(result.assigned) == 3
    assert result.skipped == []  # the walk stops once the level is full


async def test_walk_past_the_candidate_window_reads_the_whole_level(db: Database) -> None:
    """The engine reads 2 * max_recipients + 8 candidates per level first; a walk that runs off
    that window must still reach the rest of the level."""
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    ids = ordered_ids(12)
    for provider_id in ids[:11]:
        p = await make_provider(db, balance_cents=1000, provider_id=provider_id)
        await subscribe(db, p, level, filters=[{"field": "state", "op": "eq", "value": "CA"}])
    last = await make_provider(db, balance_cents=1000, provider_id=ids[11])
    await subscribe(db, last, level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.provider_id for a in result.assigned] == [ids[11]]
    assert [s.provider_id for s in result.skipped] == ids[:11]
    assert result.statements == 4  # lock, window, whole level, write (which locks the providers)


async def test_queue_stays_fifo_when_the_clock_is_behind(db: Database) -> None:
    """Picks are stamped after the niche's last_served_at, not just clock_timestamp(): a clock that
    stepped back cannot send a just-served provider to the front of the queue."""
    niche, (level,) = await make_niche(db, levels=[(100, 2)])
    ids = ordered_ids(4)
    for provider_id in ids:
        await subscribe(db, await make_provider(db, balance_cents=10_000, provider_id=provider_id), level)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE niches SET last_served_at = now() + interval '1 day' WHERE id = $1", (niche.id,)
        )
    winners = []
    for _ in range(4):
        result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
        winners.append([a.provider_id for a in result.assigned])
    assert winners == [ids[:2], ids[2:], ids[:2], ids[2:]]
    async with db.engine.connect() as conn:
        ahead = await conn.exec_driver_sql(
            "SELECT count(*) FROM subscriptions WHERE last_received_at > now() + interval '23 hours'"
        )
        assert ahead.scalar_one() == 4
