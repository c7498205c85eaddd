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
