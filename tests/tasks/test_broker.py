"""ack_with: a job's commands after its commit and the acknowledgement of its message, sent in
one round trip and in that order, on a real Redis."""

import asyncio

from redis.asyncio import Redis
from taskiq import AckableMessage, Context
from taskiq.acks import AckController

from app.settings import Settings
from app.tasks.broker import CONSUMER_GROUP, QUEUE, ack_with, make_broker
from app.tasks.dispatch import DISTRIBUTE, SENDER_QUEUED, TaskiqDispatcher


async def _delivered(broker_redis: Redis) -> tuple[str, bytes]:
    """A job added and read by this consumer, left pending until acknowledged."""
    await broker_redis.xgroup_create(QUEUE, CONSUMER_GROUP, id="$", mkstream=True)
    await broker_redis.xadd(QUEUE, {b"data": b"{}"})
    ((_, [(entry_id, fields)]),) = await broker_redis.xreadgroup(
        CONSUMER_GROUP, "test", {QUEUE: ">"}, count=1
    )
    return entry_id.decode(), fields[b"data"]


async def test_the_events_and_the_wake_go_out_with_the_acknowledgement(redis_url: str, redis: Redis) -> None:
    broker = make_broker(redis_url, Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        entry_id, data = await _delivered(redis)
        message = AckableMessage(data=data, ack=broker._ack_generator(id=entry_id, queue_name=QUEUE))  # noqa: SLF001
        controller = AckController(message.ack)
        context = Context(broker.formatter.loads(broker.entry(DISTRIBUTE, "r")), broker, controller)
        pubsub = redis.pubsub()
        await pubsub.subscribe("lw:test")
        await pubsub.get_message(timeout=1)  # the subscription's confirmation

        pipe = broker.redis().pipeline(transaction=False)
        pipe.publish("lw:test", b"event")
        TaskiqDispatcher(broker).add_notify(pipe)
        await ack_with(context, pipe)

        assert controller.is_acked  # taskiq's own acknowledgement after the job is a no-op
        assert (await redis.xpending(QUEUE, CONSUMER_GROUP))["pending"] == 0
        got = await pubsub.get_message(timeout=1)
        assert got is not None and got["data"] == b"event"
        assert await redis.exists(SENDER_QUEUED)  # the wake ran: a sender job is queued
        assert await redis.xlen(QUEUE) == 2
        await pubsub.aclose()
    finally:
        await broker.connection_pool.disconnect()


async def test_an_acknowledged_message_only_gets_the_commands(redis_url: str, redis: Redis) -> None:
    broker = make_broker(redis_url, Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        entry_id, data = await _delivered(redis)
        controller = AckController(broker._ack_generator(id=entry_id, queue_name=QUEUE))  # noqa: SLF001
        await controller.ack()
        context = Context(broker.formatter.loads(broker.entry(DISTRIBUTE, "r")), broker, controller)
        pipe = broker.redis().pipeline(transaction=False)
        pipe.set("lw:test:sent", 1)
        await ack_with(context, pipe)
        assert await redis.get("lw:test:sent") == b"1"
    finally:
        await broker.connection_pool.disconnect()


async def test_a_failed_command_is_logged_and_the_message_still_acknowledged(
    redis_url: str, redis: Redis
) -> None:
    broker = make_broker(redis_url, Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        entry_id, data = await _delivered(redis)
        controller = AckController(broker._ack_generator(id=entry_id, queue_name=QUEUE))  # noqa: SLF001
        context = Context(broker.formatter.loads(broker.entry(DISTRIBUTE, "r")), broker, controller)
        await redis.set("lw:test:text", "x")
        pipe = broker.redis().pipeline(transaction=False)
        pipe.lpush("lw:test:text", "y")  # WRONGTYPE
        await asyncio.wait_for(ack_with(context, pipe), 5)
        assert controller.is_acked
        assert (await redis.xpending(QUEUE, CONSUMER_GROUP))["pending"] == 0
    finally:
        await broker.connection_pool.disconnect()
