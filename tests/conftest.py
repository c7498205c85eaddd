"""One PostgreSQL database per test run, built by `alembic upgrade head`: a fresh database on
DATABASE_URL's server when it is set, else an embedded PostgreSQL in a temporary directory.
Tests share it and are isolated by TRUNCATE (many tests use several connections at once)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from app.db import Database, create_database
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.migrate import upgrade
from app.redis_client import connect as connect_redis
from tests.receiver import receiver, receivers  # noqa: F401  (fixtures: buyers' webhook endpoints)

TABLES = (
    "webhook_deliveries, webhook_endpoints, notifications, audit_log, ledger_entries, assignments, distribution_runs, leads, "
    "subscriptions, providers, competition_levels, niches, api_keys, access_tokens, mfa_challenges, "
    "admin_users, distribution_batches, returns, provider_invites, provider_users"
)


def _libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{tail}" if tail else "")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of a server we may create databases on."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given.replace("postgresql://", "postgresql+asyncpg://", 1)
        return
    data = Path(tempfile.mkdtemp(prefix="lw-test-"))
    server = EmbeddedPostgres(data / "pg", delete_on_stop=True)
    url = server.start(database="postgres")
    try:
        yield url
    finally:
        server.stop()


async def admin_sql(server_url: str, sql: str) -> None:
    """One statement on the server's maintenance database (CREATE / DROP DATABASE)."""
    conn = await asyncpg.connect(_libpq(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    name = f"lw_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    url = _with_database(server_url, name)
    upgrade(url)
    try:
        yield url
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url, pool_size=30, max_overflow=10)
    yield database
    await database.dispose()


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> None:
    if "db" not in request.fixturenames:
        return
    database: Database = request.getfixturevalue("db")
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql(f"TRUNCATE {TABLES} CASCADE")


@pytest.fixture(scope="session")
def embedded_redis() -> Iterator[EmbeddedRedis | None]:
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = EmbeddedRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis | None) -> str:
    given = os.environ.get("REDIS_URL")
    if given:
        return given
    assert embedded_redis is not None
    return embedded_redis.url


@pytest.fixture
def restart_redis(embedded_redis: EmbeddedRedis | None, redis_url: str) -> Callable[[], Awaitable[None]]:
    """Restarts Redis empty. An external REDIS_URL cannot be restarted from here: then its database
    is emptied and the connections using it are cut, which is what clients see of a restart (other
    databases of a shared server, and their clients, are left alone)."""

    async def restart() -> None:
        if embedded_redis is not None:
            await asyncio.to_thread(embedded_redis.restart)
            return
        admin = Redis.from_url(redis_url)
        await admin.flushdb()
        me = await admin.client_id()
        db = admin.connection_pool.connection_kwargs.get("db", 0)
        for client in await admin.client_list():
            if int(client["db"]) == db and int(client["id"]) != me:
                await admin.execute_command("CLIENT", "KILL", "ID", client["id"])
        await admin.aclose()

    return restart


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_redis(request: pytest.FixtureRequest) -> None:
    if "redis" in request.fixturenames:
        client: Redis = request.getfixturevalue("redis")
        await client.flushdb()
