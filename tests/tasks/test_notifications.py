"""lead_assigned notifications over real SMTP (an in-process aiosmtpd server), and with the server
down: retried, then FAILED, and the distribution unaffected. Sender jobs side by side, and the
wake that queues one sender for many distributions."""

import asyncio
import json
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis

from app.db import Database
from app.engine.distribute import distribute_lead
from app.services import notifications
from app.settings import Settings
from app.tasks.broker import QUEUE, make_broker
from app.tasks.dispatch import SEND_UNSENT, SENDER_QUEUED, SENDER_QUEUED_TTL_MS, TaskiqDispatcher
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack, free_port, gql, wait_for

DISTRIBUTE = """mutation($id: UUID!) { distributeLead(leadId: $id) { id } }"""


async def _statuses(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return [r[0] for r in await conn.execute(sa.text("SELECT status FROM notifications ORDER BY status"))]


async def test_assignments_are_mailed(db: Database, stack: Stack, token: str, smtp: Any) -> None:
    controller, inbox = smtp
    niche, (level,) = await make_niche(db, levels=[(4500, 2)], name="Roofing / Texas")
    for name in ("Acme Roofing", "Bolt Roofs"):
        await subscribe(db, await make_provider(db, balance_cents=10_000, name=name), level)
    lead = await make_lead(db, niche)
    api = await stack.api()
    stack.worker(SMTP_HOST="127.0.0.1", SMTP_PORT=str(controller.port))
    await gql(api, token, DISTRIBUTE, {"id": str(lead.id)})
    await wait_for(lambda: _all_sent(db, 2), timeout=30)
    assert len(inbox.messages) == 2
    subjects = {m["Subject"] for m in inbox.messages}
    assert subjects == {"New lead in Roofing / Texas"}
    bodies = [m.get_payload() for m in inbox.messages]
    assert all("$45.00" in b and "L1" in b and "/portal" in b for b in bodies)
    assert {b.split(",")[0] for b in bodies} == {"Hello Acme Roofing", "Hello Bolt Roofs"}


async def _all_sent(db: Database, n: int) -> bool:
    return await _statuses(db) == ["SENT"] * n


async def test_a_dead_mail_server_never_fails_a_distribution(db: Database, stack: Stack, token: str) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    await subscribe(db, await make_provider(db, balance_cents=1_000), level)
    lead = await make_lead(db, niche)
    api = await stack.api()
    dead = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(free_port()),
        "NOTIFICATION_ATTEMPTS": "3",
        "SMTP_TIMEOUT_SECONDS": "1",
    }
    stack.worker(**dead)
    stack.scheduler(**dead)
    run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id)}))["distributeLead"]

    async def run_succeeded() -> bool:
        data = await gql(
            api, token, "query($id: UUID!) { distributionRun(id: $id) { status } }", {"id": run["id"]}
        )
        return bool(data["distributionRun"]["status"] == "SUCCESS")

    await wait_for(run_succeeded, timeout=20)
    await wait_for(lambda: _failed(db), timeout=30)
    async with db.engine.connect() as conn:
        attempts, error = (
            await conn.execute(sa.text("SELECT attempts, last_error FROM notifications"))
        ).one()
    assert attempts == 3
    assert "Connect" in error or "refused" in error.lower()
    await asyncio.sleep(0)


async def _failed(db: Database) -> bool:
    return await _statuses(db) == ["FAILED"]


async def test_senders_side_by_side_mail_each_first_send_once(db: Database, smtp: Any) -> None:
    """Two sender jobs at once, in batches smaller than the outbox: every first send is mailed
    exactly once (their row locks divide the rows); a retry waiting for its backoff is left alone."""
    controller, inbox = smtp
    niche, (level,) = await make_niche(db, levels=[(100, 3)])
    for _ in range(3):
        await subscribe(db, await make_provider(db, balance_cents=10_000), level)
    for _ in range(4):
        await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    async with db.engine.begin() as conn:
        retry = (
            await conn.execute(
                sa.text(
                    """UPDATE notifications SET attempts = 1, next_attempt_at = now() + interval '1 hour'
                       WHERE id = (SELECT id FROM notifications LIMIT 1) RETURNING id"""
                )
            )
        ).scalar_one()
    settings = Settings(_env_file=None, smtp_host="127.0.0.1", smtp_port=controller.port)  # type: ignore[call-arg]
    first, second = await asyncio.gather(
        notifications.deliver_unsent(db, settings=settings, batch=2),
        notifications.deliver_unsent(db, settings=settings, batch=2),
    )
    assert len(first) + len(second) == 11 and not first.keys() & second.keys()
    assert retry not in first.keys() | second.keys()
    assert len(inbox.messages) == 11
    assert len({m["To"] for m in inbox.messages}) == 3
    assert await notifications.deliver_unsent(db, settings=settings) == {}  # nothing twice
    assert sorted(await _statuses(db)) == ["PENDING"] + ["SENT"] * 11


async def test_a_wake_queues_one_sender_until_it_starts(redis_url: str, redis: Redis) -> None:
    """Distributions wake the sender; while one is queued, further wakes add no job. Once it has
    started (deleted the mark), the next wake queues another. The mark expires on its own."""
    broker = make_broker(redis_url, Settings(_env_file=None))  # type: ignore[call-arg]
    dispatcher = TaskiqDispatcher(broker)
    try:
        for _ in range(5):
            await dispatcher.notify()
        entries = await redis.xrange(QUEUE)
        assert [json.loads(e[b"data"])["task_name"] for _, e in entries] == [SEND_UNSENT]
        assert 0 < await redis.pttl(SENDER_QUEUED) <= SENDER_QUEUED_TTL_MS
        await redis.delete(SENDER_QUEUED)  # what the sender does first
        await dispatcher.notify()
        await dispatcher.notify()
        assert await redis.xlen(QUEUE) == 2
    finally:
        await broker.connection_pool.disconnect()


async def test_a_sender_stops_after_a_batch_that_failed(db: Database) -> None:
    """With the mail server down, one batch is tried and its transaction ends; the rest stays
    unsent for the next wake or the sweep instead of holding the job for every timeout."""
    niche, (level,) = await make_niche(db, levels=[(100, 3)])
    for _ in range(3):
        await subscribe(db, await make_provider(db, balance_cents=1_000), level)
    await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    dead = Settings(_env_file=None, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout_seconds=1)  # type: ignore[call-arg]
    tried = await notifications.deliver_unsent(db, settings=dead, batch=1)
    assert list(tried.values()) == ["PENDING"]  # failed once, to be retried with backoff
    async with db.engine.connect() as conn:
        attempts = sorted(r[0] for r in await conn.execute(sa.text("SELECT attempts FROM notifications")))
    assert attempts == [0, 0, 1]
