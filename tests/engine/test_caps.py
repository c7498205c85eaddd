"""Caps (SPEC §8) on the real engine: each kind and period, provider caps across subscriptions,
spend to the cent, local period boundaries, exactness under concurrency, and the re-read of a
provider whose caps moved between the engine's read and its lock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.errors import InvalidInput, NotFound
from app.models.audit import ActorType
from app.models.caps import CapPeriod
from app.models.distribution import RunStatus, SkipReason
from app.models.niches import LevelStrategy
from app.services import billing, caps
from app.services.audit import SYSTEM, Actor
from app.services.caps import CapLimit
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants

# rows (providers and subscriptions) that have caps
CAPPED_ROWS = """SELECT (SELECT count(*) FROM providers WHERE caps IS NOT NULL)
                      + (SELECT count(*) FROM subscriptions WHERE caps IS NOT NULL)"""
CHICAGO = "America/Chicago"


async def _one(db: Database, sql: str, **params: object) -> object:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


async def _usage(db: Database, provider_id: uuid.UUID) -> list[caps.CapUsage]:
    return (await caps.caps_of_providers(db, [provider_id]))[provider_id]


@pytest.mark.parametrize("period", list(CapPeriod))
async def test_a_lead_cap_of_each_period_stops_the_buyer_and_the_next_one_backfills(
    db: Database, period: CapPeriod
) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    capped = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=1))
    other = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=2))
    sub = await subscribe(db, capped, level)
    await subscribe(db, other, level)
    await caps.set_caps(db, actor=SYSTEM, subscription_id=sub.id, caps=[CapLimit(period, max_leads=2)])
    winners = []
    for _ in range(6):
        result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
        winners.append(result.assigned[0].provider_id)
        if any(s.reason is SkipReason.CAP_REACHED for s in result.skipped):
            assert result.status is RunStatus.SUCCESS  # the buyer's own limit is not a PARTIAL
    assert winners.count(capped.id) == 2 and winners.count(other.id) == 4
    (usage,) = await _usage(db, capped.id)
    assert (usage.used_leads, usage.used_spend_cents, usage.max_leads) == (2, 200, 2)
    assert (usage.period_start is None) == (period is CapPeriod.TOTAL)
    await assert_invariants(db)


async def test_skip_detail_names_the_cap_used_and_limit(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    p = await make_provider(db, balance_cents=10_000)
    sub = await subscribe(db, p, level)
    await caps.set_caps(db, actor=SYSTEM, subscription_id=sub.id, caps=[CapLimit(CapPeriod.DAY, max_leads=1)])
    await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert result.status is RunStatus.NO_ELIGIBLE
    (skip,) = result.skipped
    assert skip.reason is SkipReason.CAP_REACHED and skip.detail == "subscription DAY cap: 1/1 leads"


async def test_a_provider_cap_counts_across_its_subscriptions_in_two_niches(db: Database) -> None:
    first, (level_a,) = await make_niche(db, levels=[(100, 1)])
    second, (level_b,) = await make_niche(db, levels=[(300, 1)])
    p = await make_provider(db, balance_cents=10_000)
    await subscribe(db, p, level_a)
    await subscribe(db, p, level_b)
    await caps.set_caps(db, actor=SYSTEM, provider_id=p.id, caps=[CapLimit(CapPeriod.WEEK, max_leads=3)])
    got = 0
    for niche in (first, second, first, second, first):
        got += len((await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)).assigned)
    assert got == 3
    (usage,) = await _usage(db, p.id)
    assert usage.provider_wide and (usage.used_leads, usage.used_spend_cents) == (3, 500)
    await assert_invariants(db)


async def test_a_spend_cap_refuses_a_price_one_cent_over_and_takes_one_that_fits(db: Database) -> None:
    cheap_niche, (cheap,) = await make_niche(db, levels=[(1000, 1)])
    dear_niche, (dear,) = await make_niche(db, levels=[(1501, 1)])
    p = await make_provider(db, balance_cents=100_000)
    await subscribe(db, p, cheap)
    await subscribe(db, p, dear)
    await caps.set_caps(
        db, actor=SYSTEM, provider_id=p.id, caps=[CapLimit(CapPeriod.MONTH, max_spend_cents=2500)]
    )
    assert (await distribute_lead(db, lead_id=(await make_lead(db, cheap_niche)).id)).assigned
    over = await distribute_lead(db, lead_id=(await make_lead(db, dear_niche)).id)  # 1000 + 1501 > 2500
    assert not over.assigned
    assert over.skipped[0].detail == "provider MONTH cap: 1000/2500 cents spent, price 1501"
    fits = await distribute_lead(db, lead_id=(await make_lead(db, cheap_niche)).id)  # 2000 <= 2500
    assert fits.assigned
    (usage,) = await _usage(db, p.id)
    assert usage.used_spend_cents == 2000
    await assert_invariants(db)


async def _assignment_at(
    db: Database,
    provider_id: uuid.UUID,
    sub_id: uuid.UUID,
    level_id: uuid.UUID,
    niche_id: uuid.UUID,
    at: datetime,
    price: int = 100,
) -> None:
    """History written directly (as if distributed at `at`): a lead, its assignment, charge and
    outbox row, then the provider's usage counted again."""
    async with db.engine.begin() as conn:
        lead_id = (
            await conn.execute(
                sa.text("INSERT INTO leads (niche_id, status) VALUES (:n, 'DISTRIBUTED') RETURNING id"),
                {"n": niche_id},
            )
        ).scalar_one()
        assignment = (
            await conn.execute(
                sa.text(
                    "INSERT INTO assignments (lead_id, provider_id, subscription_id, competition_level_id, "
                    "price_charged_cents, created_at) VALUES (:l, :p, :s, :lv, :price, :at) RETURNING id"
                ),
                {"l": lead_id, "p": provider_id, "s": sub_id, "lv": level_id, "price": price, "at": at},
            )
        ).scalar_one()
        await conn.execute(
            sa.text("UPDATE providers SET balance_cents = balance_cents - :price WHERE id = :p; "),
            {"price": price, "p": provider_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents, kind, assignment_id) "
                "SELECT id, -CAST(:price AS bigint), balance_cents, 'CHARGE', :a FROM providers WHERE id = :p"
            ),
            {"price": price, "a": assignment, "p": provider_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO notifications (assignment_id, template, recipient, variables) "
                "VALUES (:a, 'lead_assigned', 'x@example.test', '{}')"
            ),
            {"a": assignment},
        )
    # written behind the engine's back: its usage counters are counted again from the assignments
    async with db.begin() as session:
        await billing.lock_provider(session, provider_id)
        await caps.recount_usage(session, provider_id)


def _local_boundary(period: CapPeriod, zone: ZoneInfo, now: datetime) -> datetime:
    local = now.astimezone(zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is CapPeriod.WEEK:
        start -= timedelta(days=local.weekday())
    elif period is CapPeriod.MONTH:
        start = start.replace(day=1)
    # re-resolve the wall-clock midnight in the zone (its offset may differ from now's)
    return datetime(start.year, start.month, start.day, tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize("period", [CapPeriod.DAY, CapPeriod.WEEK, CapPeriod.MONTH])
async def test_a_period_begins_at_the_buyers_local_midnight(db: Database, period: CapPeriod) -> None:
    """An assignment one second before the local day / ISO week / month began does not count;
    one second after it does (America/Chicago, never UTC midnight)."""
    niche, (level,) = await make_niche(db, levels=[(100, 5)])
    p = await make_provider(db, balance_cents=10_000)
    sub = await subscribe(db, p, level)
    await caps.set_timezone(db, actor=SYSTEM, provider_id=p.id, timezone=CHICAGO)
    boundary = _local_boundary(period, ZoneInfo(CHICAGO), datetime.now(UTC))
    await _assignment_at(db, p.id, sub.id, level.id, niche.id, boundary - timedelta(seconds=1))
    if boundary + timedelta(seconds=1) < datetime.now(UTC):
        await _assignment_at(db, p.id, sub.id, level.id, niche.id, boundary + timedelta(seconds=1))
        inside = 1
    else:  # the period began less than a second ago
        inside = 0
    await caps.set_caps(
        db, actor=SYSTEM, subscription_id=sub.id, caps=[CapLimit(period, max_leads=inside + 1)]
    )
    (usage,) = await _usage(db, p.id)
    assert usage.used_leads == inside and usage.period_start == boundary
    # the engine agrees: one more fits, the next does not
    assert (await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)).assigned
    assert not (await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)).assigned
    await assert_invariants(db)


async def test_the_database_and_python_agree_on_local_period_starts(db: Database) -> None:
    """lw_period_start (PostgreSQL) and the tests' own zoneinfo arithmetic, across both 2027 DST
    changes of America/Chicago."""
    cases = {
        # Sunday 2027-03-14 23:59 CDT (after spring forward): the ISO week began Monday 03-08 at CST
        ("WEEK", "2027-03-15T04:59:00+00:00"): "2027-03-08T06:00:00+00:00",
        ("DAY", "2027-03-14T12:00:00+00:00"): "2027-03-14T06:00:00+00:00",
        ("DAY", "2027-03-15T12:00:00+00:00"): "2027-03-15T05:00:00+00:00",
        ("DAY", "2027-11-07T12:00:00+00:00"): "2027-11-07T05:00:00+00:00",  # fall back later that day
        ("DAY", "2027-11-08T05:59:00+00:00"): "2027-11-07T05:00:00+00:00",  # 23:59 CST, still the 7th
        ("MONTH", "2027-12-01T05:59:00+00:00"): "2027-11-01T05:00:00+00:00",  # Nov 30 23:59 CST
        ("MONTH", "2027-12-01T06:00:00+00:00"): "2027-12-01T06:00:00+00:00",
    }
    for (period, at), expected in cases.items():
        instant = datetime.fromisoformat(at)
        found = await _one(db, "SELECT lw_period_start(:p, :at, :tz)", p=period, at=instant, tz=CHICAGO)
        assert found == datetime.fromisoformat(expected), (period, at)
        assert _local_boundary(CapPeriod(period), ZoneInfo(CHICAGO), instant) == found, (period, at)


async def test_twenty_concurrent_distributions_never_pass_a_daily_cap_of_seven(db: Database) -> None:
    """20 leads in 20 niches at once (so they do not queue on one niche's lock), one buyer in all
    of them with a provider-wide daily cap of 7: exactly 7 assignments."""
    buyer = await make_provider(db, balance_cents=1_000_000)
    lead_ids = []
    for _ in range(20):
        niche, (level,) = await make_niche(db, levels=[(100, 1)], strategy=LevelStrategy.FIRST_MATCH)
        await subscribe(db, buyer, level)
        lead_ids.append((await make_lead(db, niche)).id)
    await caps.set_caps(db, actor=SYSTEM, provider_id=buyer.id, caps=[CapLimit(CapPeriod.DAY, max_leads=7)])
    results = await asyncio.gather(*(distribute_lead(db, lead_id=lead_id) for lead_id in lead_ids))
    assert sum(len(r.assigned) for r in results) == 7
    assert sum(1 for r in results for s in r.skipped if s.reason is SkipReason.CAP_REACHED) == 13
    assert await _one(db, "SELECT count(*) FROM assignments") == 7
    (usage,) = await _usage(db, buyer.id)
    assert usage.used_leads == 7
    assert await _one(db, "SELECT balance_cents FROM providers WHERE id = :p", p=buyer.id) == 1_000_000 - 700
    await assert_invariants(db)


async def test_a_provider_whose_caps_move_while_the_engine_waits_for_its_lock_is_read_again(
    db: Database, database_url: str
) -> None:
    """The engine plans on an unlocked read; another transaction holds the buyer's row lock and
    fills its cap (as another niche's distribution would). Once the engine gets the lock it sees
    the revision moved, reads the buyer again and skips it: never past the cap."""
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    buyer = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=1))
    backup = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=2))
    await subscribe(db, buyer, level)
    await subscribe(db, backup, level)
    (cap,) = await caps.set_caps(
        db, actor=SYSTEM, provider_id=buyer.id, caps=[CapLimit(CapPeriod.DAY, max_leads=1)]
    )
    lead = await make_lead(db, niche)
    holder = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM providers WHERE id = $1 FOR NO KEY UPDATE", buyer.id)
        engine = asyncio.create_task(distribute_lead(db, lead_id=lead.id))
        await asyncio.sleep(0.5)  # the engine has read and planned the buyer, and waits for its lock
        assert not engine.done()
        await holder.execute(  # as another niche's assignment would have counted it
            """UPDATE providers SET usage_day_start = lw_period_start('DAY', now(), 'UTC'),
                                    usage_day_leads = 1
               WHERE id = $1""",
            buyer.id,
        )
        await holder.execute("UPDATE providers SET revision = revision + 1 WHERE id = $1", buyer.id)
        await tx.commit()
        result = await asyncio.wait_for(engine, 10)
    finally:
        await holder.close()
    assert [a.provider_id for a in result.assigned] == [backup.id]
    assert [(s.provider_id, s.reason) for s in result.skipped] == [(buyer.id, SkipReason.CAP_REACHED)]
    # the write that found the buyer moved wrote nothing: one run attempt, one of each audit row
    assert result.statements == 5  # lock, read, write (nothing), the buyer again, write
    assert await _one(db, "SELECT attempts FROM distribution_runs WHERE lead_id = :l", l=lead.id) == 1
    assert await _one(db, "SELECT distribution_attempts FROM leads WHERE id = :l", l=lead.id) == 1
    charged = "SELECT count(*) FROM ledger_entries WHERE kind = 'CHARGE' AND reference = :r"
    assert await _one(db, charged, r=f"lead:{lead.id}") == 1
    assert await _one(db, "SELECT count(*) FROM notifications WHERE template = 'lead_assigned'") == 1
    audit = await _one(
        db,
        "SELECT array_agg(action ORDER BY action) FROM audit_log WHERE entity_type = 'lead'"
        " AND entity_id = :l AND (action LIKE 'DISTRIBUTION%' OR action = 'ASSIGNMENT_CREATED')",
        l=lead.id,
    )
    assert audit == [
        "ASSIGNMENT_CREATED",
        "DISTRIBUTION_COMPLETED",
        "DISTRIBUTION_SKIPPED_PROVIDER",
        "DISTRIBUTION_STARTED",
    ]


async def test_caps_are_validated_and_bad_input_writes_nothing(db: Database) -> None:
    _, (level,) = await make_niche(db, levels=[(100, 1)])
    p = await make_provider(db, balance_cents=1000)
    sub = await subscribe(db, p, level)
    bad = [
        [CapLimit(CapPeriod.DAY)],  # no limit
        [CapLimit(CapPeriod.DAY, max_leads=-1)],
        [CapLimit(CapPeriod.DAY, max_spend_cents=-5)],
        [CapLimit(CapPeriod.DAY, max_leads=1), CapLimit(CapPeriod.DAY, max_leads=2)],
    ]
    for limits in bad:
        with pytest.raises(InvalidInput):
            await caps.set_caps(db, actor=SYSTEM, subscription_id=sub.id, caps=limits)
    with pytest.raises(InvalidInput):
        await caps.set_caps(db, actor=SYSTEM, caps=[CapLimit(CapPeriod.DAY, max_leads=1)])
    for zone in ("Mars/Olympus", "", "../etc/passwd", "UTC+5"):
        with pytest.raises(InvalidInput):
            await caps.set_timezone(db, actor=SYSTEM, provider_id=p.id, timezone=zone)
    assert (
        await _one(
            db,
            CAPPED_ROWS,
        )
        == 0
    )
    assert await _one(db, "SELECT timezone FROM providers WHERE id = :p", p=p.id) == "UTC"


async def test_a_provider_sets_only_its_own_caps(db: Database) -> None:
    _, (level,) = await make_niche(db, levels=[(100, 1)])
    mine, theirs = await make_provider(db), await make_provider(db)
    their_sub = await subscribe(db, theirs, level)
    me = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:write"}), provider_id=mine.id)
    limit = [CapLimit(CapPeriod.DAY, max_leads=1)]
    await caps.set_caps(db, actor=me, provider_id=mine.id, caps=limit)
    with pytest.raises(NotFound):
        await caps.set_caps(db, actor=me, provider_id=theirs.id, caps=limit)
    with pytest.raises(NotFound):
        await caps.set_caps(db, actor=me, subscription_id=their_sub.id, caps=limit)
    with pytest.raises(NotFound):
        await caps.set_timezone(db, actor=me, provider_id=theirs.id, timezone=CHICAGO)
    assert (
        await _one(
            db,
            CAPPED_ROWS,
        )
        == 1
    )


async def test_replacing_caps_keeps_usage_of_a_kept_period_and_a_new_timezone_recounts(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 3)])
    p = await make_provider(db, balance_cents=10_000)
    await subscribe(db, p, level)
    await caps.set_caps(db, actor=SYSTEM, provider_id=p.id, caps=[CapLimit(CapPeriod.DAY, max_leads=5)])
    await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    kept = await caps.set_caps(
        db,
        actor=SYSTEM,
        provider_id=p.id,
        caps=[CapLimit(CapPeriod.DAY, max_leads=9), CapLimit(CapPeriod.TOTAL, max_spend_cents=10_000)],
    )
    assert {(c.period, c.used_leads) for c in kept} == {(CapPeriod.DAY, 1), (CapPeriod.TOTAL, 1)}
    await caps.set_timezone(db, actor=SYSTEM, provider_id=p.id, timezone="Pacific/Kiritimati")
    await assert_invariants(db)
    assert {c.period for c in await caps.set_caps(db, actor=SYSTEM, provider_id=p.id, caps=[])} == set()
    assert (
        await _one(
            db,
            CAPPED_ROWS,
        )
        == 0
    )


async def test_usage_counted_after_a_period_boundary_the_engine_has_not_reached_counts(db: Database) -> None:
    """A distribution whose transaction began just before local midnight may find, once it holds
    its locks, counters already moved to the next period by distributions after midnight: those
    count (its own write lands after them), or the cap would be passed by one."""
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    buyer = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=1))
    backup = await make_provider(db, balance_cents=10_000, provider_id=uuid.UUID(int=2))
    await subscribe(db, buyer, level)
    await subscribe(db, backup, level)
    await caps.set_caps(db, actor=SYSTEM, provider_id=buyer.id, caps=[CapLimit(CapPeriod.DAY, max_leads=1)])
    async with db.engine.begin() as conn:  # tomorrow's period, already full
        await conn.execute(
            sa.text(
                "UPDATE providers SET usage_day_start = lw_period_start('DAY', now() + interval '1 day', 'UTC'),"
                " usage_day_leads = 1 WHERE id = :p"
            ),
            {"p": buyer.id},
        )
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.provider_id for a in result.assigned] == [backup.id]
    assert result.skipped[0].reason is SkipReason.CAP_REACHED
