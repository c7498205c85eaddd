"""The engine's write statement keeps PostgreSQL's cached generic plan: planned once per connection,
not on every distribution (a plan of the statement costs more than a run of it), and it reaches
providers and subscriptions by key, never by a scan."""

from __future__ import annotations

import uuid

import asyncpg

from app.db import Database, driver_connection
from app.engine.charge import WRITE_DISTRIBUTION
from app.engine.distribute import _run_transaction
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants

# what this connection's transactions scanned of them and has not reported yet (a transaction's
# statistics are reported at its end, at most once a second): read twice in one transaction
SCANS = """SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables
           WHERE relname IN ('providers', 'subscriptions')"""


async def test_the_write_is_planned_once_and_reaches_its_rows_by_key(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 3)])
    for _ in range(4):
        await subscribe(db, await make_provider(db, balance_cents=100_000), level)
    _, elsewhere = await make_niche(db, levels=[(100, 3)] * 30)
    async with driver_connection(db.engine) as conn:
        # a marketplace's worth of providers and subscriptions (20 to each level of another
        # niche), analysed: on near-empty tables every plan is generic and every scan cheap
        await conn.execute(
            "INSERT INTO providers (name, email) SELECT 'P' || n, 'p' || n || '@plan.test' "
            "FROM generate_series(1, 600) n"
        )
        await conn.execute(
            "INSERT INTO subscriptions (provider_id, competition_level_id) "
            "SELECT id, ($1::uuid[])[1 + row_number() OVER () % 30] FROM providers "
            "WHERE email LIKE '%@plan.test'",
            [level.id for level in elsewhere],
        )
        await conn.execute("ANALYZE providers; ANALYZE subscriptions")
    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    # a connection of its own: a pooled one's earlier plans of the statement (on other statistics)
    # weigh in PostgreSQL's choice between custom and generic plans
    conn = await asyncpg.connect(dsn)
    # before 17, PostgreSQL costs `id = ANY($1)` on an index as one descent per element, and
    # rightly prefers scanning tables of a few hundred rows
    by_key = conn.get_server_version().major >= 17
    try:
        for _ in range(12):  # past the five custom plans PostgreSQL tries before it compares
            lead = await make_lead(db, niche)
            async with conn.transaction():
                before = await conn.fetchval(SCANS)
                result = await _run_transaction(
                    conn,
                    lead_id=lead.id,
                    given_run_id=None,
                    run_id=uuid.uuid4(),
                    requested_by="test",
                    dashboard_url="",
                    webhook_lease_seconds=0,
                )
                assert len(result.assigned) == 3
                scanned = await conn.fetchval(SCANS) - before
                assert scanned == 0 or not by_key, "a seq scan of providers or subscriptions"
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            WRITE_DISTRIBUTION.text,
        )
    finally:
        await conn.close()
    assert plans is not None
    assert plans["custom_plans"] <= 5 and plans["generic_plans"] >= 7, dict(plans)
    await assert_invariants(db)
