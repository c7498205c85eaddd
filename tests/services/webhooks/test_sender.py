"""The sender loop itself, two of them side by side (as two worker processes run them) on one
outbox: each endpoint held by one at a time, so in the normal case every delivery is sent exactly
once, in creation order per endpoint, while deliveries keep being written."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from app.db import Database
from app.models.webhooks import WebhookEvent
from app.services.webhooks import deliveries
from app.services.webhooks.outbound import make_client
from app.services.webhooks.sender import WebhookSender
from tests.factories import make_provider
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Receiver
from tests.tasks.conftest import wait_for


async def pending(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    sa.text("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
                )
            ).scalar_one()
        )


async def test_two_senders_send_each_delivery_once_in_order(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    hooks = [receivers() for _ in range(6)]
    providers = []
    for receiver in hooks:
        provider = await make_provider(db)
        receiver.secrets.append(
            (await make_endpoint(db, provider, receiver.url, events=[WebhookEvent.RETURN_DECIDED])).secret
        )
        providers.append(provider)
    senders = [WebhookSender(db, SETTINGS, make_client(SETTINGS)) for _ in range(2)]
    try:
        for n in range(100):  # written while both are sending, as distributions do
            async with db.begin() as session:
                for provider in providers:
                    await deliveries.enqueue_event(
                        session,
                        provider_id=provider.id,
                        event_type=WebhookEvent.RETURN_DECIDED,
                        data={"n": n},
                        subject_id=uuid.uuid4(),
                    )
            for sender in senders:
                sender.wake()
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 30
        while await pending(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for sender in senders:
                sender.wake()
        assert await pending(db) == 0
    finally:
        for sender in senders:
            await sender.close(grace_seconds=5)
    for receiver in hooks:
        ids = receiver.ids()
        assert len(ids) == len(set(ids)) == 100  # exactly once
        assert [r.payload["data"]["n"] for r in receiver.received] == list(range(100))  # in order
        assert all(r.verified_by for r in receiver.received)


async def _outbox(db: Database, receiver: Receiver, count: int) -> None:
    provider = await make_provider(db)
    receiver.secrets.append(
        (await make_endpoint(db, provider, receiver.url, events=[WebhookEvent.RETURN_DECIDED])).secret
    )
    for n in range(count):  # a transaction each: creation order is commit order
        async with db.begin() as session:
            await deliveries.enqueue_event(
                session, provider_id=provider.id, event_type=WebhookEvent.RETURN_DECIDED, data={"n": n}
            )


async def test_one_wake_sends_every_batch_of_an_endpoint(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    """A turn that releases an endpoint cannot claim it again; the sender looks once more, so the
    endpoint's next batch goes out without another wake (else it waited for the sweep)."""
    receiver = receivers()
    settings = SETTINGS.model_copy(update={"webhook_batch_size": 2})
    await _outbox(db, receiver, 7)
    sender = WebhookSender(db, settings, make_client(settings))
    try:
        sender.wake()  # once, and never again

        async def sent() -> bool:
            return await pending(db) == 0

        await wait_for(sent, timeout=15)
    finally:
        await sender.close(grace_seconds=5)
    assert [r.payload["data"]["n"] for r in receiver.received] == list(range(7))


async def test_the_job_mark_is_cleared_after_a_job_wake_only_and_again_after_a_failed_clear(
    db: Database, receivers: Callable[[], Receiver]
) -> None:
    receiver = receivers()
    await _outbox(db, receiver, 1)
    clears: list[float] = []

    async def on_idle() -> None:
        clears.append(time.monotonic())
        if len(clears) == 1:
            raise ConnectionError("Redis away")  # the mark stays: tried again on the next turn

    sender = WebhookSender(db, SETTINGS, make_client(SETTINGS), on_idle=on_idle)
    try:
        sender.wake()  # a distribution of this process: it set no mark, there is none to clear

        async def sent() -> bool:
            return await pending(db) == 0

        await wait_for(sent, timeout=15)
        await asyncio.sleep(0.3)
        assert await pending(db) == 0 and clears == []
        sender.wake(by_job=True)

        async def cleared_twice() -> bool:
            return len(clears) >= 2

        await wait_for(cleared_twice, timeout=15)
        await asyncio.sleep(0.3)
        assert len(clears) == 2  # once failed, once done; then nothing more to clear
    finally:
        await sender.close(grace_seconds=5)
