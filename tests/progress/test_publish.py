"""Progress over real Redis pub/sub: a run's events travel as one message per channel, in order,
and the hub hands them to its subscribers one by one."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from redis.asyncio import Redis

from app.embedded import EmbeddedRedis
from app.progress.events import EventType, ProgressEvent, decode_events, encode_events
from app.progress.hub import HUB_CHANNEL, RESYNC, ProgressHub
from app.progress.publish import RedisPublisher, batch_channel, niche_channel, run_channel


def _events(run_id: uuid.UUID, niche_id: uuid.UUID) -> list[ProgressEvent]:
    lead_id, at = uuid.uuid4(), datetime.now(UTC)
    kinds = [EventType.STARTED, EventType.ASSIGNED, EventType.COMPLETED]
    return [
        ProgressEvent(
            run_id, lead_id, niche_id, seq=i + 2, type=kind, at=at, price_cents=100 if i == 1 else None
        )
        for i, kind in enumerate(kinds)
    ]


async def test_one_message_per_channel_with_the_events_in_order(redis: Redis, redis_url: str) -> None:
    run_id, niche_id, batch_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = _events(run_id, niche_id)
    listener = Redis.from_url(redis_url)  # its own connections: earlier tests cut the shared client's
    pubsub = listener.pubsub()
    channels = [run_channel(run_id), niche_channel(niche_id), batch_channel(batch_id)]
    await pubsub.subscribe(*channels)
    confirmed = 0
    async with asyncio.timeout(5):
        while confirmed < 3:  # subscribed for sure before anything is published
            message = await pubsub.get_message(timeout=1)
            confirmed += message is not None and message["type"] == "subscribe"
    await RedisPublisher(redis).publish(events, batch_id=batch_id)
    received: dict[str, list[ProgressEvent]] = {}
    async with asyncio.timeout(5):
        while len(received) < 3:
            message = await pubsub.get_message(timeout=1)
            if message is not None and message["type"] == "message":
                assert message["channel"].decode() not in received  # one message per channel
                received[message["channel"].decode()] = decode_events(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await listener.aclose()
    assert received[run_channel(run_id)] == events
    assert received[niche_channel(niche_id)] == events
    assert received[batch_channel(batch_id)] == [events[-1]]  # terminal events only


def test_a_single_event_object_still_decodes() -> None:
    event = _events(uuid.uuid4(), uuid.uuid4())[0]
    assert decode_events(event.to_json()) == [event]
    assert decode_events(orjson.dumps([orjson.loads(event.to_json())])) == [event]


async def test_the_hub_delivers_the_events_of_a_message_together_in_order(redis: Redis) -> None:
    hub = ProgressHub(redis)
    await hub.start()
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        niche_id = uuid.uuid4()
        queue = await hub.register(niche_channel(niche_id))
        events = _events(uuid.uuid4(), niche_id)
        await RedisPublisher(redis).publish(events)
        async with asyncio.timeout(5):
            got = await queue.get()
        assert got == tuple(events)
        assert queue.empty()
    finally:
        await hub.stop()


async def test_after_redis_comes_back_the_hub_tells_subscribers_once_it_is_subscribed_again(
    redis: Redis, embedded_redis: EmbeddedRedis | None
) -> None:
    """While Redis is away (longer than the client's retries) the hub tells its subscribers at once
    (they read the state as it is), and again when its subscription is confirmed: what was
    published between a subscriber's read and that confirmation was missed too."""
    if embedded_redis is None:
        pytest.skip("stops and starts the test's own Redis: not a server given by REDIS_URL")
    hub = ProgressHub(redis)
    told: list[float] = []
    hub.watch("x", lambda data: told.append(time.monotonic()) if data is None else None)
    await hub.start()
    try:
        await asyncio.wait_for(hub.ready.wait(), 10)
        await asyncio.to_thread(embedded_redis.down)
        await asyncio.sleep(2)  # past redis-py's retries: the hub's reader fails and reconnects
        assert not hub.ready.is_set() and told
        await asyncio.to_thread(embedded_redis.up)
        back = time.monotonic()
        await asyncio.wait_for(hub.ready.wait(), 15)
        assert told[-1] > back, "no word to subscribers once the hub subscribed again"
    finally:
        await hub.stop()


async def test_the_hub_subscribes_to_the_channels_watched_here_and_only_while_watched(redis: Redis) -> None:
    """Messages of channels nobody in this process watches never reach it (PUBLISH counts no
    receiver); a registration is confirmed before register() returns, so what is published right
    after reaches it; the channel is dropped once its last subscriber leaves."""
    hub = ProgressHub(redis)
    await hub.start()
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        watched, unwatched = niche_channel(uuid.uuid4()), niche_channel(uuid.uuid4())
        assert await redis.publish(watched, b"[]") == 0
        first = await hub.register(watched)
        second = await hub.register(watched)
        assert await redis.publish(unwatched, b"[]") == 0
        events = _events(uuid.uuid4(), uuid.uuid4())
        await RedisPublisher(redis).publish(events)  # on its niche's channel, not watched here
        assert await redis.publish(watched, encode_events([e.to_json() for e in events])) == 1
        async with asyncio.timeout(5):
            assert await first.get() == tuple(events)
            assert await second.get() == tuple(events)
        hub.unregister(watched, first)
        assert await redis.publish(watched, b"[]") == 1  # the other subscriber still watches
        hub.unregister(watched, second)
        async with asyncio.timeout(5):
            while await redis.publish(watched, b"[]"):  # noqa: ASYNC110  (Redis says, no event to wait on)
                await asyncio.sleep(0.01)
        again = await hub.register(watched)  # subscribed again
        assert await redis.publish(watched, encode_events([e.to_json() for e in events])) == 1
        async with asyncio.timeout(5):
            assert await again.get() == tuple(events)
    finally:
        await hub.stop()


async def test_after_a_reconnection_subscribers_are_told_once_the_hub_is_ready(redis: Redis) -> None:
    """The reader's order after a reconnection, replayed without Redis: the channels' confirmations
    come before the hub's own channel's (which sets `ready`). A subscriber told RESYNC while `ready`
    is clear waits for the next word (nicheActivity does), so nobody is told before it is set."""
    hub = ProgressHub(redis)  # not started: registrations wait for the reader's connection
    channels = [niche_channel(uuid.uuid4()) for _ in range(3)]
    queues = [await hub.register(c) for c in channels]
    for channel in channels:
        hub._confirm(channel)
        assert all(q.empty() for q in queues), "told before the hub is ready"
    hub._confirm(HUB_CHANNEL)
    assert hub.ready.is_set()
    assert [q.get_nowait() for q in queues] == [RESYNC] * len(queues)
    assert all(q.empty() for q in queues)
