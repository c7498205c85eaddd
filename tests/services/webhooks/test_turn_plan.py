"""A sender's turn reads each endpoint by its key, whatever the number of endpoints: the generic
plan the sender runs it with (its connection forces generic plans) is checked with EXPLAIN
ANALYZE EXECUTE, on tables without statistics (a new deployment, the benchmark) and analyzed. A
turn that found a due endpoint by scanning the others (once, through the partial index of live
endpoints by provider, on PostgreSQL 18: 170 rows read for each due endpoint in the burst
benchmark) would cost more with every endpoint added."""

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
TABLES = ("webhook_endpoints", "webhook_deliveries")


def nodes(plan: dict[str, Any], within: str | None = None) -> list[tuple[str | None, dict[str, Any]]]:
    """Every node of the plan with the CTE it belongs to."""
    within = plan.get("Subplan Name", within)
    found = [(within, plan)]
    for child in plan.get("Plans", []):
        found += nodes(child, within)
    return found


def literal(value: object) -> str:
    """A parameter of EXECUTE as a quoted literal (EXECUTE takes no bound parameters), which
    PostgreSQL reads as the prepared statement's parameter type."""
    text = "{" + ",".join(f'"{v}"' for v in value) + "}" if isinstance(value, list) else str(value)
    return "'" + text.replace("'", "''") + "'"


def turn_execute(held: list[uuid.UUID]) -> str:
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
            "sending": held,
            "resets": [],
            "failures": [],
            "releases": [],
            "returned_ids": [],
            "disable_after": SETTINGS.webhook_disable_after_failures,
            "backoff_max": SETTINGS.webhook_endpoint_backoff_max_seconds,
            "slots": 8,
            "per_endpoint": SETTINGS.webhook_batch_size,
            "pending": claims.PENDING,
        }
    )
    return f"EXECUTE turn({', '.join(literal(a) for a in args)})"


async def forget_statistics(conn: asyncpg.Connection) -> None:
    """The tables as a new deployment has them: TRUNCATE (between tests) keeps the columns'
    statistics; PostgreSQL 18 can clear them. Before 18 the first pass may run on statistics."""
    if conn.get_server_version().major < 18:
        return
    for table in TABLES:
        await conn.execute("SELECT pg_clear_relation_stats('public', $1)", table)
        await conn.execute(
            """SELECT pg_clear_attribute_stats('public', $1, attname::text, false) FROM pg_attribute
               WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped""",
            table,
        )


async def test_a_turn_reads_each_due_endpoint_by_its_key(db: Database) -> None:
    due, deleted, held = [await make_provider(db) for _ in range(3)]
    endpoint_ids = []
    for provider in (due, deleted, held):
        created = await make_endpoint(
            db, provider, "http://127.0.0.1:9/hook", events=[WebhookEvent.RETURN_DECIDED]
        )
        endpoint_ids.append(created.endpoint.id)
        async with db.begin() as session:
            await deliveries.enqueue_event(
                session,
                provider_id=provider.id,
                event_type=WebhookEvent.RETURN_DECIDED,
                data={"n": 1},
                subject_id=uuid.uuid4(),
            )
    due_id, deleted_id, held_id = endpoint_ids
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1", (deleted_id,)
        )
        # many more live endpoints than due ones (their own providers, as buyers have)
        await conn.exec_driver_sql(
            f"""WITH p AS (
                    INSERT INTO providers (name, email)
                    SELECT 'p' || i, 'p' || i || '@example.com' FROM generate_series(1, {ENDPOINTS}) i
                    RETURNING id)
                INSERT INTO webhook_endpoints (provider_id, url, events, secret)
                SELECT id, 'http://127.0.0.1:9/hook', ARRAY['return.decided'], secret FROM p,
                       (SELECT secret FROM webhook_endpoints WHERE id = $1) s""",
            (due_id,),
        )
    conn = await sender_connection(db)  # plan_cache_mode = force_generic_plan
    try:
        await conn.execute(f"PREPARE turn AS {TURN.text}")
        execute = turn_execute(held=[held_id])
        for analyzed in (False, True):
            if analyzed:
                await conn.execute("ANALYZE webhook_endpoints; ANALYZE webhook_deliveries")
            else:
                await forget_statistics(conn)
            # the turn claims the due endpoint only: not the deleted one, nor the one held
            rows = await conn.fetch(execute)
            assert {r["endpoint_id"] for r in rows if r["kind"] == "claim"} == {due_id}, analyzed
            await conn.execute("SELECT pg_advisory_unlock_all()")  # claimable again
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
            await conn.execute("SELECT pg_advisory_unlock_all()")
            plan = nodes(json.loads(raw)[0]["Plan"])
            reads = [
                (cte, n)
                for cte, n in plan
                if n.get("Relation Name") == "webhook_endpoints" and "Scan" in n["Node Type"]
            ]
            for _, node in reads:
                assert node.get("Index Name") == "pk_webhook_endpoints", (analyzed, node)
                assert node.get("Rows Removed by Filter", 0) == 0, (analyzed, node)
            # the candidates' probe found the three endpoints with due deliveries, one row each
            probes = [n for cte, n in reads if cte == "CTE locked"]
            assert [(n["Actual Rows"], n["Actual Loops"]) for n in probes] == [(1, 3)], (analyzed, probes)
    finally:
        await forget_statistics(conn)  # later tests meet tables without statistics, as before
        await conn.close()
