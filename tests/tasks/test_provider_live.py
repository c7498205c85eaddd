"""Buyers over real WebSockets and several API processes.

- Two principals on one document: an admin, A's user and a read-only key subscribe to the same
  myAssignments document with the same variables. Each is executed for its own principal (the
  lead's other buyers and its contact details differ by who asks) and nothing is relayed; the
  operators' niche feed, whose type depends on nobody, still is.
- A disabled provider user stops at once in every API process: its access token and the key it
  made are refused by the process that did not disable it, and its open WebSocket is closed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets
from redis.asyncio import Redis

from app.db import Database
from app.engine.distribute import distribute_lead
from app.progress.publish import RedisPublisher
from app.services import api_keys, auth
from app.services.audit import SYSTEM
from app.wsclient import subscription
from tests.api.conftest import api_settings
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.accounts import access_token, make_provider_user
from tests.tasks.conftest import Stack, wait_for
from tests.tasks.test_relay import RawFeed, _metric

MINE = """subscription($p: UUID) { myAssignments(providerId: $p, recent: 0) { snapshot
  assignments { leadId lead { attributes assignments { providerId } } } } }"""
NICHE = "subscription($n: UUID!) { nicheActivity(nicheId: $n) { seq type providerId } }"


def _data(feed: RawFeed) -> list[dict[str, Any]]:
    return [next(iter(json.loads(f)["payload"]["data"].values())) for f in feed.frames]


async def test_two_principals_on_one_document_are_executed_each_for_its_own(
    db: Database, redis: Redis, stack: Stack
) -> None:
    niche, (level,) = await make_niche(db, levels=[(500, 2)])
    a, b = await make_provider(db, balance_cents=10_000), await make_provider(db, balance_cents=10_000)
    for provider in (a, b):
        await subscribe(db, provider, level)
    admin = await auth.create_admin(db, email="ops@example.test", password="x" * 12, settings=api_settings())
    admin_token = await access_token(db, admin_id=admin.admin.id)
    a_token = await access_token(db, provider_user_id=(await make_provider_user(db, a.id)).id)
    reader = (await auth.create_api_key(db, actor=SYSTEM, name="r", scopes=["read"])).secret
    api = await stack.api()
    variables = {"p": str(a.id)}  # one document, one set of variables, three principals
    feeds = {
        "admin": RawFeed(api, admin_token, MINE, variables),
        "a": RawFeed(api, a_token, MINE, variables),
        "reader": RawFeed(api, reader, MINE, variables),
    }
    watchers = [RawFeed(api, admin_token, NICHE, {"n": str(niche.id)}) for _ in range(2)]
    try:
        await wait_for(lambda: _all_have([*feeds.values()], 1))  # the snapshots: subscribed
        await wait_for(lambda: _subscribers(api, 5))
        relayed_before = await _metric(api, "lw_relayed_events")
        lead = await make_lead(db, niche, {"name": "Lee", "email": "lee@lead.test", "state": "TX"})
        result = await distribute_lead(db, lead_id=lead.id)
        assert len(result.assigned) == 2
        await RedisPublisher(redis).publish(result.events)
        await wait_for(lambda: _all_have([*feeds.values()], 2))
        await wait_for(lambda: _all_have(watchers, len(result.events)))
        relayed = await _metric(api, "lw_relayed_events") - relayed_before
    finally:
        for feed in [*feeds.values(), *watchers]:
            feed.task.cancel()
    seen = {name: _data(feed)[1]["assignments"][0]["lead"] for name, feed in feeds.items()}
    for lead_seen in seen.values():
        lead_seen["assignments"].sort(key=str)
    contact = {"name": "Lee", "email": "lee@lead.test", "state": "TX"}
    both = sorted([{"providerId": str(a.id)}, {"providerId": str(b.id)}], key=str)
    assert seen["admin"] == {"attributes": contact, "assignments": both}
    assert seen["a"] == {"attributes": contact, "assignments": [{"providerId": str(a.id)}]}
    assert seen["reader"] == {"attributes": {"state": "TX"}, "assignments": both}
    # the operators' feed is still shared: one of the two watchers had each event relayed
    assert relayed == len(result.events)
    assert _data(watchers[0]) == _data(watchers[1])


async def _all_have(feeds: list[RawFeed], n: int) -> bool:
    return all(len(feed.frames) >= n for feed in feeds)


async def _subscribers(api: str, n: int) -> bool:
    return await _metric(api, "lw_live_subscribers") == n


async def _me(base: str, credential: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{base}/graphql",
            json={"query": "{ me { providerId } }"},
            headers={"Authorization": f"Bearer {credential}"},
        )
    return dict(response.json())


async def test_a_disabled_provider_user_stops_at_once_in_every_api_process(
    db: Database, stack: Stack
) -> None:
    provider = await make_provider(db)
    user = await make_provider_user(db, provider.id)
    token = await access_token(db, provider_user_id=user.id)
    principal = await auth.authenticate(db, token)
    key = (await api_keys.create_api_key(db, actor=principal, name="crm", scopes=["provider:read"])).secret
    admin_key = (await auth.create_api_key(db, actor=SYSTEM, name="ops", scopes=["admin", "read"])).secret
    first, second = await stack.api(), await stack.api()
    for base in (first, second):  # both processes have verified (and remember) both credentials
        for credential in (token, key):
            assert (await _me(base, credential))["data"]["me"]["providerId"] == str(provider.id)
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        url = second.replace("http://", "ws://") + "/graphql"
        async with subscription(url, token, MINE, {}) as ws:
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            closed.set_result(ws.close_code)

    watcher = asyncio.create_task(watch())
    try:
        await wait_for(lambda: _subscribers(second, 1))
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{first}/graphql",
                json={
                    "query": "mutation($id: UUID!) { disableProviderUser(id: $id) { status } }",
                    "variables": {"id": str(user.id)},
                },
                headers={"Authorization": f"Bearer {admin_key}"},
            )
        assert response.json()["data"]["disableProviderUser"]["status"] == "DISABLED"
        for credential in (token, key):
            body = await _refused_within(second, credential, 2)
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", body
        assert await asyncio.wait_for(closed, 5) == 4403  # its live subscription stopped too
    finally:
        watcher.cancel()


async def _refused_within(base: str, credential: str, seconds: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        body = await _me(base, credential)
        if body.get("errors") or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.01)
