"""A failure after the charge statement, at COMMIT, leaves neither charge nor assignment."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from app.db import Database
from app.engine.distribute import distribute_lead
from app.services import billing, leads
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants


@pytest.fixture
async def commit_fails(db: Database):  # type: ignore[no-untyped-def]
    """A deferred constraint trigger on the ledger raises at COMMIT: after every statement of the
    distribution, including the charge, has run."""
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            """CREATE FUNCTION lw_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'injected failure at commit'; END; $$"""
        )
        await conn.exec_driver_sql(
            """CREATE CONSTRAINT TRIGGER lw_fail_at_commit AFTER INSERT ON ledger_entries
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
               WHEN (NEW.kind = 'CHARGE') EXECUTE FUNCTION lw_fail_at_commit()"""
        )
    yield
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TRIGGER lw_fail_at_commit ON ledger_entries")
        await conn.exec_driver_sql("DROP FUNCTION lw_fail_at_commit()")


async def test_failure_after_the_charge_rolls_everything_back(db: Database, commit_fails: None) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 2)])
    provider = await make_provider(db, balance_cents=1000)
    await subscribe(db, provider, level)
    lead = await make_lead(db, niche)
    with pytest.raises(DBAPIError, match="injected failure"):
        await distribute_lead(db, lead_id=lead.id)
    assert (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents == 1000
    fresh = await leads.get_lead(db, lead.id, actor=SYSTEM)
    assert fresh.status == "APPROVED" and fresh.distribution_attempts == 0
    async with db.engine.connect() as conn:
        for table in ("assignments", "notifications", "distribution_runs"):
            assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0
        assert (
            await conn.execute(
                sa.text("SELECT count(*) FROM niches WHERE next_start_level_order_position = 1")
            )
        ).scalar_one() == 1
    await assert_invariants(db)


async def test_a_terminated_backend_is_retried_inside_the_engine(db: Database) -> None:
    """pg_terminate_backend on the engine's connection mid-transaction: the engine re-runs the
    transaction on a new connection and the distribution succeeds once."""
    import asyncio

    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    provider = await make_provider(db, balance_cents=1000)
    await subscribe(db, provider, level)
    lead = await make_lead(db, niche)
    async with db.engine.connect() as blocker:
        # hold the lead so the engine's first statement waits, then terminate its backend
        transaction = await blocker.begin()
        await blocker.execute(
            sa.text("SELECT 1 FROM leads WHERE id = :id FOR NO KEY UPDATE"), {"id": lead.id}
        )
        task = asyncio.create_task(distribute_lead(db, lead_id=lead.id))
        for _ in range(100):
            # another connection: pg_stat_activity is a snapshot for the length of a transaction
            async with db.engine.connect() as observer:
                found = await observer.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
                waiting = found.scalars().all()
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting
        await blocker.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting[0]})
        await transaction.commit()
    result = await task
    assert result.status.value == "SUCCESS"
    assert (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents == 900
    await assert_invariants(db)
