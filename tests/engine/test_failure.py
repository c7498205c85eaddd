"""A failure after the charge statement, at COMMIT, leaves neither charge nor assignment."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from app.db import Database
from app.engine.distribute import distribute_lead
from app.services import billing, leads
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
    assert (await billing.get_provider(db, provider.id)).balance_cents == 1000
    fresh = await leads.get_lead(db, lead.id)
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
