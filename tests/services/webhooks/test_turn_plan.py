"""A sender's turn reads each endpoint by its key, whatever the number of endpoints: the plan it
runs with (generic, on the sender's own connection) is checked with EXPLAIN ANALYZE, after the
table's statistics are taken. A turn that found a due endpoint by scanning the others (once,
through the partial index of live endpoints by provider: 170 rows read for each due endpoint in
the burst benchmark, on PostgreSQL 18) would cost more with every endpoint added."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from app.db import Database
from app.models.webhooks import WebhookEvent
from app.services.webhooks import claims, deliveries
from app.services.webhooks.claims import TURN
from app.services.webhooks.sender import sender_connection
from tests.factories import make_provider
from tests.factories.webhooks import SETTINGS, make_endpoint

ENDPOINTS = 300


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def explain_turn(conn: asyncpg.Connection, held: list[uuid.UUID]) -> list[dict[str, Any]]:
    args = TURN.args(
        {
            "delivery_ids": [],
            "attempted_at": [],
            "outcomes": [],
            "status_codes": [],
            "latencies": [],
            "errors": [],
            "bodies": [],
            "delays": list(SETTINGS.webhook_retry_delays_seconds),
            "jitter": 0.0,
            "endpoint_ids": [],
            "held": held,
            "resets": [],
            "failures": [],
            "disable_after": SETTINGS.webhook_disable_after_failures,
            "slots": 8,
            "per_endpoint": SETTINGS.webhook_batch_size,
            "pending": claims.PENDING,
        }
    )
    # a prepared statement run more than five times keeps its generic plan, as the sender's do
    for _ in range(6):
        await conn.fetch(TURN.text, *args)
        await conn.execute("SELECT pg_advisory_unlock_all()")  # the claim's endpoint, claimable again
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {TURN.text}", *args)
    return nodes(json.loads(raw)[0]["Plan"])


async def test_a_turn_reads_each_due_endpoint_by_its_key(db: Database) -> None:
    provider = await make_provider(db)
    created = await make_endpoint(
        db, provider, "http://127.0.0.1:9/hook", events=[WebhookEvent.RETURN_DECIDED]
    )
    async with db.engine.begin() as conn:
        # many more live endpoints than due ones (their own providers, as buyers have)
        await conn.exec_driver_sql(
            f"""WITH p AS (
                    INSERT INTO providers (name, email)
                    SELECT 'p' || i, 'p' || i || '@example.com' FROM generate_series(1, {ENDPOINTS}) i
                    RETURNING id)
                INSERT INTO webhook_endpoints (provider_id, url, events, secret)
                SELECT id, 'http://127.0.0.1:9/hook', ARRAY['return.decided'], $1 FROM p""",
            (created.secret,),
        )
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session,
            provider_id=provider.id,
            event_type=WebhookEvent.RETURN_DECIDED,
            data={"n": 1},
            subject_id=uuid.uuid4(),
        )
    # a young table (no statistics yet: a new deployment, the benchmark), then analyzed
    for analyze in (False, True):
        conn = await sender_connection(db)
        try:
            if analyze:
                await conn.execute("ANALYZE webhook_endpoints; ANALYZE webhook_deliveries")
            plan = await explain_turn(conn, held=[])
        finally:
            await conn.close()
        reads = [
            n for n in plan if n.get("Relation Name") == "webhook_endpoints" and "Scan" in n["Node Type"]
        ]
        assert any(n["Actual Loops"] for n in reads)  # the due endpoint was looked up
        for node in reads:
            assert node.get("Index Name") == "pk_webhook_endpoints", (analyze, node)
            assert node.get("Rows Removed by Filter", 0) == 0, (analyze, node)
