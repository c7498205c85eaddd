"""Deliveries a distribution leases to its worker's sender (webhook_lease_seconds): sent at once
without a claim, recorded by the sender's turns, given back to the claims when they cannot be sent,
and anyone's once the lease ends (a worker that died)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_httpserver.httpserver import Response

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.result import DistributionResult
from app.models.base import utcnow
from app.models.niches import Niche
from app.models.webhooks import AttemptOutcome, webhook_id
from app.progress.publish import NullPublisher
from app.services.audit import SYSTEM
from app.services.webhooks import claims, endpoints
from app.services.webhooks.claims import sender_needed
from app.services.webhooks.endpoints import EndpointChanges
from app.services.webhooks.outbound import Answer, make_client
from app.services.webhooks.sender import WebhookSender, send_due
from app.settings import Settings
from app.tasks.dispatch import InlineDispatcher
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Receiver, statuses
from tests.tasks.conftest import wait_for

LEASE = 60.0


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def buyers(db: Database, hooks: list[Receiver]) -> Niche:
    """A niche whose leads go to one buyer per receiver, each with an endpoint on it."""
    niche, (level,) = await make_niche(db, levels=[(2500, len(hooks))])
    for receiver in hooks:
        buyer = await make_provider(db, balance_cents=1_000_000)
        await subscribe(db, buyer, level)
        receiver.secrets.append((await make_endpoint(db, buyer, receiver.url)).secret)
    return niche


async def sold(db: Database, niche: Niche, *, lease: float = LEASE) -> DistributionResult:
    lead = await make_lead(db, niche, {"name": "Pat Doe", "phone": "+1 555 0100"})
    return await distribute_lead(db, lead_id=lead.id, webhook_lease_seconds=lease)


async def states(db: Database) -> list[tuple[str, int]]:
    return [
        (r.status, r.attempts)
        for r in await rows(db, "SELECT status, attempts FROM webhook_deliveries ORDER BY created_at")
    ]


def slow(seconds: float) -> Callable[[int, Any], Response]:
    """Answers 200 after `seconds`."""

    def respond(n: int, _: Any) -> Response:
        time.sleep(seconds)
        return Response("ok", 200)

    return respond


@contextlib.asynccontextmanager
async def running(db: Database, settings: Settings) -> AsyncIterator[WebhookSender]:
    """A sender as a worker process runs one, closed (what it holds recorded) on the way out."""
    sender = WebhookSender(db, settings, make_client(settings))
    try:
        yield sender
    finally:
        await sender.close(grace_seconds=5)


async def all_delivered(db: Database) -> bool:
    return not await rows(db, "SELECT 1 FROM webhook_deliveries WHERE status <> 'DELIVERED'")


async def test_leased_deliveries_go_at_once_and_no_claim_sees_them(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    hooks = [receivers() for _ in range(3)]
    niche = await buyers(db, hooks)
    result = await sold(db, niche)
    assert len(result.webhooks_leased) == 3 and result.webhooks_due == 0
    # leased: no sender may claim them, and the sweep sees nothing to do
    assert await send_due(db, SETTINGS) == 0
    assert not await sender_needed(db, stale_after=0)

    async with running(db, SETTINGS) as sender:
        sender.send_leased(result.webhooks_leased)
        await wait_for(lambda: all_delivered(db), timeout=10)
    for receiver in hooks:
        (got,) = receiver.received
        assert got.verified_by
        assert got.payload["data"]["assignment_id"] in {str(a.assignment_id) for a in result.assigned}
    assert await states(db) == [("DELIVERED", 1)] * 3


async def test_an_endpoint_that_failed_last_gets_due_deliveries_not_leased(
    db: Database, receiver: Receiver
) -> None:
    niche = await buyers(db, [receiver])
    async with db.begin() as conn:
        await conn.execute(sa.text("UPDATE webhook_endpoints SET consecutive_failures = 1"))
    result = await sold(db, niche)
    assert result.webhooks_leased == () and result.webhooks_due == 1
    assert await send_due(db, SETTINGS) == 1  # a claim sends it, oldest first behind its retries
    assert await states(db) == [("DELIVERED", 1)]


async def test_after_a_failure_the_rest_go_back_to_the_claims(db: Database, receiver: Receiver) -> None:
    receiver.respond = statuses(500, 200)
    niche = await buyers(db, [receiver])
    results = [await sold(db, niche) for _ in range(3)]
    leased = [w for r in results for w in r.webhooks_leased]
    assert len(leased) == 3
    async with running(db, SETTINGS) as sender:
        sender.send_leased(leased)  # one endpoint: one at a time, in the order written
        await wait_for(lambda: all_delivered(db), timeout=10)
    # the first failed; the two behind it were given back, and a claim sent them, then the first's
    # retry (due at once here; a failing endpoint's never-tried deliveries go before its retries):
    # not the leased run going on after a failure
    assert await states(db) == [("DELIVERED", 2), ("DELIVERED", 1), ("DELIVERED", 1)]
    first, second, third = (webhook_id(w.delivery_id) for w in leased)
    assert receiver.ids() == [first, second, third, first]


async def test_stopping_gives_back_what_was_not_sent(db: Database, receiver: Receiver) -> None:
    receiver.respond = slow(0.5)
    niche = await buyers(db, [receiver])
    leased = [w for _ in range(3) for w in (await sold(db, niche)).webhooks_leased]
    sender = WebhookSender(db, SETTINGS, make_client(SETTINGS))
    sender.send_leased(leased)
    await asyncio.sleep(0.2)  # the first request is in flight
    await sender.close(grace_seconds=5)
    assert await states(db) == [("DELIVERED", 1), ("PENDING", 0), ("PENDING", 0)]
    # due now, for any sender: not left until their lease ends
    assert await send_due(db, SETTINGS) == 2
    assert await all_delivered(db)


async def test_a_full_sender_gives_leased_deliveries_back(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    hooks = [receivers() for _ in range(2)]
    niche = await buyers(db, hooks)
    result = await sold(db, niche)
    one_place = SETTINGS.model_copy(update={"webhook_max_concurrency": 1})
    async with running(db, one_place) as sender:
        sender.send_leased(result.webhooks_leased)  # one sent at once, the other claimed after it
        assert sender.sending == 1
        await wait_for(lambda: all_delivered(db), timeout=10)
    assert [len(r.received) for r in hooks] == [1, 1]


async def test_a_lease_that_ends_unsent_is_anyones(db: Database, receiver: Receiver) -> None:
    """The worker that distributed the lead died before sending: once the lease ends the sweep
    wakes a sender for it, without waiting stale_after on top, and a claim sends it."""
    niche = await buyers(db, [receiver])
    result = await sold(db, niche, lease=1)
    assert len(result.webhooks_leased) == 1
    assert not await sender_needed(db, stale_after=3600)
    await asyncio.sleep(1.1)
    assert await sender_needed(db, stale_after=3600)
    assert await send_due(db, SETTINGS) == 1
    (got,) = receiver.received
    assert got.verified_by and got.webhook_id == webhook_id(result.webhooks_leased[0].delivery_id)


def test_the_lease_must_outlast_two_attempts() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_LEASE_SECONDS must be more than twice"):
        Settings(_env_file=None, webhook_timeout_seconds=10, webhook_lease_seconds=20)  # type: ignore[call-arg]


async def test_each_queued_delivery_goes_where_and_as_it_was_written(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    """The endpoint's URL changed between two distributions: the second goes to the new URL."""
    before, after = receivers(), receivers()
    niche = await buyers(db, [before])
    after.secrets += before.secrets
    first = await sold(db, niche)
    (endpoint_id,) = {w.endpoint_id for w in first.webhooks_leased}
    await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=endpoint_id,
        changes=EndpointChanges(url=after.url),
        settings=SETTINGS,
        dispatcher=InlineDispatcher(db, SETTINGS, NullPublisher()),
    )
    second = await sold(db, niche)
    async with running(db, SETTINGS) as sender:
        sender.send_leased([*first.webhooks_leased, *second.webhooks_leased])  # one queue
        await wait_for(lambda: all_delivered(db), timeout=10)
    assert before.ids() == [webhook_id(first.webhooks_leased[0].delivery_id)]
    assert after.ids() == [webhook_id(second.webhooks_leased[0].delivery_id)]


async def test_two_senders_count_one_endpoints_failures_together(db: Database, receiver: Receiver) -> None:
    """Leased deliveries to one endpoint from two workers, every answer a 500: each failure is
    counted once though both record the endpoint, and it is disabled once, at the threshold."""
    receiver.respond = statuses(500)
    niche = await buyers(db, [receiver])
    settings = SETTINGS.model_copy(update={"webhook_disable_after_failures": 4})
    leased = [w for _ in range(8) for w in (await sold(db, niche)).webhooks_leased]

    async def disabled() -> bool:
        return bool(await rows(db, "SELECT 1 FROM webhook_endpoints WHERE NOT enabled"))

    async with running(db, settings) as one, running(db, settings) as other:
        one.send_leased(leased[:4])
        other.send_leased(leased[4:])
        await wait_for(disabled, timeout=10)
        await asyncio.sleep(0.3)  # the senders' last turns
    ((failures,),) = await rows(db, "SELECT consecutive_failures FROM webhook_endpoints")
    ((attempts,),) = await rows(db, "SELECT sum(attempts) FROM webhook_deliveries")
    assert failures == attempts == len(receiver.received) >= 4
    flagged = await rows(db, "SELECT 1 FROM audit_log WHERE action = 'WEBHOOK_ENDPOINT_DISABLED'")
    assert len(flagged) == 1
    # what was not sent waits, held, for the endpoint to be enabled again
    waiting = await rows(db, "SELECT next_attempt_at FROM webhook_deliveries WHERE status = 'PENDING'")
    assert waiting and all(at is None for (at,) in waiting)


async def test_a_delivery_that_cannot_start_in_time_is_given_back(
    db: Database, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lease would end before its answer and record: the claims send it instead."""

    receiver.respond = slow(0.3)
    niche = await buyers(db, [receiver])
    leased = [w for _ in range(2) for w in (await sold(db, niche)).webhooks_leased]
    # a lease just over two attempts' time: each must start within 50 ms of being handed over
    tight = SETTINGS.model_copy(update={"webhook_timeout_seconds": 1, "webhook_lease_seconds": 2.05})
    returned: list[Any] = []
    turn = claims.turn

    async def recording_turn(conn: Any, **kwargs: Any) -> Any:
        returned.extend(d for run in kwargs["runs"] for d in run.returned)
        return await turn(conn, **kwargs)

    monkeypatch.setattr(claims, "turn", recording_turn)
    async with running(db, tight) as sender:
        sender.send_leased(leased)  # the second waits 0.3 s behind the first: too late to start
        await wait_for(lambda: all_delivered(db), timeout=10)
    assert returned == [leased[1].delivery_id]
    assert receiver.ids() == [webhook_id(w.delivery_id) for w in leased]


async def test_a_leased_delivery_to_an_endpoint_this_sender_holds_waits_for_its_claim(
    db: Database, receiver: Receiver
) -> None:
    """Given back (the claim sends the endpoint's deliveries oldest first), and the endpoint's lock
    released once both are recorded: no lock is left behind to keep other senders off it."""

    receiver.respond = slow(0.5)
    niche = await buyers(db, [receiver])
    async with db.begin() as conn:
        await conn.execute(sa.text("UPDATE webhook_endpoints SET consecutive_failures = 1"))
    assert (await sold(db, niche)).webhooks_due == 1  # for the claims
    async with db.begin() as conn:
        await conn.execute(sa.text("UPDATE webhook_endpoints SET consecutive_failures = 0"))
    leased = (await sold(db, niche)).webhooks_leased
    assert len(leased) == 1
    async with running(db, SETTINGS) as sender:
        sender.wake()

        async def claimed() -> bool:  # the claim's request is in flight
            return len(receiver.received) == 1

        await wait_for(claimed, timeout=5)
        sender.send_leased(leased)
        assert sender.sending == 1  # not sent beside the claim
        await wait_for(lambda: all_delivered(db), timeout=10)
        await asyncio.sleep(0.2)  # the turn that records the last one
        locks = await rows(
            db, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = :c", c=claims.LOCK_CLASS
        )
        assert locks == []
    assert len(receiver.ids()) == 2 and receiver.ids()[1] == webhook_id(leased[0].delivery_id)


def test_runs_of_one_endpoint_are_recorded_as_one_in_id_order() -> None:
    first, second = sorted([uuid.uuid4(), uuid.uuid4()])
    at = utcnow()
    ok = Answer(AttemptOutcome.SUCCESS, 1.0, 200)
    failed = Answer(AttemptOutcome.HTTP_ERROR, 1.0, 500)
    late = claims.Sent(uuid.uuid4(), at + timedelta(seconds=1), ok)
    early = claims.Sent(uuid.uuid4(), at, failed)
    given_back = uuid.uuid4()
    runs = claims.merged(
        [
            claims.EndpointRun(second, [late]),  # a claim, holding the endpoint's lock
            claims.EndpointRun(first),
            claims.EndpointRun(second, [early], held=False, returned=[given_back]),  # leased
        ]
    )
    assert [r.endpoint_id for r in runs] == [first, second]
    assert runs[1].sent == [early, late] and runs[1].held and runs[1].returned == [given_back]
