"""Webhooks end to end, on real processes (API, workers, scheduler) and real local receivers that
verify every request with standardwebhooks: exactly once in the normal case, retries with one
webhook-id, a slow endpoint that holds only itself, a worker killed mid-send, Redis restarted
empty, and an endpoint disabled after 20 failures whose backlog goes out in order once enabled."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from werkzeug import Response

from app.db import Database
from app.models.billing import Provider
from app.models.webhooks import WebhookEvent
from app.services.webhooks import deliveries
from app.settings import Settings
from app.tasks.broker import make_broker
from app.tasks.dispatch import TaskiqDispatcher
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.webhooks import make_endpoint
from tests.invariants import assert_invariants
from tests.receiver import Received, Receiver, statuses
from tests.tasks.conftest import Stack, free_port, gql, wait_for

DISTRIBUTE = "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }"
# every attempt of every delivery, from the deliveries' logs, oldest first
ATTEMPTS = """(SELECT a.* FROM webhook_deliveries d, jsonb_to_recordset(d.attempt_log)
               AS a (at text, outcome text, status_code int, latency_ms float8, error text, response_body text)
               ORDER BY a.at) attempts"""
# what the processes run with: local receivers, quick retries
HOOKS = {
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "WEBHOOK_RETRY_DELAYS_SECONDS": "[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]",
    "WEBHOOK_RETRY_JITTER": "0",
    "WEBHOOK_TIMEOUT_SECONDS": "1",
}


async def one(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).all()


async def buyers_with_endpoints(
    db: Database, receivers: list[Receiver], *, max_recipients: int | None = None
) -> tuple[Any, list[Provider]]:
    niche, (level,) = await make_niche(db, levels=[(1000, max_recipients or len(receivers))])
    providers = []
    for receiver in receivers:
        provider = await make_provider(db, balance_cents=100_000)
        await subscribe(db, provider, level)
        created = await make_endpoint(db, provider, receiver.url)
        receiver.secrets.append(created.secret)
        providers.append(provider)
    return niche, providers


async def test_a_lead_sold_to_three_buyers_reaches_each_exactly_once(
    db: Database, stack: Stack, token: str, receivers: Callable[[], Receiver]
) -> None:
    hooks = [receivers() for _ in range(3)]
    niche, _ = await buyers_with_endpoints(db, hooks)
    api = await stack.api(**HOOKS)
    stack.worker(**HOOKS)
    stack.scheduler(**HOOKS)
    lead = await make_lead(db, niche)
    await gql(api, token, DISTRIBUTE, {"id": str(lead.id)})

    async def all_received() -> bool:
        return all(len(r.received) == 1 for r in hooks)

    await wait_for(all_received, timeout=30)
    await asyncio.sleep(2)  # nothing more comes: no retry, no sweep resend
    assert [len(r.received) for r in hooks] == [1, 1, 1]
    assert all(r.received[0].verified_by == tuple(r.secrets) for r in hooks)
    assert {r.received[0].payload["data"]["lead"]["id"] for r in hooks} == {str(lead.id)}

    async def all_delivered() -> bool:  # received is recorded before the worker commits
        rows = await one(db, "SELECT status, attempts FROM webhook_deliveries")
        return sorted(tuple(r) for r in rows) == [("DELIVERED", 1)] * 3

    await wait_for(all_delivered, timeout=10)
    await assert_invariants(db)


async def test_500_500_200_is_three_attempts_with_one_webhook_id(
    db: Database, stack: Stack, token: str, receiver: Receiver
) -> None:
    receiver.respond = statuses(500, 500, 200)
    niche, _ = await buyers_with_endpoints(db, [receiver])
    api = await stack.api(**HOOKS)
    stack.worker(**HOOKS)
    stack.scheduler(**HOOKS)  # the retries are woken by the sweep
    await gql(api, token, DISTRIBUTE, {"id": str((await make_lead(db, niche)).id)})

    async def delivered() -> bool:
        return bool(await one(db, "SELECT 1 FROM webhook_deliveries WHERE status = 'DELIVERED'"))

    await wait_for(delivered, timeout=30)
    assert len(receiver.received) == 3 and len(set(receiver.ids())) == 1
    attempts = await one(db, f"SELECT outcome, status_code FROM {ATTEMPTS}")
    assert [tuple(a) for a in attempts] == [("http_error", 500), ("http_error", 500), ("success", 200)]


async def test_a_slow_endpoint_holds_only_itself(
    db: Database, stack: Stack, token: str, receivers: Callable[[], Receiver]
) -> None:
    """One buyer's endpoint answers after the timeout; the other buyer's gets the lead at once,
    the distribution is not held, and the slow one's attempts are failures."""
    slow, fast = receivers(), receivers()

    def sleepy(n: int, _: Received) -> Response:
        time.sleep(5)
        return Response("late", 200)

    slow.respond = sleepy
    niche, _ = await buyers_with_endpoints(db, [slow, fast])
    patient = HOOKS | {"WEBHOOK_TIMEOUT_SECONDS": "3"}
    api = await stack.api(**patient)
    stack.worker(**patient)
    stack.scheduler(**patient)
    lead = await make_lead(db, niche)
    await gql(api, token, DISTRIBUTE, {"id": str(lead.id)})

    async def fast_has_it() -> bool:
        return len(fast.received) == 1

    await wait_for(fast_has_it, timeout=30, interval=0.02)
    (written,) = await one(db, "SELECT extract(epoch FROM min(created_at)) AS at FROM webhook_deliveries")
    assert fast.received[0].at - float(written.at) < 1.5  # not behind the slow one's 3 s timeout
    rows = await one(db, "SELECT status FROM leads WHERE id = :id", id=lead.id)
    assert rows[0].status == "DISTRIBUTED"

    async def slow_failed() -> bool:
        return bool(await one(db, f"SELECT 1 FROM {ATTEMPTS} WHERE outcome = 'timeout'"))

    await wait_for(slow_failed, timeout=30)
    errors = await one(db, f"SELECT error, latency_ms FROM {ATTEMPTS} WHERE outcome = 'timeout'")
    assert errors[0].error == "no complete answer within 3 s"
    assert 2900 < errors[0].latency_ms < 4500


async def test_dead_port_redirect_and_huge_answer_in_the_log(
    db: Database, stack: Stack, token: str, receivers: Callable[[], Receiver]
) -> None:
    moved, huge = receivers(), receivers()
    moved.respond = lambda n, r: Response("", 302, headers={"location": "http://127.0.0.1:1/"})
    huge.respond = lambda n, r: Response((b"y" * 65536 for _ in range(160)), 200, direct_passthrough=True)
    niche, (level,) = await make_niche(db, levels=[(1000, 3)])
    dead = await make_provider(db, balance_cents=10_000)
    await subscribe(db, dead, level)
    await make_endpoint(db, dead, f"http://127.0.0.1:{free_port()}/hook")
    await buyers_with_endpoints_on(db, level, [moved, huge])
    api = await stack.api(**HOOKS)
    stack.worker(**HOOKS)
    await gql(api, token, DISTRIBUTE, {"id": str((await make_lead(db, niche)).id)})

    async def three_outcomes() -> set[str]:
        rows = await one(db, f"SELECT DISTINCT outcome FROM {ATTEMPTS}")
        return {r.outcome for r in rows} if len(rows) == 3 else set()

    assert await wait_for(three_outcomes, timeout=30) == {"connection_error", "http_error", "success"}
    rows = await one(db, f"SELECT outcome, status_code, error, length(response_body) AS kept FROM {ATTEMPTS}")
    by_outcome = {r.outcome: r for r in rows}
    assert "ConnectError" in by_outcome["connection_error"].error
    assert by_outcome["http_error"].status_code == 302 and "not followed" in by_outcome["http_error"].error
    assert by_outcome["success"].kept == 1024
    assert len(moved.received) == 1  # and nothing went to the redirect's target


async def buyers_with_endpoints_on(db: Database, level: Any, receivers: list[Receiver]) -> None:
    for receiver in receivers:
        provider = await make_provider(db, balance_cents=10_000)
        await subscribe(db, provider, level)
        receiver.secrets.append((await make_endpoint(db, provider, receiver.url)).secret)


async def test_a_worker_killed_while_sending_the_delivery_still_lands(
    db: Database, stack: Stack, token: str, receiver: Receiver
) -> None:
    in_flight = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_hangs(n: int, _: Received) -> Response:
        if n == 1:
            loop.call_soon_threadsafe(in_flight.set)
            time.sleep(3)
        return Response("ok", 200)

    receiver.respond = first_hangs
    niche, _ = await buyers_with_endpoints(db, [receiver])
    # the delivery is leased to the worker that distributed the lead, for 9 s (over two attempts)
    slow_sends = HOOKS | {"WEBHOOK_TIMEOUT_SECONDS": "4", "WEBHOOK_LEASE_SECONDS": "9"}
    api = await stack.api(**slow_sends)
    doomed = stack.worker(**slow_sends)
    stack.scheduler(**slow_sends)
    await gql(api, token, DISTRIBUTE, {"id": str((await make_lead(db, niche)).id)})
    await asyncio.wait_for(in_flight.wait(), 30)
    stack.kill(doomed)  # mid-request: nothing was recorded
    stack.worker(**slow_sends)

    async def delivered() -> bool:
        return bool(await one(db, "SELECT 1 FROM webhook_deliveries WHERE status = 'DELIVERED'"))

    await wait_for(delivered, timeout=40)  # once the dead worker's lease has ended
    assert len(receiver.received) >= 2 and len(set(receiver.ids())) == 1  # at least once, one id
    assert all(r.verified_by for r in receiver.received)
    attempts = await one(db, f"SELECT outcome FROM {ATTEMPTS}")
    assert [a.outcome for a in attempts] == ["success"]  # the killed attempt never got recorded


async def test_redis_restarted_empty_the_sweep_sends_what_was_pending(
    db: Database,
    stack: Stack,
    receiver: Receiver,
    redis_url: str,
    restart_redis: Callable[[], Awaitable[None]],
) -> None:
    provider = await make_provider(db)
    receiver.secrets.append(
        (await make_endpoint(db, provider, receiver.url, events=[WebhookEvent.RETURN_DECIDED])).secret
    )
    async with db.begin() as session:
        written = await deliveries.enqueue_event(
            session, provider_id=provider.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": 1}
        )
    assert written == 1
    broker = make_broker(redis_url, Settings(_env_file=None))  # type: ignore[call-arg]
    await broker.startup()
    try:
        await TaskiqDispatcher(broker).wake_webhooks()  # the wake is queued...
    finally:
        await broker.shutdown()
    await restart_redis()  # ...and lost, with its mark, before any worker read it
    stack.worker(**HOOKS)
    stack.scheduler(**HOOKS)

    async def delivered() -> bool:  # the receiver records before the worker commits: wait for the row
        return bool(await one(db, "SELECT 1 FROM webhook_deliveries WHERE status = 'DELIVERED'"))

    await wait_for(delivered, timeout=30)
    assert len(receiver.received) == 1 and receiver.received[0].verified_by


async def test_twenty_failures_disable_and_enabling_sends_the_backlog_in_order(
    db: Database, stack: Stack, token: str, receiver: Receiver
) -> None:
    receiver.respond = statuses(500)
    provider = await make_provider(db)
    created = await make_endpoint(db, provider, receiver.url, events=[WebhookEvent.RETURN_DECIDED])
    receiver.secrets.append(created.secret)
    for n in range(24):
        async with db.begin() as session:
            await deliveries.enqueue_event(
                session, provider_id=provider.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": n}
            )
    # a delivery's retry a minute away; the endpoint waits 0.2 s after a failure, then 0.4, then 0.5
    slow_retries = HOOKS | {
        "WEBHOOK_RETRY_DELAYS_SECONDS": "[0.2, 60, 60, 60, 60, 60, 60]",
        "WEBHOOK_ENDPOINT_BACKOFF_MAX_SECONDS": "0.5",
    }
    api = await stack.api(**slow_retries)
    stack.worker(**slow_retries)
    stack.scheduler(**slow_retries)  # the sweep finds the (never woken) deliveries, and each wait's end

    async def disabled() -> bool:
        rows = await one(db, "SELECT enabled, disabled_reason FROM webhook_endpoints")
        return (rows[0].enabled, rows[0].disabled_reason) == (False, "FAILING")

    await wait_for(disabled, timeout=60)
    assert len(receiver.received) == 20
    # from the second failure in a row, one attempt per wait: never two closer than the first wait
    attempts = sorted(
        r.at
        for r in await one(
            db,
            "SELECT (a ->> 'at')::timestamptz AS at FROM webhook_deliveries, jsonb_array_elements(attempt_log) a",
        )
    )
    assert len(attempts) == 20
    assert min((b - a).total_seconds() for a, b in itertools.pairwise(attempts[1:])) >= 0.19
    metrics = (await _get(api, "/metrics")).decode()
    assert "lw_webhook_disabled_endpoints 1.0" in metrics

    receiver.respond = statuses(200)
    before = len(receiver.received)
    await gql(
        api,
        token,
        "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: {enabled: true}) { enabled } }",
        {"id": str(created.endpoint.id)},
    )

    async def all_delivered() -> bool:
        rows = await one(db, "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'DELIVERED'")
        return bool(rows[0].n == 24)

    await wait_for(all_delivered, timeout=40)
    backlog = [r.payload["data"]["n"] for r in receiver.received[before:]]
    assert backlog == list(range(24))


async def _get(base: str, path: str) -> bytes:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(base + path)).content
