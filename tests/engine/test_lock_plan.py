"""The provider lock keeps PostgreSQL's cached generic plan (app/engine/snapshot.lock_providers pads
its ids): planned once per connection, not on every distribution."""

from __future__ import annotations

import asyncpg

from app.db import Database, driver_connection
from app.engine.snapshot import LOCK_PROVIDERS, lock_providers
from tests.factories import make_provider


async def test_the_provider_lock_is_planned_once_and_locks_only_its_providers(db: Database) -> None:
    providers = [await make_provider(db) for _ in range(3)]
    ids = sorted(p.id for p in providers)
    async with driver_connection(db.engine) as conn:
        # a marketplace's worth of providers, analysed: on a near-empty table every plan is generic
        await conn.execute(
            "INSERT INTO providers (name, email) SELECT 'P' || n, 'p' || n || '@plan.test' "
            "FROM generate_series(1, 600) n"
        )
        await conn.execute("ANALYZE providers")
    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    # a connection of its own: a pooled one's earlier plans of the statement (on other statistics)
    # weigh in PostgreSQL's choice between custom and generic plans
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(12):  # past the five custom plans PostgreSQL tries before it compares
            async with conn.transaction():
                locked = await lock_providers(conn, ids)
                assert sorted(locked) == ids
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            LOCK_PROVIDERS,
        )
    finally:
        await conn.close()
    assert plans is not None
    assert plans["custom_plans"] <= 5 and plans["generic_plans"] >= 7, dict(plans)
