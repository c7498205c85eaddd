"""From its second failure in a row, a failing endpoint waits (its retry_at) before it is tried
again, and its waiting deliveries wait with it: one attempt per wait, not one per lead sold
meanwhile. Sent to real local receivers; the clock is moved by moving the rows' times back
(`end_wait`), never by sleeping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from pytest_httpserver.httpserver import Response

from app.db import Database
from app.models.audit import ActorType
from app.models.base import utcnow
from app.models.billing import Provider
from app.models.webhooks import AttemptOutcome, WebhookEvent
from app.services.audit import SYSTEM, Actor
from app.services.webhooks import claims, deliveries, endpoints
from app.services.webhooks.claims import DUE_SCAN, EndpointRun, Sent, sender_needed
from app.services.webhooks.outbound import Answer
from app.services.webhooks.sender import send_due, sender_connection
from app.settings import Settings
from tests.factories import make_provider
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Received, Receiver, statuses
from tests.services.webhooks.test_deliveries import Woken
from tests.services.webhooks.test_leases import buyers, rows, running, sold
from tests.tasks.conftest import wait_for

# a first retry after 10 s, then an hour apart; from its second failure in a row an endpoint waits
# 10 s, then 20 s, 40 s, … at most 60 s
WAITING = SETTINGS.model_copy(
    update={"webhook_retry_delays_seconds": [10.0] + [3600.0] * 6, "webhook_endpoint_backoff_max_seconds": 60}
)


async def enqueue(db: Database, buyer: Provider, n: int) -> None:
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=buyer.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": n}
        )


async def endpoint_state(db: Database) -> tuple[int, float | None]:
    """The endpoint's failures in a row, and its wait in seconds from now (None: not waiting)."""
    ((failures, wait),) = await rows(
        db, "SELECT consecutive_failures, extract(epoch FROM retry_at - now()) FROM webhook_endpoints"
    )
    return failures, None if wait is None else float(wait)


async def end_wait(db: Database) -> None:
    """As if the endpoint's wait had passed (or, once it is over, the time its backlog was moved
    to): every time still to come moved back by it."""
    async with db.begin() as session:
        await session.execute(
            sa.text(
                """WITH w AS (
                       SELECT coalesce((SELECT retry_at FROM webhook_endpoints),
                                       (SELECT min(next_attempt_at) FROM webhook_deliveries
                                        WHERE status = 'PENDING' AND attempts = 0 AND next_attempt_at > now()))
                              - now() + interval '1 millisecond' AS by),
                   moved AS (
                       UPDATE webhook_deliveries SET next_attempt_at = next_attempt_at - (SELECT by FROM w)
                       WHERE status = 'PENDING' AND (SELECT by FROM w) IS NOT NULL)
                   UPDATE webhook_endpoints SET retry_at = retry_at - (SELECT by FROM w)"""
            )
        )


def sent_numbers(receiver: Receiver) -> list[int]:
    return [r.payload["data"]["n"] for r in receiver.received]


async def endpoint_with(db: Database, receiver: Receiver, deliveries_count: int) -> Provider:
    buyer = await make_provider(db)
    receiver.secrets.append((await make_endpoint(db, buyer, receiver.url, events=["return.decided"])).secret)
    for n in range(deliveries_count):
        await enqueue(db, buyer, n)
    return buyer


async def waiting_endpoint(db: Database, receiver: Receiver, backlog: int) -> Provider:
    """A buyer whose endpoint failed twice in a row (its two oldest deliveries), with `backlog` more
    waiting behind them."""
    receiver.respond = statuses(500)
    buyer = await endpoint_with(db, receiver, backlog + 2)
    assert await send_due(db, WAITING) == 2  # the oldest, the next (no wait after one failure), no other
    return buyer


async def due_before_the_wait_ends(db: Database) -> int:
    ((n,),) = await rows(
        db,
        """SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
           WHERE d.status = 'PENDING' AND d.next_attempt_at < e.retry_at""",
    )
    return int(n)


async def set_enabled(db: Database, endpoint_id: uuid.UUID, enabled: bool) -> None:
    await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=endpoint_id,
        changes=endpoints.EndpointChanges(enabled=enabled),
        settings=WAITING,
        dispatcher=Woken(),
    )


async def test_a_failing_endpoint_waits_and_its_backlog_with_it(db: Database, receiver: Receiver) -> None:
    buyer = await waiting_endpoint(db, receiver, backlog=3)
    failures, wait = await endpoint_state(db)
    assert failures == 2 and wait is not None and 9 < wait <= 10  # the first retry delay
    # every waiting delivery waits for the wait's end, the two just tried included
    assert await due_before_the_wait_ends(db) == 0
    # what is written meanwhile waits too, and nothing is due: no claim, no sweep
    await enqueue(db, buyer, 5)
    assert await due_before_the_wait_ends(db) == 0
    assert await send_due(db, WAITING) == 0
    assert not await sender_needed(db, stale_after=0)

    # the wait over, the endpoint answers: everything goes (never-tried ones first, then the
    # retries), and it is healthy again
    receiver.respond = statuses(200)
    await end_wait(db)
    assert await sender_needed(db, stale_after=0)
    assert await send_due(db, WAITING) == 6
    assert sent_numbers(receiver) == [0, 1, 2, 3, 4, 5, 0, 1]
    assert await endpoint_state(db) == (0, None)


async def test_the_wait_doubles_with_each_failure_in_a_row_up_to_the_maximum(
    db: Database, receiver: Receiver
) -> None:
    await waiting_endpoint(db, receiver, backlog=3)
    waits = [(await endpoint_state(db))[1]]
    for _ in range(3):
        await end_wait(db)
        assert await send_due(db, WAITING) == 1  # one attempt per wait
        assert await due_before_the_wait_ends(db) == 0
        waits.append((await endpoint_state(db))[1])
    assert [round(w) for w in waits if w is not None] == [10, 20, 40, 60]
    assert (await endpoint_state(db))[0] == 5
    assert len(receiver.received) == 5


async def test_leads_the_buyer_refuses_make_the_others_wait_one_wait_at_most(
    db: Database, receiver: Receiver
) -> None:
    refused = {0, 3, 4}

    def refuse_some(n: int, got: Received) -> Response:
        return Response("bad lead", 400) if got.payload["data"]["n"] in refused else Response("ok", 200)

    receiver.respond = refuse_some
    buyer = await endpoint_with(db, receiver, 7)
    # 0 refused: no wait after one failure, the next claim sends the others; 3 and 4 refused in a
    # row: the endpoint waits
    assert await send_due(db, WAITING) == 5
    assert await endpoint_state(db) == (2, pytest.approx(10, abs=1))
    # the wait's end: 5 and 6, never tried, go before the refused ones' retries (the endpoint is
    # healthy again); the retries of 0 and 3 are refused again, two in a row: it waits again
    await end_wait(db)
    assert await send_due(db, WAITING) == 4
    assert sent_numbers(receiver) == [0, 1, 2, 3, 4, 5, 6, 0, 3]
    assert await endpoint_state(db) == (2, pytest.approx(10, abs=1))
    # a new lead waits with it, and goes first at the wait's end
    receiver.respond = statuses(200)
    await enqueue(db, buyer, 7)
    await end_wait(db)
    assert await send_due(db, WAITING) == 2
    assert sent_numbers(receiver)[-2:] == [7, 4] and await endpoint_state(db) == (0, None)


async def test_a_test_message_and_a_redelivery_are_sent_at_once(db: Database, receiver: Receiver) -> None:
    await waiting_endpoint(db, receiver, backlog=1)
    ((endpoint_id, first_id),) = await rows(
        db, "SELECT endpoint_id, id FROM webhook_deliveries ORDER BY created_at LIMIT 1"
    )
    receiver.respond = statuses(200)
    await deliveries.send_test(db, actor=SYSTEM, endpoint_id=endpoint_id, dispatcher=Woken())
    assert await send_due(db, WAITING) == 1  # the test alone: the backlog waits for the wait's end
    assert await endpoint_state(db) == (0, None)

    receiver.respond = statuses(500)
    await end_wait(db)
    assert await send_due(db, WAITING) == 2  # two failures in a row: waiting again
    assert (await endpoint_state(db))[1] is not None
    receiver.respond = statuses(200)
    await deliveries.redeliver(db, actor=SYSTEM, delivery_id=first_id, dispatcher=Woken())
    assert (await endpoint_state(db))[1] is None  # the redelivery is the next try
    assert await send_due(db, WAITING) == 1
    assert receiver.received[-1].payload["data"]["n"] == 0


async def test_a_new_url_ends_the_wait_and_what_waited_goes_there(
    db: Database, receiver: Receiver, receivers: Callable[[], Receiver]
) -> None:
    await waiting_endpoint(db, receiver, backlog=1)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints")
    fixed = receivers()
    fixed.secrets += receiver.secrets
    woken = Woken()
    await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=endpoint_id,
        changes=endpoints.EndpointChanges(url=fixed.url),
        settings=WAITING,
        dispatcher=woken,
    )
    assert woken.wakes == 1 and (await endpoint_state(db))[1] is None
    assert await send_due(db, WAITING) == 3
    assert sorted(sent_numbers(fixed)) == [0, 1, 2] and await endpoint_state(db) == (0, None)


async def test_a_waiting_endpoints_backlog_does_not_hide_other_endpoints_while_it_waits(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    """More waiting deliveries than a turn scans, all older than another endpoint's one: the
    second failure moves them to the wait's end, so the other endpoint is claimed next."""
    failing, healthy = receivers(), receivers()
    failing.respond = statuses(500)
    buyer = await make_provider(db)
    failing.secrets.append((await make_endpoint(db, buyer, failing.url, events=["return.decided"])).secret)
    other = await make_provider(db)
    healthy.secrets.append((await make_endpoint(db, other, healthy.url, events=["return.decided"])).secret)
    async with db.begin() as session:
        await session.execute(
            sa.text(
                """INSERT INTO webhook_deliveries (endpoint_id, provider_id, event_type, payload, status,
                                                  next_attempt_at, created_at)
                   SELECT e.id, e.provider_id, 'return.decided',
                          jsonb_build_object('type', 'return.decided', 'timestamp', '2026-12-04T00:00:00Z',
                                             'data', jsonb_build_object('n', i)),
                          'PENDING', t, t
                   FROM webhook_endpoints e,
                        generate_series(1, :n) i,
                        LATERAL (SELECT now() - interval '1 hour' + i * interval '1 millisecond' AS t) t
                   WHERE e.provider_id = :buyer"""
            ),
            {"n": DUE_SCAN + 100, "buyer": buyer.id},
        )
    await enqueue(db, other, 0)
    assert await send_due(db, WAITING) == 3  # the failing endpoint's two oldest, then the other's
    assert len(failing.received) == 2 and sent_numbers(healthy) == [0]
    ((still_due,),) = await rows(
        db, "SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING' AND next_attempt_at <= now()"
    )
    assert still_due == 0


async def test_leased_deliveries_given_back_wait_for_the_endpoint(db: Database, receiver: Receiver) -> None:
    receiver.respond = statuses(500)
    niche = await buyers(db, [receiver])
    leased = [w for _ in range(3) for w in (await sold(db, niche)).webhooks_leased]
    assert len(leased) == 3
    async with running(db, WAITING) as sender:
        sender.send_leased(leased)

        async def waiting() -> bool:
            return (await endpoint_state(db))[1] is not None

        await wait_for(waiting, timeout=10)
    # the first fails and gives the others back; a claim tries the next: the endpoint waits, and
    # the third with it
    assert len(receiver.received) == 2
    assert await due_before_the_wait_ends(db) == 0
    # a lead sold meanwhile is not leased: written for the wait's end, it wakes nobody
    result = await sold(db, niche)
    assert result.webhooks_leased == () and result.webhooks_due == 0
    ((at_wait_end,),) = await rows(
        db,
        """SELECT d.next_attempt_at = e.retry_at FROM webhook_deliveries d
           JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.subject_id = :a""",
        a=result.assigned[0].assignment_id,
    )
    assert at_wait_end
    assert await send_due(db, WAITING) == 0


async def test_a_delivery_given_back_unsent_waits_for_the_endpoints_wait(
    db: Database, receiver: Receiver
) -> None:
    """A sender stopping gives back a leased delivery without trying it: due at the wait's end."""
    buyer = await waiting_endpoint(db, receiver, backlog=0)
    await enqueue(db, buyer, 9)
    ((endpoint_id, delivery_id),) = await rows(
        db, "SELECT endpoint_id, id FROM webhook_deliveries WHERE payload -> 'data' ->> 'n' = '9'"
    )
    async with db.begin() as session:  # as if a distribution had leased it to a sender
        await session.execute(
            sa.text(
                "UPDATE webhook_deliveries SET next_attempt_at = now() + interval '60 seconds' WHERE id = :d"
            ),
            {"d": delivery_id},
        )
    conn = await sender_connection(db)
    try:
        await claims.turn(
            conn,
            runs=[EndpointRun(endpoint_id, held=False, returned=[delivery_id])],
            slots=0,
            settings=WAITING,
        )
    finally:
        await conn.close()
    assert await due_before_the_wait_ends(db) == 0
    ((due_in,),) = await rows(
        db,
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhook_deliveries WHERE id = :d",
        d=delivery_id,
    )
    assert 5 < due_in <= 10  # the wait's end, not now, nor the lease's


async def test_without_a_wait_each_waiting_delivery_is_tried_in_turn(
    db: Database, receiver: Receiver
) -> None:
    settings = WAITING.model_copy(update={"webhook_endpoint_backoff_max_seconds": 0})
    receiver.respond = statuses(500)
    await endpoint_with(db, receiver, 3)
    assert await send_due(db, settings) == 3
    assert await endpoint_state(db) == (3, None)


async def test_the_overview_lists_failing_endpoints_to_their_own_provider_only(
    db: Database, receiver: Receiver
) -> None:
    buyer = await waiting_endpoint(db, receiver, backlog=0)
    other = await make_provider(db)
    seen = await deliveries.overview(db, actor=SYSTEM)
    ((failing,),) = [[(e.provider_id, e.consecutive_failures, e.retry_at is not None) for e in seen.failing]]
    assert failing == (buyer.id, 2, True) and seen.flagged == []
    for provider, expected in ((buyer, 1), (other, 0)):
        actor = Actor(
            ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:read"}), provider_id=provider.id
        )
        assert len((await deliveries.overview(db, actor=actor)).failing) == expected


async def test_leased_deliveries_given_back_at_the_second_failure_wait_for_the_new_wait(
    db: Database, receiver: Receiver
) -> None:
    """A sender records an endpoint's second failure in a row and gives back the leased deliveries
    behind it, in one turn: those wait for the wait that turn starts."""
    receiver.respond = statuses(500)
    buyer = await endpoint_with(db, receiver, 1)
    assert await send_due(db, WAITING) == 1  # one failure: no wait
    for n in (1, 2):
        await enqueue(db, buyer, n)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints")
    tried, given_back = [
        r.id
        for r in await rows(db, "SELECT id FROM webhook_deliveries WHERE attempts = 0 ORDER BY created_at")
    ]
    failed = Sent(tried, utcnow(), Answer(AttemptOutcome.HTTP_ERROR, 1.0, status_code=500, error="HTTP 500"))
    conn = await sender_connection(db)
    try:
        await claims.turn(
            conn,
            runs=[EndpointRun(endpoint_id, sent=[failed], held=False, returned=[given_back])],
            slots=0,
            settings=WAITING,
        )
    finally:
        await conn.close()
    failures, wait = await endpoint_state(db)
    assert failures == 2 and wait is not None and 9 < wait <= 10
    assert await due_before_the_wait_ends(db) == 0


async def test_ending_a_wait_for_a_redelivery_makes_it_due_again(db: Database, receiver: Receiver) -> None:
    """A turn that moved the redelivered delivery to a new wait's end before the wait was ended
    (the redelivery's commit, then the turn, then the end of the wait): due now all the same."""
    await waiting_endpoint(db, receiver, backlog=0)
    ((endpoint_id, delivery_id),) = await rows(
        db, "SELECT endpoint_id, id FROM webhook_deliveries ORDER BY created_at LIMIT 1"
    )
    async with db.begin() as session:  # as the redelivery wrote it, then moved by a turn
        await session.execute(
            sa.text(
                """UPDATE webhook_deliveries SET attempts = 0, next_attempt_at = now() + interval '30 seconds'
                   WHERE id = :d"""
            ),
            {"d": delivery_id},
        )
    await deliveries._end_wait(db, endpoint_id, delivery_id)
    assert (await endpoint_state(db))[1] is None
    ((due,),) = await rows(
        db, "SELECT next_attempt_at <= now() FROM webhook_deliveries WHERE id = :d", d=delivery_id
    )
    assert due


async def test_a_disabled_endpoint_tried_by_test_messages_is_not_waiting(
    db: Database, receiver: Receiver
) -> None:
    receiver.respond = statuses(500)
    buyer = await endpoint_with(db, receiver, 0)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    # a test message waiting when the endpoint is disabled is not held, and one sent after goes too
    await deliveries.send_test(db, actor=SYSTEM, endpoint_id=endpoint_id, dispatcher=Woken())
    await set_enabled(db, endpoint_id, False)
    assert await send_due(db, WAITING) == 1
    await deliveries.send_test(db, actor=SYSTEM, endpoint_id=endpoint_id, dispatcher=Woken())
    assert await send_due(db, WAITING) == 1
    assert await endpoint_state(db) == (2, None)


async def fail_once(db: Database, endpoint_id: uuid.UUID, settings: Settings) -> list[claims.Flagged]:
    """A turn recording the oldest delivery's failure (its sender dies before the hold)."""
    ((oldest,),) = await rows(db, "SELECT id FROM webhook_deliveries ORDER BY created_at LIMIT 1")
    failed = Sent(oldest, utcnow(), Answer(AttemptOutcome.HTTP_ERROR, 1.0, status_code=500, error="HTTP 500"))
    conn = await sender_connection(db)
    try:
        _, flagged = await claims.turn(
            conn, runs=[EndpointRun(endpoint_id, sent=[failed], held=False)], slots=0, settings=settings
        )
    finally:
        await conn.close()
    return flagged


async def hold(db: Database, flagged: list[claims.Flagged]) -> bool:
    conn = await sender_connection(db)
    try:
        return await claims.hold(conn, [f.endpoint_id for f in flagged])
    finally:
        await conn.close()


async def hold_pending(db: Database) -> list[bool]:
    return [r.hold_pending for r in await rows(db, "SELECT hold_pending FROM webhook_endpoints")]


async def due(db: Database) -> list[str]:
    return [
        r.event_type
        for r in await rows(
            db,
            """SELECT event_type FROM webhook_deliveries WHERE status = 'PENDING' AND next_attempt_at <= now()
               ORDER BY created_at""",
        )
    ]


async def test_a_disabling_is_audited_by_its_turn_and_the_hold_spares_an_endpoint_enabled_since(
    db: Database, receiver: Receiver
) -> None:
    """The turn that disables an endpoint writes its audit entry: a sender that dies before the
    hold (the statement after) loses no entry. The hold then leaves alone an endpoint enabled again
    meanwhile (its backlog was made due), and never holds a test message."""
    buyer = await endpoint_with(db, receiver, 3)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    settings = WAITING.model_copy(update={"webhook_disable_after_failures": 1})

    flagged = await fail_once(db, endpoint_id, settings)
    assert [f.endpoint_id for f in flagged] == [endpoint_id]
    audit = await rows(
        db,
        "SELECT details FROM audit_log WHERE action = 'WEBHOOK_ENDPOINT_DISABLED' AND entity_id = :e",
        e=endpoint_id,
    )
    assert [(a.details["reason"], a.details["consecutive_failures"]) for a in audit] == [("FAILING", 1)]

    assert await hold_pending(db) == [True]

    # enabled again before the hold: what waited is due, and stays due
    await set_enabled(db, endpoint_id, True)
    assert await hold_pending(db) == [False]
    assert await hold(db, flagged)
    assert await due(db) == ["return.decided"] * 3

    # disabled again, with a test message waiting: the others are held, the test message is not
    flagged = await fail_once(db, endpoint_id, settings)
    assert len(await rows(db, "SELECT 1 FROM audit_log WHERE action = 'WEBHOOK_ENDPOINT_DISABLED'")) == 2
    await deliveries.send_test(db, actor=SYSTEM, endpoint_id=endpoint_id, dispatcher=Woken())
    assert await hold(db, flagged)
    assert await due(db) == ["webhook.test"]
    ((held,),) = await rows(db, "SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NULL")
    assert held == 3
    assert await hold_pending(db) == [False]


async def test_the_sweep_holds_what_a_sender_that_died_after_disabling_left_due(
    db: Database, receiver: Receiver
) -> None:
    buyer = await endpoint_with(db, receiver, 3)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    await fail_once(db, endpoint_id, WAITING.model_copy(update={"webhook_disable_after_failures": 1}))
    # the sender dies before its hold: three deliveries due (the one tried at its retry) for nobody
    ((unheld,),) = await rows(db, "SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL")
    assert unheld == 3 and await hold_pending(db) == [True]
    assert await claims.hold_stranded(db, stale_after=3600) == 0  # its sender may still do it
    assert await claims.hold_stranded(db, stale_after=0) == 1
    ((unheld,),) = await rows(db, "SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL")
    assert unheld == 0 and await hold_pending(db) == [False]
    assert await claims.hold_stranded(db, stale_after=0) == 0


async def test_the_hold_waits_on_no_lock_and_gives_way_to_a_re_enabling_in_progress(
    db: Database, receiver: Receiver
) -> None:
    """A re-enabling (its endpoint's row locked, then its deliveries made due) in progress: the
    hold neither waits for it nor holds what it made due; it says it is not done, and once the
    re-enabling has committed it finds nothing to hold."""
    buyer = await endpoint_with(db, receiver, 3)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    flagged = await fail_once(
        db, endpoint_id, WAITING.model_copy(update={"webhook_disable_after_failures": 1})
    )
    enabling = await sender_connection(db)  # what update_endpoint's re-enabling writes, in its order
    try:
        transaction = enabling.transaction()
        await transaction.start()
        await enabling.execute(
            "UPDATE webhook_endpoints SET (enabled, disabled_reason, consecutive_failures, hold_pending)"
            " = (true, NULL, 0, false) WHERE id = $1",
            endpoint_id,
        )
        await enabling.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE endpoint_id = $1 AND status = 'PENDING'",
            endpoint_id,
        )
        assert await asyncio.wait_for(hold(db, flagged), timeout=5) is False
        await transaction.commit()
    finally:
        await enabling.close()
    assert await hold(db, flagged)  # the next turn's: the endpoint is enabled, nothing held
    assert await due(db) == ["return.decided"] * 3
    assert await hold_pending(db) == [False]


async def test_the_hold_does_not_wait_for_a_locked_endpoint_row(db: Database, receiver: Receiver) -> None:
    """Its endpoint's row locked by another transaction (a re-enabling that has not reached the
    deliveries yet): the deliveries are held at once, the mark stays for the sweep to clear."""
    buyer = await endpoint_with(db, receiver, 3)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    flagged = await fail_once(
        db, endpoint_id, WAITING.model_copy(update={"webhook_disable_after_failures": 1})
    )
    locking = await sender_connection(db)
    try:
        transaction = locking.transaction()
        await transaction.start()
        await locking.execute("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE", endpoint_id)
        assert await asyncio.wait_for(hold(db, flagged), timeout=5)
        await transaction.rollback()
    finally:
        await locking.close()
    assert await due(db) == [] and await hold_pending(db) == [True]
    assert await claims.hold_stranded(db, stale_after=0) == 1
    assert await hold_pending(db) == [False]


async def test_a_hold_leaves_the_mark_of_a_later_disabling(db: Database, receiver: Receiver) -> None:
    """Enabled and disabled again between a hold and the clearing of its mark: the new disabling's
    mark stays, for its own hold (or the sweep)."""
    buyer = await endpoint_with(db, receiver, 3)
    ((endpoint_id,),) = await rows(db, "SELECT id FROM webhook_endpoints WHERE provider_id = :p", p=buyer.id)
    flagged = await fail_once(
        db, endpoint_id, WAITING.model_copy(update={"webhook_disable_after_failures": 1})
    )
    async with db.begin() as session:  # as a later disabling left it
        await session.execute(
            sa.text("UPDATE webhook_endpoints SET disabled_at = now() + interval '1 minute' WHERE id = :e"),
            {"e": endpoint_id},
        )
    assert await hold(db, flagged)
    assert await due(db) == [] and await hold_pending(db) == [True]
