"""The outbox at the service level: deliveries written by the engine's statement and by
enqueue_event, sent in this process (send_due) to real local receivers that verify every
signature with standardwebhooks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from standardwebhooks import Webhook

from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.webhooks import DeliveryStatus, WebhookEvent, webhook_id
from app.progress.events import ProgressEvent
from app.services.audit import SYSTEM
from app.services.dispatch import RunJob
from app.services.webhooks import deliveries, endpoints
from app.services.webhooks.sender import send_due
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Receiver, statuses


class Woken:
    """A dispatcher that only counts webhook wakes (the test sends with send_due itself)."""

    inline = False

    def __init__(self) -> None:
        self.wakes = 0

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        pass

    async def notify(self) -> None:
        pass

    async def wake_webhooks(self) -> None:
        self.wakes += 1


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.text(sql), params)).all())


async def test_a_lead_sold_to_three_buyers_reaches_each_once(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    niche, (level,) = await make_niche(db, levels=[(2500, 4)], name="Roofing / Texas")
    buyers = [await make_provider(db, balance_cents=10_000, name=f"Buyer {i}") for i in range(4)]
    hooks = []
    for buyer in buyers[:3]:  # the fourth buyer has no endpoint
        await subscribe(db, buyer, level)
        receiver = receivers()
        created = await make_endpoint(db, buyer, receiver.url)
        receiver.secrets.append(created.secret)
        hooks.append((buyer, receiver))
    await subscribe(db, buyers[3], level)
    lead = await make_lead(db, niche, {"name": "Pat Doe", "phone": "+1 555 0100", "state": "TX"})

    result = await distribute_lead(db, lead_id=lead.id)
    assert len(result.assigned) == 4 and result.webhooks_due == 3
    assert await send_due(db, SETTINGS) == 3

    for buyer, receiver in hooks:
        (got,) = receiver.received
        assert got.verified_by == tuple(receiver.secrets)
        body = got.payload
        assignment = next(a for a in result.assigned if a.provider_id == buyer.id)
        assert body["type"] == "lead.assigned"
        assert body["timestamp"].endswith("Z")
        assert body["data"] == {
            "assignment_id": str(assignment.assignment_id),
            "provider_id": str(buyer.id),
            "lead": {
                "id": str(lead.id),
                "attributes": {"name": "Pat Doe", "phone": "+1 555 0100", "state": "TX"},
                "submitted_at": body["data"]["lead"]["submitted_at"],
            },
            "niche": {"id": str(niche.id), "name": "Roofing / Texas"},
            "level": {"id": str(level.id), "name": "L1"},
            "price_cents": 2500,
            "price": "$25.00",
        }
        (row,) = await rows(
            db, "SELECT id, status, subject_id FROM webhook_deliveries WHERE provider_id = :p", p=buyer.id
        )
        assert got.webhook_id == webhook_id(row.id)
        assert (row.status, row.subject_id) == (DeliveryStatus.DELIVERED, assignment.assignment_id)
    assert await send_due(db, SETTINGS) == 0  # nothing left: exactly once


async def test_no_endpoint_no_delivery(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 2)])
    await subscribe(db, await make_provider(db, balance_cents=1_000), level)
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert len(result.assigned) == 1 and result.webhooks_due == 0
    assert await rows(db, "SELECT * FROM webhook_deliveries") == []


async def test_only_live_endpoints_subscribed_to_the_event_get_it(db: Database, receiver: Receiver) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    buyer = await make_provider(db, balance_cents=1_000)
    await subscribe(db, buyer, level)
    wanted = await make_endpoint(db, buyer, receiver.url)
    both = await make_endpoint(db, buyer, receiver.url, events=["lead.assigned", "return.decided"])
    await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    await make_endpoint(db, buyer, receiver.url, enabled=False)
    deleted = await make_endpoint(db, buyer, receiver.url)
    await endpoints.delete_endpoint(db, actor=SYSTEM, endpoint_id=deleted.endpoint.id)

    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert result.webhooks_due == 2
    got = await rows(db, "SELECT endpoint_id FROM webhook_deliveries")
    assert {r.endpoint_id for r in got} == {wanted.endpoint.id, both.endpoint.id}


async def test_enqueue_event_writes_in_the_callers_transaction(db: Database, receiver: Receiver) -> None:
    """What the returns feature calls for return.decided: rows only if the caller commits."""
    buyer = await make_provider(db)
    returns = await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    await make_endpoint(db, buyer, receiver.url, events=["lead.assigned"])
    receiver.secrets.append(returns.secret)
    data = {"return_id": str(uuid.uuid4()), "decision": "APPROVED", "refund_cents": 2500}

    async with db.sessions() as session:
        async with session.begin():
            written = await deliveries.enqueue_event(
                session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data=data
            )
            assert written == 1
            await session.rollback()
    assert await rows(db, "SELECT * FROM webhook_deliveries") == []

    async with db.begin() as session:
        written = await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data=data
        )
    assert written == 1
    assert await send_due(db, SETTINGS) == 1
    (got,) = receiver.received
    assert got.verified_by and got.payload["type"] == "return.decided" and got.payload["data"] == data


async def test_failed_attempts_are_retried_with_the_same_webhook_id(db: Database, receiver: Receiver) -> None:
    receiver.respond = statuses(500, 500, 200)
    buyer = await make_provider(db)
    created = await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    receiver.secrets.append(created.secret)
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": 1}
        )
    assert await send_due(db, SETTINGS) == 3  # delays of 0 s: the retries are due at once
    ids = receiver.ids()
    assert len(ids) == 3 and len(set(ids)) == 1
    assert len({r.body for r in receiver.received}) == 1  # the same body every time
    (delivery,) = await rows(db, "SELECT id, status, attempts, last_status_code FROM webhook_deliveries")
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("DELIVERED", 3, 200)
    log = await rows(
        db,
        "SELECT a.outcome, a.status_code, a.response_body FROM webhook_deliveries d, "
        "jsonb_to_recordset(d.attempt_log) AS a (outcome text, status_code int, response_body text) "
        "WHERE d.id = :d",
        d=delivery.id,
    )
    assert [(a.outcome, a.status_code, a.response_body) for a in log] == [
        ("http_error", 500, "answer"),
        ("http_error", 500, "answer"),
        ("success", 200, "answer"),
    ]
    endpoint = (await rows(db, "SELECT consecutive_failures FROM webhook_endpoints"))[0]
    assert endpoint.consecutive_failures == 0


async def test_after_the_last_retry_a_delivery_is_failed_and_can_be_sent_again(
    db: Database, receiver: Receiver
) -> None:
    receiver.respond = statuses(*[503] * 8, 200)
    buyer = await make_provider(db)
    created = await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    receiver.secrets.append(created.secret)
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={}
        )
    assert await send_due(db, SETTINGS) == 8  # 1 + 7 retries
    (delivery,) = await rows(db, "SELECT id, status, attempts FROM webhook_deliveries")
    assert (delivery.status, delivery.attempts) == ("FAILED", 8)
    failed = await deliveries.list_deliveries(
        db,
        actor=SYSTEM,
        where=deliveries.DeliveryFilter(status=DeliveryStatus.FAILED),
        first=10,
        after=None,
    )
    assert [d.id for d in failed.items] == [delivery.id]

    woken = Woken()
    again = await deliveries.redeliver(db, actor=SYSTEM, delivery_id=delivery.id, dispatcher=woken)
    assert (again.status, again.attempts, woken.wakes) == (DeliveryStatus.PENDING, 0, 1)
    assert await send_due(db, SETTINGS) == 1
    assert len(set(receiver.ids())) == 1 and len(receiver.received) == 9
    (after,) = await rows(db, "SELECT status FROM webhook_deliveries")
    assert after.status == "DELIVERED"
    (logged,) = await rows(db, "SELECT jsonb_array_length(attempt_log) AS n FROM webhook_deliveries")
    assert logged.n == 9  # the log keeps all


async def test_twenty_failures_in_a_row_disable_and_enabling_sends_the_backlog_in_order(
    db: Database, receiver: Receiver
) -> None:
    receiver.respond = statuses(500)
    buyer = await make_provider(db)
    created = await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    receiver.secrets.append(created.secret)
    # without the endpoint's wait after a failure (test_backoff.py), each waiting delivery in turn
    settings = SETTINGS.model_copy(
        update={"webhook_retry_delays_seconds": [3600.0] * 7, "webhook_endpoint_backoff_max_seconds": 0}
    )
    for n in range(25):
        async with db.begin() as session:
            await deliveries.enqueue_event(
                session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": n}
            )
    assert await send_due(db, settings) == 20
    endpoint = await endpoints.get_endpoint(db, actor=SYSTEM, endpoint_id=created.endpoint.id)
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.consecutive_failures) == (
        False,
        "FAILING",
        20,
    )
    audit = await rows(
        db,
        "SELECT details FROM audit_log WHERE action = 'WEBHOOK_ENDPOINT_DISABLED' AND entity_id = :e",
        e=endpoint.id,
    )
    assert audit[0].details["reason"] == "FAILING"
    # a flagged endpoint keeps its events: they wait, held
    async with db.begin() as session:
        assert (
            await deliveries.enqueue_event(
                session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": 25}
            )
            == 1
        )
    assert await send_due(db, settings) == 0
    held = await rows(db, "SELECT count(*) AS n FROM webhook_deliveries WHERE next_attempt_at IS NULL")
    assert held[0].n == 26

    receiver.respond = statuses(200)
    received_before = len(receiver.received)
    woken = Woken()
    enabled = await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=endpoint.id,
        changes=endpoints.EndpointChanges(enabled=True),
        settings=settings,
        dispatcher=woken,
    )
    assert (enabled.enabled, enabled.disabled_reason, enabled.consecutive_failures, woken.wakes) == (
        True,
        None,
        0,
        1,
    )
    assert await send_due(db, settings) == 26
    backlog = [r.payload["data"]["n"] for r in receiver.received[received_before:]]
    assert backlog == list(range(26))  # in order of creation


async def test_during_a_rotation_both_secrets_sign(db: Database, receiver: Receiver) -> None:
    buyer = await make_provider(db)
    created = await make_endpoint(db, buyer, receiver.url, events=["return.decided"])
    rotated = await endpoints.rotate_secret(
        db, actor=SYSTEM, endpoint_id=created.endpoint.id, overlap_hours=None, settings=SETTINGS
    )
    assert rotated.secret != created.secret and rotated.secret.startswith("whsec_")
    receiver.secrets = [created.secret]  # a buyer who has not switched yet
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={}
        )
    await send_due(db, SETTINGS)
    (got,) = receiver.received
    assert got.verified_by == (created.secret,)  # a receiver with the old secret verifies
    assert len(got.signature.split(" ")) == 2
    headers = {
        "webhook-id": got.webhook_id,
        "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature,
    }
    Webhook(rotated.secret).verify(got.body, headers)  # and one with the new secret

    # with no overlap the old secret stops signing at once
    third = await endpoints.rotate_secret(
        db, actor=SYSTEM, endpoint_id=created.endpoint.id, overlap_hours=0, settings=SETTINGS
    )
    receiver.secrets = [third.secret]
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={}
        )
    await send_due(db, SETTINGS)
    last = receiver.received[-1]
    assert last.verified_by == (third.secret,) and len(last.signature.split(" ")) == 1


async def test_a_test_message_reaches_a_disabled_endpoint_once(db: Database, receiver: Receiver) -> None:
    receiver.respond = statuses(500, 200)
    buyer = await make_provider(db)
    created = await make_endpoint(db, buyer, receiver.url, enabled=False)
    receiver.secrets.append(created.secret)
    woken = Woken()
    first = await deliveries.send_test(db, actor=SYSTEM, endpoint_id=created.endpoint.id, dispatcher=woken)
    assert await send_due(db, SETTINGS) == 1  # a failed test is not retried
    second = await deliveries.send_test(db, actor=SYSTEM, endpoint_id=created.endpoint.id, dispatcher=woken)
    assert await send_due(db, SETTINGS) == 1
    got = {r.id: r.status for r in await rows(db, "SELECT id, status FROM webhook_deliveries")}
    assert got == {first.id: "FAILED", second.id: "DELIVERED"}
    assert receiver.received[1].payload["type"] == "webhook.test"
    assert woken.wakes == 2


async def test_a_decided_return_reaches_the_buyers_endpoints(db: Database, receiver: Receiver) -> None:
    from app.models.returns import ReturnReason
    from app.services import returns

    niche, (level,) = await make_niche(db, levels=[(1200, 2)])
    buyer = await make_provider(db, balance_cents=5_000)
    await subscribe(db, buyer, level)
    created = await make_endpoint(db, buyer, receiver.url, events=["lead.assigned", "return.decided"])
    await make_endpoint(db, buyer, receiver.url.replace("/hook", "/only-leads"))  # lead.assigned only
    receiver.secrets.append(created.secret)
    (first,) = (await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)).assigned
    (second,) = (await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)).assigned
    await send_due(db, SETTINGS)
    receiver.received.clear()

    woken = Woken()
    decided = []
    for bought, approve in ((first, True), (second, False)):
        requested = await returns.request_return(
            db, actor=SYSTEM, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
        )
        if approve:
            decided.append(
                await returns.approve_return(db, actor=SYSTEM, return_id=requested.id, dispatcher=woken)
            )
        else:
            decided.append(
                await returns.reject_return(
                    db, actor=SYSTEM, return_id=requested.id, note="not a duplicate", dispatcher=woken
                )
            )
    assert woken.wakes == 2  # after each commit
    assert await send_due(db, SETTINGS) == 2  # the lead.assigned-only endpoint got none
    bodies = sorted((r.payload for r in receiver.received), key=lambda b: b["data"]["decision"])
    assert all(r.verified_by for r in receiver.received)
    assert [(b["type"], b["data"]["decision"], b["data"]["refund_cents"]) for b in bodies] == [
        ("return.decided", "APPROVED", 1200),
        ("return.decided", "REJECTED", 0),
    ]
    assert bodies[0]["data"]["return_id"] == str(decided[0].id)
    assert bodies[1]["data"] | {"return_id": None} == {
        "return_id": None,
        "assignment_id": str(second.assignment_id),
        "lead_id": str(decided[1].lead_id),
        "provider_id": str(buyer.id),
        "reason": "DUPLICATE",
        "decision": "REJECTED",
        "decision_note": "not a duplicate",
        "refund_cents": 0,
    }
