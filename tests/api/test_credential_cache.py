"""The per-process credential cache (app/services/credentials.py): a revocation reaches every API
process at once over Redis, a lost subscription empties the cache, and an unannounced revocation
is honoured once the entry ages out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from starlette.applications import Starlette

from app.db import Database
from app.errors import Unauthenticated
from app.main import create_app
from app.models.audit import ActorType
from app.models.base import utcnow
from app.progress.publish import RedisPublisher
from app.services import auth
from app.services.audit import Actor
from app.services.credentials import CredentialCache, Verified
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import Admin, Api, api_settings, error_code, sign_in

ME = "{ me { label } }"


@asynccontextmanager
async def api_process(db: Database, redis: Redis, **settings: Any) -> AsyncIterator[tuple[Api, Starlette]]:
    """One more API 'process': its own hub and credential cache, on the same database and Redis."""
    configured = api_settings(**settings)
    app = create_app(
        configured, db=db, redis=redis, dispatcher=InlineDispatcher(db, configured, RedisPublisher(redis))
    )
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.hub.ready.wait(), 5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client), app


async def refused_within(api: Api, token: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body = await api.gql(ME, token=token)
        if body.get("errors") or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.01)


async def test_revocations_reach_every_api_process_at_once(db: Database, redis: Redis, admin: Admin) -> None:
    async with api_process(db, redis) as (a, app_a), api_process(db, redis) as (b, app_b):
        a.token = await sign_in(a, db, admin)
        key = (
            await a.ok('mutation { createApiKey(name: "feed", scopes: ["read"]) { secret apiKey { id } } }')
        )["createApiKey"]
        await b.ok(ME, token=key["secret"])
        await b.ok(ME, token=a.token)
        assert app_b.state.credentials.get(auth.digest(key["secret"])) is not None  # B answers from memory

        await a.ok("mutation($id: UUID!) { revokeApiKey(id: $id) { id } }", {"id": key["apiKey"]["id"]})
        assert error_code(await a.gql(ME, token=key["secret"])) == "UNAUTHENTICATED"  # here: at once
        body = await refused_within(b, key["secret"], 2)
        assert error_code(body) == "UNAUTHENTICATED" and "revoked" in body["errors"][0]["message"]

        token = a.token
        await a.ok("mutation { logout }")
        body = await refused_within(b, token, 2)
        assert error_code(body) == "UNAUTHENTICATED" and "revoked" in body["errors"][0]["message"]
        assert app_a.state.credentials.get(auth.digest(token)) is None


async def test_a_lost_subscription_empties_the_cache(db: Database, redis: Redis, admin: Admin) -> None:
    async with api_process(db, redis) as (api, app):
        token = await sign_in(api, db, admin)
        await api.ok(ME, token=token)
        cache: CredentialCache = app.state.credentials
        assert cache.get(auth.digest(token)) is not None
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the hub's connection drops
        for _ in range(500):
            if not cache._entries:  # noqa: SLF001
                break
            await asyncio.sleep(0.01)
        assert cache._entries == {}  # noqa: SLF001
        await asyncio.wait_for(app.state.hub.ready.wait(), 5)  # resubscribed: it remembers again
        await api.ok(ME, token=token)
        assert cache.get(auth.digest(token)) is not None


async def test_an_unannounced_revocation_holds_until_the_entry_ages_out(
    db: Database, redis: Redis, admin: Admin
) -> None:
    async with api_process(db, redis, auth_cache_seconds=0.3) as (api, _):
        token = await sign_in(api, db, admin)
        await api.ok(ME, token=token)
        async with db.engine.begin() as conn:  # revoked behind the API's back: nobody announces it
            await conn.execute(sa.text("UPDATE access_tokens SET revoked_at = now()"))
        await api.ok(ME, token=token)  # the bounded window AUTH_CACHE_SECONDS documents
        await asyncio.sleep(0.35)
        assert error_code(await api.gql(ME, token=token)) == "UNAUTHENTICATED"


async def test_expiry_is_checked_on_every_hit(db: Database) -> None:
    cache = CredentialCache(60, live=lambda: True)
    actor = Actor(ActorType.USER, None, label="ops", scopes=auth.SCOPES)
    cache.put(
        auth.digest("lwa_x"), Verified(actor, expires_at=utcnow() + timedelta(seconds=1), last_used_at=None)
    )
    assert await auth.authenticate(db, "lwa_x", cache) is actor  # from memory: no such token in the database
    cache.put(
        auth.digest("lwa_x"), Verified(actor, expires_at=utcnow() - timedelta(seconds=1), last_used_at=None)
    )
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(db, "lwa_x", cache)
    assert cache.get(auth.digest("lwa_x")) is None


async def test_a_cache_that_cannot_hear_revocations_answers_nothing(db: Database) -> None:
    live = [True]
    cache = CredentialCache(60, live=lambda: live[0])
    actor = Actor(ActorType.USER, None, label="ops", scopes=auth.SCOPES)
    cache.put("h", Verified(actor, expires_at=None, last_used_at=None))
    live[0] = False
    assert cache.get("h") is None
    with pytest.raises(Unauthenticated, match="unknown access token"):
        await auth.authenticate(db, "lwa_not_in_the_database", cache)


async def test_an_api_keys_use_is_recorded_at_most_once_a_minute(
    db: Database, redis: Redis, admin: Admin
) -> None:
    async def last_used() -> Any:
        async with db.engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT last_used_at FROM api_keys"))).scalar_one()

    async with api_process(db, redis) as (api, app):
        api.token = await sign_in(api, db, admin)
        secret = (await api.ok('mutation { createApiKey(name: "feed", scopes: ["read"]) { secret } }'))[
            "createApiKey"
        ]["secret"]
        assert await last_used() is None
        await api.ok(ME, token=secret)
        first = await last_used()
        assert first is not None
        await api.ok(ME, token=secret)
        assert await last_used() == first  # within the minute: no write
        remembered = app.state.credentials.get(auth.digest(secret))
        remembered.last_used_at = first - timedelta(minutes=2)  # as if a minute had passed
        await api.ok(ME, token=secret)
        assert await last_used() > first
