"""app/redis_client.py on a real Redis: a command whose pooled connection was cut is retried."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.redis_client import connect


async def _cut_every_other_connection(redis_url: str) -> None:
    admin = Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await admin.aclose()


async def test_a_command_on_a_cut_connection_is_retried(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert await client.ping()
        await _cut_every_other_connection(redis_url)
        assert await client.publish("lw:test:retry", b"after a cut") == 0  # no error
        await _cut_every_other_connection(redis_url)
        pipe = client.pipeline(transaction=False)
        pipe.publish("lw:test:retry", b"x")
        assert await pipe.execute() == [0]
    finally:
        await client.aclose()


async def test_without_the_retry_the_same_command_fails(redis_url: str) -> None:
    """What the setting is for: redis-py's asyncio client alone fails the first command."""
    plain = Redis.from_url(redis_url)
    try:
        assert await plain.ping()
        await _cut_every_other_connection(redis_url)
        with pytest.raises(RedisConnectionError):
            await plain.publish("lw:test:retry", b"after a cut")
    finally:
        await plain.aclose()
