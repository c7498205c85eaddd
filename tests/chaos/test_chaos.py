"""Chaos: two API processes, three workers and the scheduler on one PostgreSQL and one Redis, while
distributeLead calls pour in (repeats with the same key, leads already distributed, races on one
lead) and subscribers watch. Meanwhile a worker is SIGKILLed every few seconds (and replaced),
Redis is restarted empty once, and PostgreSQL backends are terminated.
Every buyer has a webhook endpoint (one of them dead). At the end nothing is lost and nobody was
charged twice: every assignment has exactly one delivery row, and every live endpoint got its
deliveries. Size: LEADWHEEL_CHAOS_CALLS (default 3000)."""

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from app.db import Database
from app.models.caps import CapPeriod
from app.services import caps, subscriptions
from app.services.audit import SYSTEM
from app.services.caps import CapLimit
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.webhooks import make_endpoint
from tests.invariants import violations
from tests.model.reference import blackout_around
from tests.receiver import Receiver
from tests.tasks.conftest import Stack, WsSubscription, free_port

CALLS = int(os.environ.get("LEADWHEEL_CHAOS_CALLS", "3000"))
EVERYWHERE_CAP = 40
NICHES = 20
DISTRIBUTE = "mutation($id: UUID!, $k: String) { distributeLead(leadId: $id, idempotencyKey: $k) { id } }"
PROGRESS = "subscription($run: UUID!) { distributionProgress(runId: $run) { seq type runStatus } }"


async def test_chaos(
    db: Database,
    stack: Stack,
    token: str,
    restart_redis: Callable[[], Awaitable[None]],
    receiver: Receiver,
) -> None:
    rng = random.Random(42)
    lead_ids: list[uuid.UUID] = []
    dead_url = f"http://127.0.0.1:{free_port()}/hook"
    # buyer controls on: one buyer in every niche with a provider-wide cap (contended by all
    # niches at once), and in each niche a capped subscription, a spend cap and a closed schedule
    everywhere = await make_provider(db, balance_cents=10**7)
    await make_endpoint(db, everywhere, receiver.url)
    await caps.set_caps(
        db,
        actor=SYSTEM,
        provider_id=everywhere.id,
        caps=[CapLimit(CapPeriod.TOTAL, max_leads=EVERYWHERE_CAP)],
    )
    closed = {"windows": [], "blackoutDates": blackout_around(datetime.now(UTC).date())}
    for n in range(NICHES):
        niche, levels = await make_niche(db, levels=[(300, 2), (100, 2)])
        for level in levels:
            await subscribe(db, everywhere, level)
        for k in range(5):
            p = await make_provider(db, balance_cents=rng.choice([2_000, 50_000, 10**7]))
            await make_endpoint(db, p, dead_url if (n, k) == (0, 0) else receiver.url)
            for level in levels:
                sub = await subscribe(db, p, level)
                if k == 0:
                    await caps.set_caps(
                        db, actor=SYSTEM, subscription_id=sub.id, caps=[CapLimit(CapPeriod.DAY, max_leads=10)]
                    )
                if k == 1 and level is levels[0]:
                    await subscriptions.set_schedule(
                        db, actor=SYSTEM, subscription_id=sub.id, schedule=closed
                    )
            if k == 2:
                await caps.set_caps(
                    db,
                    actor=SYSTEM,
                    provider_id=p.id,
                    caps=[CapLimit(CapPeriod.MONTH, max_spend_cents=5_000)],
                )
        lead_ids += [(await make_lead(db, niche)).id for _ in range(CALLS // NICHES + 2)]
    apis = [await stack.api(), await stack.api()]
    workers = [stack.worker() for _ in range(3)]
    stack.scheduler()
    counts = {"sent": 0, "repeat": 0, "distributed_lead": 0, "race": 0, "retried_calls": 0, "refused": 0}
    runs: dict[str, str] = {}  # run id -> lead id
    keys: list[tuple[uuid.UUID, str]] = []
    done_calls = asyncio.Event()

    async with httpx.AsyncClient(timeout=30) as http:

        async def call(lead_id: uuid.UUID, key: str) -> None:
            """A careful client: on a transport error or INTERNAL, the same request again."""
            for _ in range(60):
                try:
                    response = await http.post(
                        f"{rng.choice(apis)}/graphql",
                        headers={"Authorization": f"Bearer {token}"},
                        json={"query": DISTRIBUTE, "variables": {"id": str(lead_id), "k": key}},
                    )
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    counts["retried_calls"] += 1
                    await asyncio.sleep(0.2)
                    continue
                if body.get("data"):
                    runs[body["data"]["distributeLead"]["id"]] = str(lead_id)
                    return
                code = body["errors"][0]["extensions"]["code"]
                if code == "LEAD_NOT_DISTRIBUTABLE":
                    counts["refused"] += 1
                    return
                counts["retried_calls"] += 1
                await asyncio.sleep(0.2)
            raise AssertionError(f"lead {lead_id} never accepted")

        async def load() -> None:
            sem = asyncio.Semaphore(16)
            pending = list(lead_ids)
            rng.shuffle(pending)

            async def one(i: int) -> None:
                async with sem:
                    roll = rng.random()
                    if roll < 0.10 and keys:
                        counts["repeat"] += 1
                        await call(*rng.choice(keys))  # same key, same lead: same run
                    elif roll < 0.15 and keys:
                        counts["distributed_lead"] += 1
                        await call(rng.choice(keys)[0], f"again-{i}")  # refused, or a no-op run
                    elif roll < 0.18:
                        counts["race"] += 1
                        lead = pending.pop()
                        await asyncio.gather(call(lead, f"race-a-{i}"), call(lead, f"race-b-{i}"))
                    else:
                        lead = pending.pop()
                        key = f"k-{i}"
                        keys.append((lead, key))
                        await call(lead, key)
                    counts["sent"] += 1

            await asyncio.gather(*(one(i) for i in range(CALLS)))
            done_calls.set()

        async def kill_workers() -> None:
            while not done_calls.is_set():
                await asyncio.sleep(3)
                victim = workers.pop(rng.randrange(len(workers)))
                stack.kill(victim)
                workers.append(stack.worker())
                counts["workers_killed"] = counts.get("workers_killed", 0) + 1

        async def break_things() -> None:
            await asyncio.sleep(2)
            import asyncpg

            for _ in range(3):
                # a connection of its own: the pool's connections are among those terminated
                killer = await asyncpg.connect(str(db.engine.url.set(drivername="postgresql")))
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                await killer.close()
                counts["pg_terminations"] = counts.get("pg_terminations", 0) + 1
                await asyncio.sleep(1.5)
            await db.engine.dispose()  # this test's own pooled connections were terminated too
            await restart_redis()  # empty: queued jobs and in-flight events are gone
            counts["redis_restarts"] = 1

        watchers: list[WsSubscription] = []

        async def watch() -> None:
            while not done_calls.is_set() and len(watchers) < 15:
                await asyncio.sleep(0.5)
                if runs:
                    sub = WsSubscription(rng.choice(apis), token, PROGRESS, {"run": rng.choice(list(runs))})
                    await sub.__aenter__()
                    watchers.append(sub)

        started = time.monotonic()
        await asyncio.gather(load(), kill_workers(), break_things(), watch())

        async def all_terminal() -> bool:
            async with db.engine.connect() as conn:
                open_runs = (
                    await conn.execute(
                        sa.text(
                            "SELECT count(*) FROM distribution_runs WHERE status IN ('QUEUED', 'RUNNING')"
                        )
                    )
                ).scalar_one()
            return open_runs == 0

        deadline = time.monotonic() + 180
        while not await all_terminal():
            assert time.monotonic() < deadline, "runs still open 3 minutes after the last call"
            await asyncio.sleep(0.5)

        async def live_webhooks_waiting() -> int:
            async with db.engine.connect() as conn:
                return int(
                    (
                        await conn.execute(
                            sa.text(
                                "SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e "
                                "ON e.id = d.endpoint_id WHERE d.status <> 'DELIVERED' AND e.url <> :dead"
                            ),
                            {"dead": dead_url},
                        )
                    ).scalar_one()
                )

        deadline = time.monotonic() + 120
        while await live_webhooks_waiting():
            assert time.monotonic() < deadline, "live endpoints' deliveries still waiting 2 minutes later"
            await asyncio.sleep(0.5)
        streams_ok = 0
        for sub in watchers:
            events = await sub.wait(timeout=60)
            assert events[-1]["type"] in ("COMPLETED", "FAILED"), events[-1]
            streams_ok += 1
            await sub.__aexit__(None, None, None)

    async with db.engine.connect() as conn:

        def one(sql: str) -> Any:
            return conn.execute(sa.text(sql))

        statuses = dict((await one("SELECT status, count(*) FROM distribution_runs GROUP BY 1")).all())
        assignments = (await one("SELECT count(*) FROM assignments")).scalar_one()
        outbox = (await one("SELECT count(*) FROM notifications")).scalar_one()
        # one delivery row per assignment (each buyer has one endpoint subscribed to lead.assigned)
        webhook_rows = (
            await one(
                "SELECT count(*) FILTER (WHERE n <> 1) AS wrong, count(*) AS assigned FROM "
                "(SELECT a.id, count(d.id) AS n FROM assignments a LEFT JOIN webhook_deliveries d "
                "ON d.subject_id = a.id AND d.event_type = 'lead.assigned' GROUP BY a.id) x"
            )
        ).one()
        delivered_ids = {
            f"msg_{r.id.hex}"
            for r in await one("SELECT id FROM webhook_deliveries WHERE status = 'DELIVERED'")
        }
        dead = tuple(
            (
                await conn.execute(
                    sa.text("SELECT enabled, disabled_reason FROM webhook_endpoints WHERE url = :dead"),
                    {"dead": dead_url},
                )
            ).one()
        )
        capped = (
            await conn.execute(
                sa.text("SELECT count(*) FROM assignments WHERE provider_id = :p"), {"p": everywhere.id}
            )
        ).scalar_one()
    found = await violations(db)
    print(
        f"\nchaos: {counts} in {time.monotonic() - started:.0f} s; runs {statuses}; assignments {assignments}; "
        f"outbox rows {outbox}; webhook deliveries {len(delivered_ids)} delivered, "
        f"{len(receiver.received)} requests received, dead endpoint {dead}; "
        f"streams ended terminal {streams_ok}/{len(watchers)}; violations {found}"
    )
    assert found == {}
    assert outbox == assignments
    assert webhook_rows.wrong == 0 and webhook_rows.assigned == assignments
    assert delivered_ids <= set(receiver.ids())  # at least once, each with its one webhook-id
    assert capped == EVERYWHERE_CAP  # reached under contention from every niche, never passed
    assert streams_ok == len(watchers)
    assert counts.get("workers_killed", 0) >= 1
    assert statuses.get("SUCCESS", 0) + statuses.get("PARTIAL", 0) > CALLS // 2
