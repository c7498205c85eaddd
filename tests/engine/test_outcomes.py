"""Outcomes, lead status, attempts, charges and everything one distribution writes."""

import pytest
import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.errors import LeadNotDistributable, NotFound
from app.models.billing import SubscriptionStatus
from app.services import billing, leads
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants


async def _count(db: Database, sql: str, **params: object) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def test_success_writes_charge_ledger_outbox_audit_and_closes_the_lead(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(2500, 2)])
    providers = [await make_provider(db, balance_cents=10_000) for _ in range(2)]
    for p in providers:
        await subscribe(db, p, level)
    lead = await make_lead(db, niche)
    result = await distribute_lead(db, lead_id=lead.id)
    assert result.status.value == "SUCCESS"
    for p in providers:
        assert (await billing.get_provider(db, p.id, actor=SYSTEM)).balance_cents == 7500
    fresh = await leads.get_lead(db, lead.id, actor=SYSTEM)
    assert fresh.status == "DISTRIBUTED" and fresh.distributed_at is not None
    assert fresh.distribution_attempts == 1
    assert await _count(db, "SELECT count(*) FROM notifications WHERE status = 'PENDING'") == 2
    variables = await _count(
        db, "SELECT count(*) FROM notifications WHERE variables->>'price_charged' = '$25.00'"
    )
    assert variables == 2
    actions = {
        "DISTRIBUTION_STARTED": 1,
        "ASSIGNMENT_CREATED": 2,
        "DISTRIBUTION_COMPLETED": 1,
    }
    for action, expected in actions.items():
        assert await _count(db, "SELECT count(*) FROM audit_log WHERE action = :a", a=action) == expected
    run = await _count(
        db,
        "SELECT count(*) FROM distribution_runs WHERE id = :id AND status = 'SUCCESS' AND duration_ms > 0",
        id=result.run_id,
    )
    assert run == 1
    assert [e.seq for e in result.events] == list(range(1, len(result.events) + 1))
    await assert_invariants(db)


async def test_no_eligible_then_rerun_after_a_new_subscription(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    lead = await make_lead(db, niche)
    first = await distribute_lead(db, lead_id=lead.id)
    assert first.status.value == "NO_ELIGIBLE"
    after_first = await leads.get_lead(db, lead.id, actor=SYSTEM)
    assert after_first.status == "NO_ELIGIBLE" and after_first.distributed_at is None
    await subscribe(db, await make_provider(db, balance_cents=500), level)
    second = await distribute_lead(db, lead_id=lead.id)
    assert second.status.value == "SUCCESS"
    final = await leads.get_lead(db, lead.id, actor=SYSTEM)
    assert final.status == "DISTRIBUTED" and final.distribution_attempts == 2


async def test_insufficient_funds_flips_and_a_top_up_restores(db: Database) -> None:
    niche, (expensive, cheap) = await make_niche(db, levels=[(1000, 1), (400, 1)])
    provider = await make_provider(db, balance_cents=1300)
    sub_expensive = await subscribe(db, provider, expensive)
    sub_cheap = await subscribe(db, provider, cheap)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.level_name for a in result.assigned] == ["L1"]  # 1300 - 1000 = 300 left
    async with db.read() as session:
        from app.models.billing import Subscription

        statuses = {s.id: s.status for s in (await session.execute(sa.select(Subscription))).scalars()}
    assert statuses[sub_expensive.id] == SubscriptionStatus.INSUFFICIENT_FUNDS
    assert statuses[sub_cheap.id] == SubscriptionStatus.INSUFFICIENT_FUNDS  # 300 < 400
    # next lead starts at L2: the provider cannot pay anything now
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert result.status.value == "NO_ELIGIBLE"
    assert {s.reason.value for s in result.skipped} == {"INSUFFICIENT_BALANCE"}
    await billing.top_up(db, actor=SYSTEM, provider_id=provider.id, amount_cents=200, reference="t1")
    async with db.read() as session:
        statuses = {s.id: s.status for s in (await session.execute(sa.select(Subscription))).scalars()}
    assert statuses[sub_cheap.id] == SubscriptionStatus.ACTIVE  # 500 >= 400
    assert statuses[sub_expensive.id] == SubscriptionStatus.INSUFFICIENT_FUNDS
    await assert_invariants(db)


async def test_only_approved_or_no_eligible_leads_are_distributed(db: Database) -> None:
    niche, _ = await make_niche(db, levels=[(100, 1)])
    pending = await make_lead(db, niche, approved=False)
    with pytest.raises(LeadNotDistributable):
        await distribute_lead(db, lead_id=pending.id)
    rejected = await leads.reject_lead(db, actor=SYSTEM, lead_id=pending.id, reason="spam")
    with pytest.raises(LeadNotDistributable):
        await distribute_lead(db, lead_id=rejected.id)
    import uuid

    with pytest.raises(NotFound):
        await distribute_lead(db, lead_id=uuid.uuid4())
    assert await _count(db, "SELECT count(*) FROM distribution_runs") == 0


async def test_second_distribution_of_a_distributed_lead_charges_nobody(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    provider = await make_provider(db, balance_cents=1000)
    await subscribe(db, provider, level)
    lead = await make_lead(db, niche)
    first = await distribute_lead(db, lead_id=lead.id)
    again = await distribute_lead(db, lead_id=lead.id)
    assert again.replayed and again.deciding_run_id == first.run_id and again.status == first.status
    assert (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents == 900
    await assert_invariants(db)
